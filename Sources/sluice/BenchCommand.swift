import ArgumentParser
import Foundation
import Histogram
import Sluice
import SluiceSink

/// `sluice bench`: drives a server (by default an embedded sink) as fast as it takes mail and
/// reports throughput, latency and the client's CPU per message.
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure how many messages per second a server takes (by default an embedded sink on 127.0.0.1:0)."
    )

    @Option(help: "The server to drive, HOST:PORT; without it an embedded sink is started.")
    var target: String?
    @Option(help: "Messages to send (ignored with --duration).")
    var messages = 100_000
    @Option(help: "Send for this many seconds instead of a fixed count.")
    var duration: Double?
    @Option(help: "Connections in the pool.")
    var connections = 16
    @Option(help: "Recipients per message.")
    var recipients = 1
    @Option(help: "Message size in bytes.")
    var size = 1_024
    @Option(help: "At most this many messages per second.")
    var rate: Double?
    @Option(name: .customLong("in-flight"), help: "Messages handed to the client and not yet reported (default 64 per connection).")
    var inFlight: Int?
    @Option(help: "Event loops for the client (default: one per core, or half the cores with the embedded sink).")
    var loops: Int?
    @Flag(name: .customLong("no-pipelining")) var noPipelining = false
    @Flag(name: .customLong("no-chunking")) var noChunking = false
    @Flag(help: "Print the result as one JSON object.")
    var json = false
    @OptionGroup var client: ClientOptions

    /// The bench message's headers and one short body line.
    static let smallestSize = 256

    func validate() throws {
        guard messages > 0, connections > 0, recipients > 0, size >= Self.smallestSize else {
            throw ValidationError("--messages, --connections and --recipients must be positive and --size at least \(Self.smallestSize)")
        }
        if let duration, duration <= 0 { throw ValidationError("--duration must be positive") }
        if let rate, rate <= 0 { throw ValidationError("--rate must be positive") }
        if let inFlight, inFlight <= 0 { throw ValidationError("--in-flight must be positive") }
        if let loops, loops <= 0 { throw ValidationError("--loops must be positive") }
        if let target { _ = try ClientOptions.parseServer(target) }
    }

    /// Descriptors the process needs besides its connections: the loops, their wake-ups,
    /// standard streams and the libraries' own.
    static let descriptorOverhead = 64

    func run() async throws {
        let stderr = FileHandle.standardError
        // Each connection takes a descriptor, and with the embedded sink (in this process)
        // its other end takes one more; past the limit connects fail with EMFILE mid-run.
        let descriptorLimit = raiseDescriptorLimit()
        let needed = connections * (target == nil ? 2 : 1) + Self.descriptorOverhead
        if needed > descriptorLimit {
            try settingUp("bench", nothingSent: true) {
                throw ValidationError(
                    "--connections \(connections) needs about \(needed) file descriptors\(target == nil ? " (the embedded sink holds the other end of each)" : ""); "
                        + "the limit here is \(descriptorLimit) (ulimit -n): raise it, or use at most "
                        + "\(max(0, (descriptorLimit - Self.descriptorOverhead) / (target == nil ? 2 : 1))) connections")
            }
        }
        var sink: SMTPSink?
        var sinkGroup: EventLoopGroup?
        let (host, port) = try target.map(ClientOptions.parseServer) ?? ("127.0.0.1", nil)
        var configuration = try settingUp("bench", nothingSent: true) { try client.configuration(host: host, port: port) }
        if target == nil {
            // The embedded sink runs on loops of its own, so its CPU can be told from the client's.
            let group = EventLoopGroup(numberOfLoops: max(1, EventLoopGroup.coreCount / 2))
            var sinkConfiguration = SinkConfiguration()
            sinkConfiguration.port = 0
            sinkConfiguration.server.maximumRecipients = max(1000, recipients)
            let started = try await SMTPSink.start(sinkConfiguration, group: group)
            sink = started
            sinkGroup = group
            configuration.port = started.localAddress.port
            configuration.security = .none
        }
        configuration.pool.maximumConnections = connections
        configuration.pool.maximumMessagesPerConnection = Int.max
        configuration.pool.maximumConnectionLifetime = .seconds(86_400)
        configuration.pipelining.enabled = !noPipelining
        configuration.pipelining.chunking = !noChunking
        configuration.rateLimit = rate.map { SMTPClient.RateLimit(messagesPerSecond: $0) }
        configuration.retry = .none
        let clientGroup = EventLoopGroup(
            numberOfLoops: loops ?? (sink == nil ? EventLoopGroup.coreCount : max(1, EventLoopGroup.coreCount / 2)))
        configuration.eventLoopGroup = clientGroup
        let smtp = try settingUp("bench", nothingSent: true) { try SMTPClient(configuration: configuration) }

        let message = try Self.message(size: size, signers: configuration.dkim)
        let envelope = try Envelope(from: "bench@sluice.test", to: (1...recipients).map { "rcpt\($0)@sink.test" })
        let clock = ContinuousClock()
        let start = clock.now
        let deadline = duration.map { start + .milliseconds(Int64($0 * 1000)) }
        let total = duration == nil ? messages : Int.max
        let sinkCPUStart = await sinkGroup?.threadCPUTime() ?? .zero
        let cpuStart = processCPUTime()

        var tally = Tally()
        var progress = Progress(total: duration == nil ? messages : nil, duration: duration, start: start)
        let mails = BenchMails(mail: OutgoingMail(envelope: envelope, message: message), count: total, deadline: deadline)
        for try await report in smtp.send(contentsOf: mails, maximumInFlight: inFlight ?? connections * 64) {
            tally.add(report)
            progress.update(done: tally.count, errors: tally.count - tally.accepted, now: clock.now, to: stderr)
        }
        let elapsed = clock.now - start
        let cpu = processCPUTime() - cpuStart
        let sinkCPU = (await sinkGroup?.threadCPUTime() ?? .zero) - sinkCPUStart
        progress.finish(to: stderr)
        await smtp.shutdown()
        await clientGroup.shutdown()
        await sink?.shutdown()
        await sinkGroup?.shutdown()

        let result = BenchResult(
            target: target ?? "embedded sink", connections: connections, size: message.size, recipients: recipients,
            pipelining: !noPipelining, chunking: !noChunking, tally: tally, elapsed: elapsed,
            clientCPU: cpu - sinkCPU.seconds, sinkCPU: sink == nil ? nil : sinkCPU.seconds)
        print(json ? result.json : result.text)
        if tally.accepted != tally.count {
            let reason = "sluice bench: \((tally.count - tally.accepted).grouped) of \(tally.count.grouped) messages were not "
                + "accepted (\(tally.failureSummary))\n"
            stderr.write(Data(reason.utf8))
            throw ExitCode(1)
        }
    }

    /// A message of about `size` bytes: headers, then 76-character lines.
    /// A message of exactly `size` octets (before any DKIM signature), signed once by `signers`.
    static func message(size: Int, signers: [DKIMSigner] = []) throws -> EncodedMessage {
        var text = "From: Sluice Bench <bench@sluice.test>\r\nTo: <rcpt1@sink.test>\r\nSubject: sluice bench\r\n"
        text += "Date: Mon, 23 Nov 2026 12:00:00 +0000\r\nMessage-ID: <bench@sluice.test>\r\nMIME-Version: 1.0\r\n"
        text += "Content-Type: text/plain; charset=us-ascii\r\n\r\n"
        let alphabet = Array("0123456789abcdefghijklmnopqrstuvwxyz".utf8)
        var remaining = size - text.utf8.count
        while remaining > 0 {
            // Lines of up to 76 octets with their CRLF; never a last line too short for its CRLF.
            var length = min(76, remaining)
            if remaining - length == 1 { length -= 1 }
            text += String(decoding: (0..<(length - 2)).map { alphabet[$0 % alphabet.count] }, as: UTF8.self) + "\r\n"
            remaining -= length
        }
        return EncodedMessage(try DKIMSigner.sign(try RawMessage(Array(text.utf8)), with: signers))
    }
}

/// The same message, `count` times or until `deadline`.
private struct BenchMails: Sequence, Sendable {
    let mail: OutgoingMail
    let count: Int
    let deadline: ContinuousClock.Instant?

    struct Iterator: IteratorProtocol {
        let mail: OutgoingMail
        var remaining: Int
        let deadline: ContinuousClock.Instant?
        mutating func next() -> OutgoingMail? {
            guard remaining > 0 else { return nil }
            if let deadline, remaining % 64 == 0, ContinuousClock.now >= deadline { return nil }
            remaining -= 1
            return mail
        }
    }

    func makeIterator() -> Iterator { Iterator(mail: mail, remaining: count, deadline: deadline) }
}

/// Outcomes and latencies so far.
struct Tally {
    var count = 0
    var firstError: String?
    var latency = Histogram<UInt64>(highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three)
    /// Counts per outcome, in `allCases` order: a report costs no hashing.
    private var counts = [Int](repeating: 0, count: DeliveryReport.Outcome.allCases.count)

    var accepted: Int { counts[Self.index(of: .accepted)] }
    /// Messages not wholly accepted, by where they failed and with what: `RCPT 550`,
    /// `AUTH 535`, `connection` (counted only off the accepted path).
    var failures: [String: Int] = [:]

    /// The outcomes that occurred, by name.
    var byOutcome: [String: Int] {
        var result: [String: Int] = [:]
        for (outcome, count) in zip(DeliveryReport.Outcome.allCases, counts) where count > 0 { result[outcome.rawValue] = count }
        return result
    }

    private static func index(of outcome: DeliveryReport.Outcome) -> Int {
        DeliveryReport.Outcome.allCases.firstIndex(of: outcome)!  // allCases holds every case
    }

    /// Where and how a message failed: the command and the reply code when a reply decided
    /// it (for a partial acceptance, the first refused recipient's), else the error's kind.
    static func failureKey(_ report: DeliveryReport) -> String {
        if let error = report.error {
            let phase = error.command ?? "\(error.kind)"
            return error.code.map { "\(phase) \($0)" } ?? phase
        }
        if let refused = report.recipients.first(where: { $0.status != .accepted }) {
            return refused.code.map { "RCPT \($0)" } ?? "\(refused.status)"
        }
        return "\(report.outcome)"
    }

    /// The failures, most frequent first: `RCPT 550 ×98, connection ×2`.
    var failureSummary: String {
        failures.sorted { ($1.value, $0.key) < ($0.value, $1.key) }.map { "\($0.key) ×\($0.value.grouped)" }
            .joined(separator: ", ")
    }

    mutating func add(_ report: DeliveryReport) {
        count += 1
        counts[Self.index(of: report.outcome)] += 1
        if report.outcome != .accepted { failures[Self.failureKey(report), default: 0] += 1 }
        if firstError == nil, let error = report.error { firstError = "\(error)" }
        let (seconds, attoseconds) = report.elapsed.components  // one Int128 division, not two
        let micros = seconds * 1_000_000 + attoseconds / 1_000_000_000_000
        _ = latency.record(UInt64(max(1, micros)))
    }
}

/// A progress bar on a terminal, a line every five seconds elsewhere; on stderr.
struct Progress {
    let total: Int?
    let duration: Double?
    let start: ContinuousClock.Instant
    let isTerminal = isatty(2) != 0
    var lastDraw: ContinuousClock.Instant?
    var drew = false

    init(total: Int?, duration: Double?, start: ContinuousClock.Instant) {
        self.total = total
        self.duration = duration
        self.start = start
    }

    mutating func update(done: Int, errors: Int, now: ContinuousClock.Instant, to handle: FileHandle) {
        let interval: Duration = isTerminal ? .milliseconds(200) : .seconds(5)
        if let lastDraw, now - lastDraw < interval { return }
        if lastDraw == nil { lastDraw = now; return }
        lastDraw = now
        let seconds = (now - start).seconds
        let rate = Double(done) / max(seconds, 1e-9)
        var fraction: Double?
        var eta = ""
        if let total {
            fraction = Double(done) / Double(total)
            eta = String(format: "ETA %.0fs", Double(total - done) / max(rate, 1e-9))
        } else if let duration {
            fraction = min(1, seconds / duration)
            eta = String(format: "%.0fs left", max(0, duration - seconds))
        }
        var line = String(format: "%@ msgs  %@ msg/s  %@  errors %d",
                          done.grouped, Int(rate).grouped, eta, errors)
        if isTerminal {
            if let fraction {
                let width = 30
                let filled = Int(fraction * Double(width))
                line = "[" + String(repeating: "=", count: filled) + String(repeating: " ", count: width - filled) + "] " + line
            }
            handle.write(Data(("\r\u{1B}[2K" + line).utf8))
            drew = true
        } else {
            handle.write(Data((line + "\n").utf8))
        }
    }

    func finish(to handle: FileHandle) {
        if drew { handle.write(Data("\r\u{1B}[2K".utf8)) }
    }
}

/// What a run measured.
struct BenchResult {
    let target: String
    let connections: Int
    let size: Int
    let recipients: Int
    let pipelining: Bool
    let chunking: Bool
    let tally: Tally
    let elapsed: Duration
    let clientCPU: Double
    let sinkCPU: Double?

    /// Messages tried a second, whatever became of them.
    var messagesPerSecond: Double { Double(tally.count) / max(elapsed.seconds, 1e-9) }
    /// Messages accepted (for every recipient) a second: the figure a server is judged by.
    var acceptedPerSecond: Double { Double(tally.accepted) / max(elapsed.seconds, 1e-9) }
    var megabytesPerSecond: Double { Double(tally.accepted * size) / 1_000_000 / max(elapsed.seconds, 1e-9) }
    var clientCPUPerMessage: Double { clientCPU / Double(max(1, tally.count)) * 1e6 }
    func percentile(_ p: Double) -> Double { Double(tally.latency.valueAtPercentile(p)) / 1000 }

    var text: String {
        var lines = [
            "sluice bench → \(target): \(tally.count.grouped) messages of \(size.grouped) bytes, \(recipients) recipient(s), "
                + "\(connections) connections, pipelining \(pipelining ? "on" : "off"), chunking \(chunking ? "on" : "off")",
            "outcomes:  " + tally.byOutcome.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value.grouped)" }.joined(separator: ", "),
            String(format: "elapsed:   %.3f s", elapsed.seconds),
            tally.accepted == tally.count
                ? String(format: "rate:      %@ msg/s, %.1f MB/s", Int(messagesPerSecond.rounded()).grouped, megabytesPerSecond)
                : String(format: "rate:      %@ msg/s accepted, %.1f MB/s (%@ attempts/s)",
                         Int(acceptedPerSecond.rounded()).grouped, megabytesPerSecond, Int(messagesPerSecond.rounded()).grouped),
            String(format: "latency:   p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, max %.2f ms",
                   percentile(50), percentile(90), percentile(99), Double(tally.latency.max) / 1000),
            String(format: "client CPU: %.1f µs/message (%.2f s)", clientCPUPerMessage, clientCPU),
        ]
        if let sinkCPU {
            lines.append(String(format: "sink CPU:  %.1f µs/message (%.2f s)", sinkCPU / Double(max(1, tally.count)) * 1e6, sinkCPU))
        }
        if !tally.failures.isEmpty { lines.append("failures:  " + tally.failureSummary) }
        if let error = tally.firstError { lines.append("first error: \(error)") }
        return lines.joined(separator: "\n")
    }

    var json: String {
        var object: [String: Any] = [
            "target": target, "messages": tally.count, "size": size, "recipients": recipients, "connections": connections,
            "pipelining": pipelining, "chunking": chunking, "outcomes": tally.byOutcome,
            "elapsedSeconds": elapsed.seconds, "messagesPerSecond": messagesPerSecond,
            "acceptedPerSecond": acceptedPerSecond, "accepted": tally.accepted, "failures": tally.failures,
            "megabytesPerSecond": megabytesPerSecond,
            "latencyMilliseconds": ["p50": percentile(50), "p90": percentile(90), "p99": percentile(99),
                                    "max": Double(tally.latency.max) / 1000],
            "clientCPUSeconds": clientCPU, "clientCPUMicrosecondsPerMessage": clientCPUPerMessage,
        ]
        if let sinkCPU { object["sinkCPUSeconds"] = sinkCPU }
        if let error = tally.firstError { object["firstError"] = error }
        let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }
}

extension Int {
    /// With thousands separators: 100,000.
    var grouped: String {
        let digits = String(Swift.max(self, -self))
        var result = ""
        for (index, character) in digits.enumerated() {
            if index > 0, (digits.count - index) % 3 == 0 { result += "," }
            result.append(character)
        }
        return self < 0 ? "-" + result : result
    }
}
