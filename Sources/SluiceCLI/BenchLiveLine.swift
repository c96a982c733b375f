import CoreMetrics
import Foundation
import Synchronization

/// The live line of `sluice bench` on a terminal, redrawn in place five times a second: the
/// share done (a bar, when the run has an end), messages so far, the rate and p99 of the
/// last whole second, errors, open connections and the time left. Off a terminal it is
/// silent: logs and pipes get the result alone.
struct Progress {
    let total: Int?
    let duration: Double?
    let start: ContinuousClock.Instant
    let isTerminal: Bool
    var lastDraw: ContinuousClock.Instant?
    var drew = false

    init(total: Int?, duration: Double?, start: ContinuousClock.Instant, isTerminal: Bool = isatty(2) != 0) {
        self.total = total
        self.duration = duration
        self.start = start
        self.isTerminal = isTerminal
    }

    /// Redraws the line if a fifth of a second has passed since the last time.
    mutating func update(done: Int, errors: Int, lastSecond: TimeSeries.Second?, open: Int?,
                         now: ContinuousClock.Instant, to handle: FileHandle) {
        guard isTerminal else { return }
        if let lastDraw, now - lastDraw < .milliseconds(200) { return }
        lastDraw = now
        handle.write(Data(("\r\u{1B}[2K" + line(done: done, errors: errors, lastSecond: lastSecond, open: open, now: now)).utf8))
        drew = true
    }

    /// The line's text.
    func line(done: Int, errors: Int, lastSecond: TimeSeries.Second?, open: Int?, now: ContinuousClock.Instant) -> String {
        let seconds = (now - start).seconds
        var parts = ["\(done.grouped) msgs"]
        if let lastSecond {
            parts.append("\(lastSecond.messages.grouped) msg/s now")
            parts.append(String(format: "p99 %.2f ms", lastSecond.latency["p99"] ?? 0))
        } else {
            parts.append("\(Int(Double(done) / max(seconds, 1e-9)).grouped) msg/s")
        }
        parts.append("errors \(errors.grouped)")
        if let open { parts.append("open \(open)") }
        var fraction: Double?
        if let total {
            fraction = Double(done) / Double(max(1, total))
            let rate = Double(done) / max(seconds, 1e-9)
            parts.append(String(format: "ETA %.0fs", Double(total - done) / max(rate, 1e-9)))
        } else if let duration {
            fraction = min(1, seconds / duration)
            parts.append(String(format: "%.0fs left", max(0, duration - seconds)))
        }
        var line = parts.joined(separator: "  ")
        if let fraction {
            let width = 24
            let filled = max(0, min(width, Int(fraction * Double(width))))
            line = "[" + String(repeating: "=", count: filled) + String(repeating: " ", count: width - filled) + "] " + line
        }
        return line
    }

    /// Clears the line, if one was drawn.
    func finish(to handle: FileHandle) {
        if drew { handle.write(Data("\r\u{1B}[2K".utf8)) }
    }
}
