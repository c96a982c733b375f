import ArgumentParser
import Foundation
import Sluice
import SluiceTransport
import Synchronization

/// A `--target HOST:PORT[=WEIGHT]`: a server and its share of the connections.
struct BenchTarget: Equatable {
    let host: String
    let port: Int?
    let weight: Int
    /// As given, without its weight.
    let name: String

    init(host: String, port: Int?, weight: Int = 1, name: String) {
        self.host = host
        self.port = port
        self.weight = weight
        self.name = name
    }

    init(parsing text: String) throws {
        var server = Substring(text)
        var weight = 1
        // A weight follows the last '=' (a host name or an IPv6 literal never holds one).
        if let equals = text.lastIndex(of: "=") {
            guard let value = Int(text[text.index(after: equals)...]), value > 0 else {
                throw ValidationError("--target \(text): the weight after '=' must be a positive whole number")
            }
            weight = value
            server = text[..<equals]
        }
        (host, port) = try ClientOptions.parseServer(String(server))
        name = String(server)
        self.weight = weight
    }
}

/// Where part of a run goes: one server over one kind of connection, through a client and
/// pool of its own. A run has one lane per target, or two with `--tls-share` (TLS and
/// plaintext).
struct BenchLane {
    let target: String
    let host: String
    let port: Int?
    let security: SMTPClient.Security
    let connections: Int
    /// The numbers of the messages the open model sends through it.
    let share: LaneShare

    /// Splits `connections` among `targets` by weight (largest remainders, at least one each),
    /// then each target's between TLS (`tlsPercent`, rounded) and plaintext.
    static func plan(targets: [BenchTarget], connections: Int, security: SMTPClient.Security,
                     tlsPercent: Double?) throws -> [BenchLane] {
        guard connections >= targets.count else {
            throw ValidationError("\(targets.count) targets need at least \(targets.count) connections, one each (--connections \(connections))")
        }
        let perTarget = apportion(connections, by: targets.map(\.weight))
        var parts: [(target: BenchTarget, security: SMTPClient.Security, connections: Int)] = []
        for (target, count) in zip(targets, perTarget) {
            guard let tlsPercent else {
                parts.append((target, security, count))
                continue
            }
            let secured = Int((Double(count) * tlsPercent / 100).rounded())
            if secured > 0 { parts.append((target, security, secured)) }
            if secured < count { parts.append((target, .none, count - secured)) }
        }
        if let tlsPercent, tlsPercent > 0, !parts.contains(where: { $0.security != .none }) {
            throw ValidationError("--tls-share \(tlsPercent.formatted())% of \(connections) connections is less than one: use more connections or a larger share")
        }
        var offset = 0
        let cycle = parts.reduce(0) { $0 + $1.connections }
        return parts.map { part in
            defer { offset += part.connections }
            return BenchLane(target: part.target.name, host: part.target.host, port: part.target.port, security: part.security,
                             connections: part.connections, share: LaneShare(offset: offset, width: part.connections, cycle: cycle))
        }
    }

    /// `total` split in proportion to `weights`, each part at least one, the remainders to the
    /// largest fractions (ties to the first).
    static func apportion(_ total: Int, by weights: [Int]) -> [Int] {
        let sum = weights.reduce(0, +)
        let spare = total - weights.count  // one each first
        var parts = weights.map { 1 + spare * $0 / sum }
        let fractions = weights.indices.sorted {
            (spare * weights[$0] % sum, -$0) > (spare * weights[$1] % sum, -$1)
        }
        for index in fractions.prefix(total - parts.reduce(0, +)) { parts[index] += 1 }
        return parts
    }
}

/// The message numbers (from 1) one lane owns in the open model: in every `cycle` numbers,
/// the `width` from `offset` — a lane's share of the arrivals is its share of the connections.
struct LaneShare: Sendable {
    let offset: Int
    let width: Int
    let cycle: Int

    static let all = LaneShare(offset: 0, width: 1, cycle: 1)

    /// The first number at or after `number` the lane owns.
    func first(atOrAfter number: Int) -> Int {
        let position = (number - 1) % cycle
        if position < offset { return number + offset - position }
        if position < offset + width { return number }
        return number + cycle - position + offset
    }

    /// How many numbers in `range` the lane owns.
    func count(in range: Range<Int>) -> Int {
        owned(before: range.upperBound) - owned(before: range.lowerBound)
    }

    /// The numbers from 1 to `number - 1` the lane owns.
    private func owned(before number: Int) -> Int {
        let span = max(0, number - 1)
        return span / cycle * width + min(max(span % cycle - offset, 0), width)
    }
}

/// What the lanes of a run send.
enum BenchFeed: Sendable {
    /// The open model: each lane its own arrivals.
    case open([OpenArrivals])
    /// The closed model under `--stages`: one number in flight, shared.
    case closedStages(ClosedStages)
    /// The closed model: one source, each lane taking the next message when it has room.
    case closed(BenchMails)
}

/// Counts every lane's reports as they arrive: the run's tally, its seconds and the live line,
/// behind one lock (a run has a lane or two; the lock is uncontended with one).
final class BenchRecorder: Sendable {
    struct LaneCount {
        var messages = 0
        var accepted = 0
    }

    /// What the run measured once its lanes are done.
    struct Run {
        var tally = Tally()
        var series: TimeSeries?
        var progress: Progress
        var lanes: [LaneCount]
        let connectionCount: BenchMetrics?
    }

    private let state: Locked<Run>

    init(series: TimeSeries?, lanes: Int, connectionCount: BenchMetrics?, progress: Progress) {
        state = Locked(Run(series: series, progress: progress, lanes: Array(repeating: LaneCount(), count: lanes),
                          connectionCount: connectionCount))
    }

    /// Counts a report from `lane` whose message took `latency` and was `size` octets.
    func record(_ report: DeliveryReport, latency: Duration, size: Int, lane: Int, to stderr: FileHandle) {
        let now = ContinuousClock.now
        state.withLock { run in
            run.tally.add(report, latency: latency, size: size)
            run.lanes[lane].messages += 1
            if report.outcome == .accepted { run.lanes[lane].accepted += 1 }
            run.series?.add(report, latency: latency, now: now)
            run.progress.update(done: run.tally.count, errors: run.tally.count - run.tally.accepted,
                                lastSecond: run.series?.seconds.last, open: run.connectionCount?.open, now: now, to: stderr)
        }
    }

    /// Ends the run's seconds and its live line.
    func finish(now: ContinuousClock.Instant, to stderr: FileHandle) -> Run {
        state.withLock { run in
            run.series?.finish(now: now)
            run.progress.finish(to: stderr)
            return run
        }
    }
}
