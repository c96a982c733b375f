import ArgumentParser
import Foundation
import Sluice
import SluiceTransport
import SluiceSink
import Synchronization

/// `sluice soak`: the client against an embedded sink with every fault switched on, for a
/// given time; then proof that nothing was lost or miscounted, that memory and descriptors
/// stayed flat, and that a sink which stops reading holds the producer back.
struct SoakCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "soak",
        abstract: "Run the client against a faulty embedded sink for a while and prove the accounting.",
        discussion: """
            The sink rejects and defers recipients and messages, answers 421 mid-session, drops \
            connections after the end of data, delays its replies and closes idle connections; \
            it stores to an mbox file. The producer pauses now and then so pooled connections \
            go idle. At the end every message given must have exactly one report; every \
            message reported accepted must be in the mbox and nothing else may be but unknown \
            outcomes; resident memory and open descriptors must be flat after warm-up. Then \
            the overload check: a sink that stops reading must hold the producer back with \
            bounded memory, and when it reads again everything must complete. Exit status 0 \
            when every check holds, 1 when one fails.
            """
    )

    @Option(help: "Seconds to run the faulty phase.")
    var duration: Double = 60
    @Option(help: "Connections in the pool.")
    var connections = 16
    @Option(help: "Messages per second (the client's rate limit).")
    var rate: Double = 500
    @Option(help: "Seed for the sink's faults and delays.")
    var seed: UInt64 = 1
    @Option(name: .customLong("overload-seconds"), help: "How long the sink stops reading in the overload check (0 skips it).")
    var overloadSeconds: Double = 10
    @Option(name: .customLong("work-dir"), help: "Where the mbox goes (default: a new directory under the temporary directory, removed after).")
    var workDirectory: String?
    @Flag(help: "Print the result as one JSON object.")
    var json = false

    func validate() throws {
        guard duration > 0, connections > 0, rate > 0, overloadSeconds >= 0 else {
            throw ValidationError("--duration, --connections and --rate must be positive, --overload-seconds not negative")
        }
    }

    func run() async throws {
        let stderr = FileHandle.standardError
        let directory = try workDirectory ?? makeTemporaryDirectory("sluice-soak")
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { if workDirectory == nil { try? FileManager.default.removeItem(atPath: directory) } }
        let mbox = directory + "/soak.mbox"
        try? FileManager.default.removeItem(atPath: mbox)

        // libuv opens a process-wide pipe (its signal lock) with the first loop, and
        // libdispatch a timerfd for each clock the first time a timer uses it: the baseline
        // is taken after all of them, so none is mistaken for a leak.
        await EventLoopGroup(numberOfLoops: 1).shutdown()
        try await Task.sleep(for: .milliseconds(1))
        try await SuspendingClock().sleep(for: .milliseconds(1))
        await withCheckedContinuation { done in
            DispatchQueue.global().asyncAfter(wallDeadline: .now() + .milliseconds(1)) { done.resume() }
        }
        let baseline = ResourceSample.now(at: .zero)
        let baselineTargets = ResourceSample.descriptorTargets()
        func leaked() -> String {
            let now = ResourceSample.descriptorTargets().filter {
                baselineTargets[$0.key] != $0.value && $0.value != "anon_inode:[timerfd]"
            }
            return now.isEmpty ? "" : "; new: " + now.sorted { $0.key < $1.key }.map { "\($0.key) -> \($0.value)" }.joined(separator: ", ")
        }
        stderr.write(Data("soak: \(Int(duration))s of faults at \(Int(rate)) msg/s over \(connections) connections; mbox \(mbox)\n".utf8))
        let faulty = try await runFaultyPhase(mbox: mbox, progress: stderr)
        let stored = try StoredIDs(mbox: mbox)
        let afterShutdown = ResourceSample.now(at: .zero)
        var checks = faulty.checks(stored: stored, baseline: baseline, afterShutdown: afterShutdown, leaked: leaked())

        var overload: OverloadResult?
        if overloadSeconds > 0 {
            stderr.write(Data("soak: overload, the sink stops reading for \(Int(overloadSeconds))s\n".utf8))
            let result = try await runOverload()
            checks += result.checks
            let final = ResourceSample.now(at: .zero)
            checks.append(Check(name: "every descriptor is closed after the overload check",
                                passed: final.descriptors <= baseline.descriptors,
                                detail: "\(baseline.descriptors) at the start, \(final.descriptors) at the end" + leaked()))
            overload = result
        }

        let report = SoakReport(faulty: faulty, stored: stored, baseline: baseline, afterShutdown: afterShutdown,
                                overload: overload, checks: checks)
        print(json ? report.json : report.text)
        if checks.contains(where: { !$0.passed }) { throw ExitCode(1) }
    }

    // MARK: The faulty phase

    private func runFaultyPhase(mbox: String, progress: FileHandle) async throws -> FaultyResult {
        var sinkConfiguration = SinkConfiguration()
        sinkConfiguration.port = 0
        sinkConfiguration.store = .mbox(mbox)
        sinkConfiguration.idleTimeout = .seconds(2)  // shorter than the producer's pauses
        sinkConfiguration.replyDelay = .random(.zero, .milliseconds(20))
        var faults = SinkFaults()
        faults.seed = seed
        faults.rejectRecipients = .probability(0.02)
        faults.deferRecipients = .probability(0.02)
        faults.rejectData = .probability(0.01)
        faults.deferData = .probability(0.02)
        faults.disconnect = .probability(0.005)
        faults.disconnectPhase = .rcpt  // 421 mid-session
        // Every 200th end of data, not a 0.5 % chance: a short run must still see the unknown
        // outcome it proves the accounting for (at 0.005, a run of 480 messages had none one
        // time in three).
        faults.dropAfterData = .everyNth(200)
        sinkConfiguration.faults = faults
        let sinkGroup = EventLoopGroup(numberOfLoops: 1)
        let sink = try await SMTPSink.start(sinkConfiguration, group: sinkGroup)

        var configuration = SMTPClient.Configuration(host: "127.0.0.1", port: sink.localAddress.port, security: .none)
        configuration.pool.maximumConnections = connections
        configuration.pool.maximumMessagesPerConnection = 500  // retirements, too
        configuration.rateLimit = SMTPClient.RateLimit(messagesPerSecond: rate)
        configuration.retry.backoff = Backoff(initial: .milliseconds(100), maximum: .seconds(1))
        let clientGroup = EventLoopGroup(numberOfLoops: 1)
        configuration.eventLoopGroup = clientGroup
        let client = try SMTPClient(configuration: configuration)

        let clock = ContinuousClock()
        let start = clock.now
        let given = Counter()
        let mails = SoakMails(until: start + .milliseconds(Int64(duration * 1000)), given: given)
        var outcomes: [DeliveryReport.Outcome: Int] = [:]
        var ledger = SoakLedger(expected: Int(rate * duration) + 1024)
        var samples: [ResourceSample] = []
        var nextSample = start
        for try await report in client.send(contentsOf: mails, maximumInFlight: connections * 16) {
            outcomes[report.outcome, default: 0] += 1
            ledger.record(report)
            let now = clock.now
            if now >= nextSample {
                samples.append(.now(at: now - start))
                if samples.count % 10 == 0 {
                    let done = outcomes.values.reduce(0, +)
                    progress.write(Data("soak: \(Int((now - start).seconds))s, \(done.grouped) reported\n".utf8))
                }
                nextSample = now + .seconds(1)
            }
        }
        samples.append(.now(at: clock.now - start))
        let elapsed = clock.now - start
        await client.shutdown()
        await clientGroup.shutdown()
        let statistics = sink.statistics
        await sink.shutdown()
        await sinkGroup.shutdown()
        return FaultyResult(given: given.value, outcomes: outcomes, ledger: ledger, samples: samples, elapsed: elapsed,
                            sinkMessages: statistics.messages, sinkRecipients: statistics.recipients,
                            warmUp: .milliseconds(Int64(duration * 200)), connections: connections)
    }

    // MARK: Overload

    /// A sink that stops reading: large messages pile up against it; the producer must be
    /// held back at the in-flight bound and memory must stay bounded; when it reads again,
    /// everything must complete.
    private func runOverload() async throws -> OverloadResult {
        var sinkConfiguration = SinkConfiguration()
        sinkConfiguration.port = 0
        let sinkGroup = EventLoopGroup(numberOfLoops: 1)
        let sink = try await SMTPSink.start(sinkConfiguration, group: sinkGroup)
        var configuration = SMTPClient.Configuration(host: "127.0.0.1", port: sink.localAddress.port, security: .none)
        configuration.pool.maximumConnections = connections
        let clientGroup = EventLoopGroup(numberOfLoops: 1)
        configuration.eventLoopGroup = clientGroup
        let client = try SMTPClient(configuration: configuration)

        let size = 256 << 10
        // 100 MiB offered, each message held twice (its BDAT and DATA forms): a producer that
        // was not held back would grow memory by 200 MiB, against 32 MiB for 64 in flight.
        let count = 400
        let maximumInFlight = 64
        let taken = Counter()
        let mails = OverloadMails(count: count, size: size, taken: taken)
        let before = ResourceSample.now(at: .zero)
        sink.pauseReading()
        let reports = Locked<[DeliveryReport.Outcome: Int]>([:])
        let consumer = Task {
            for try await report in client.send(contentsOf: mails, maximumInFlight: maximumInFlight) {
                reports.withLock { $0[report.outcome, default: 0] += 1 }
            }
        }
        var peak = before
        let clock = ContinuousClock()
        let stallEnd = clock.now + .milliseconds(Int64(overloadSeconds * 1000))
        while clock.now < stallEnd {
            try await Task.sleep(for: .milliseconds(250))
            let sample = ResourceSample.now(at: .zero)
            if sample.residentBytes > peak.residentBytes { peak = sample }
        }
        let takenWhileStalled = taken.value
        let reportedWhileStalled = reports.withLock { $0.values.reduce(0, +) }
        sink.resumeReading()
        let resumed = clock.now
        try await consumer.value
        let drain = clock.now - resumed
        let outcomes = reports.withLock { $0 }
        let stored = sink.statistics.messages
        await client.shutdown()
        await clientGroup.shutdown()
        await sink.shutdown()
        await sinkGroup.shutdown()
        return OverloadResult(offered: count, size: size, maximumInFlight: maximumInFlight,
                              takenWhileStalled: takenWhileStalled, reportedWhileStalled: reportedWhileStalled,
                              residentGrowth: peak.residentBytes - before.residentBytes, outcomes: outcomes,
                              stored: stored, drain: drain)
    }
}

// MARK: Messages

/// Unique small messages (Message-ID `<soak-N@sluice.test>`, one to three recipients) until
/// `until`, with a pause of five seconds after every fifteen so pooled connections go idle
/// and the sink closes them.
private struct SoakMails: AsyncSequence, Sendable {
    let until: ContinuousClock.Instant
    let given: Counter

    struct AsyncIterator: AsyncIteratorProtocol {
        let until: ContinuousClock.Instant
        let given: Counter
        var number = 0
        var burstEnd: ContinuousClock.Instant

        mutating func next() async throws -> OutgoingMail? {
            var now = ContinuousClock.now
            if now >= burstEnd {
                try await Task.sleep(for: .seconds(5))
                now = ContinuousClock.now
                burstEnd = now + .seconds(15)
            }
            guard now < until else { return nil }
            number += 1
            given.increment()
            return try SoakMails.mail(number)
        }
    }

    func makeAsyncIterator() -> AsyncIterator {
        AsyncIterator(until: until, given: given, burstEnd: ContinuousClock.now + .seconds(15))
    }

    static func mail(_ number: Int) throws -> OutgoingMail {
        let id = messageID(number)
        var text = "From: <soak@sluice.test>\r\nTo: <rcpt@sink.test>\r\nSubject: soak \(number)\r\nMessage-ID: \(id)\r\n\r\n"
        for line in 0..<8 { text += "line \(line) of message \(number): the quick brown fox jumps over the lazy dog\r\n" }
        let envelope = try Envelope(from: "soak@sluice.test", to: (0...(number % 3)).map { "r\($0)-\(number)@sink.test" })
        return OutgoingMail(envelope: envelope, message: try EncodedMessage(bytes: Array(text.utf8), messageID: id))
    }
}

extension SoakMails {
    static func messageID(_ number: Int) -> String { "<soak-\(number)@sluice.test>" }

    /// The number in a Message-ID that ``messageID(_:)`` made, or nil for any other.
    static func number(inMessageID id: some Collection<UInt8>) -> Int? {
        let prefix = "<soak-".utf8, suffix = "@sluice.test>".utf8
        guard id.count > prefix.count + suffix.count, id.starts(with: prefix), id.reversed().starts(with: suffix.reversed()) else {
            return nil
        }
        let digits = id.dropFirst(prefix.count).dropLast(suffix.count)
        guard digits.count <= 18, digits.allSatisfy({ $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }) else { return nil }
        let number = digits.reduce(0) { $0 * 10 + Int($1 - UInt8(ascii: "0")) }
        return number > 0 ? number : nil
    }
}

/// What the client reported for each soak message, by its number. Compact on purpose: the
/// soak measures this process's memory, and a `[String: Outcome]` of 200,000 Message-IDs
/// (about 35 MiB) once passed for a leak in a 10-minute run.
struct SoakLedger {
    static let outcomes = DeliveryReport.Outcome.allCases

    /// Per message number: 0 when no report came, else the outcome's index in ``outcomes`` + 1.
    private var codes: [UInt8]
    /// Per message number: the attempts its report gave (at most 255).
    private var attemptCounts: [UInt8]
    private(set) var duplicates = 0
    /// Reports whose Message-ID the soak did not make (none are expected).
    private(set) var unidentified = 0
    private(set) var distinct = 0
    /// Recipients reported accepted, and reported unknown (the data was sent, no reply came).
    private(set) var acceptedRecipients = 0
    private(set) var unknownRecipients = 0

    init(expected: Int) {
        codes = []
        attemptCounts = []
        codes.reserveCapacity(expected)
        attemptCounts.reserveCapacity(expected)
    }

    mutating func record(_ report: DeliveryReport) {
        for recipient in report.recipients {
            if recipient.status == .accepted { acceptedRecipients += 1 } else if recipient.status == .unknown { unknownRecipients += 1 }
        }
        guard let id = report.messageID, let number = SoakMails.number(inMessageID: id.utf8),
              let code = Self.outcomes.firstIndex(of: report.outcome) else {
            unidentified += 1
            return
        }
        if number >= codes.count {
            codes.append(contentsOf: repeatElement(0, count: number + 1 - codes.count))
            attemptCounts.append(contentsOf: repeatElement(0, count: number + 1 - attemptCounts.count))
        }
        if codes[number] != 0 { duplicates += 1 } else { distinct += 1 }
        codes[number] = UInt8(code + 1)
        attemptCounts[number] = UInt8(clamping: report.attempts)
    }

    func outcome(_ number: Int) -> DeliveryReport.Outcome? {
        guard number < codes.count, codes[number] != 0 else { return nil }
        return Self.outcomes[Int(codes[number]) - 1]
    }

    func attempts(_ number: Int) -> Int { number < attemptCounts.count ? Int(attemptCounts[number]) : 0 }

    /// The numbers that have a report.
    var numbers: some Sequence<Int> { codes.indices.lazy.filter { codes[$0] != 0 } }
}

/// `count` large messages, each its own bytes (a copy of a template with its number stamped
/// in the subject) so that a producer that was not held back would show in memory; counts
/// how many were taken.
private struct OverloadMails: Sequence, Sendable {
    let count: Int
    let template: [UInt8]
    let stamp: Range<Int>
    let envelope: Envelope
    let taken: Counter

    init(count: Int, size: Int, taken: Counter) {
        self.count = count
        let head = "From: <load@sluice.test>\r\nSubject: overload "
        let line = String(repeating: "x", count: 998) + "\r\n"
        template = Array((head + "0000000000\r\n\r\n" + String(repeating: line, count: size / 1000)).utf8)
        stamp = head.utf8.count..<(head.utf8.count + 10)
        envelope = try! Envelope(from: "load@sluice.test", to: ["r@sink.test"])
        self.taken = taken
    }

    struct Iterator: IteratorProtocol {
        let mails: OverloadMails
        var number = 0
        mutating func next() -> OutgoingMail? {
            guard number < mails.count else { return nil }
            number += 1
            mails.taken.increment()
            var bytes = mails.template
            var value = number
            for index in mails.stamp.reversed() {
                bytes[index] = UInt8(ascii: "0") + UInt8(value % 10)
                value /= 10
            }
            return OutgoingMail(envelope: mails.envelope, message: try! EncodedMessage(bytes: bytes))
        }
    }

    func makeIterator() -> Iterator { Iterator(mails: self) }
}

/// A count shared with a sequence the client iterates.
private final class Counter: Sendable {
    private let atomic = Atomic<Int>(0)
    var value: Int { atomic.load(ordering: .relaxed) }
    func increment() { atomic.add(1, ordering: .relaxed) }
}

// MARK: Measurements and checks

/// This process's resident memory and open descriptors at one moment.
struct ResourceSample {
    let at: Duration
    let residentBytes: Int
    /// Open descriptors, not counting libdispatch's timerfds: it keeps one per clock (wall,
    /// uptime, monotonic), at most three, each made the first time a timer needs it — under
    /// load that can be in the middle of a run, and it is not Sluice's.
    let descriptors: Int

    /// What each open descriptor is ("7 -> pipe:[123]"), to name a leak.
    static func descriptorTargets() -> [String: String] {
        var targets: [String: String] = [:]
        for fd in (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? [] {
            targets[fd] = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/" + fd)) ?? "?"
        }
        return targets
    }

    static func now(at: Duration) -> ResourceSample {
        let statm = (try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8)) ?? ""
        let pages = statm.split(separator: " ").dropFirst().first.flatMap { Int($0) } ?? 0
        let targets = descriptorTargets().values
        let timerfds = targets.count { $0 == "anon_inode:[timerfd]" }
        return ResourceSample(at: at, residentBytes: pages * Int(sysconf(Int32(_SC_PAGESIZE))),
                              descriptors: targets.count - min(timerfds, 3))
    }

    var megabytes: Double { Double(residentBytes) / 1_048_576 }
}

/// The soak messages in an mbox, by number, with how many copies of each.
struct StoredIDs {
    /// Copies per message number.
    private(set) var copies: [UInt32] = []
    /// Messages whose Message-ID the soak did not make (none are expected).
    private(set) var foreign = 0
    private(set) var distinct = 0
    private(set) var total = 0

    func copies(of number: Int) -> Int { number < copies.count ? Int(copies[number]) : 0 }

    /// The numbers stored at least once.
    var numbers: some Sequence<Int> { copies.indices.lazy.filter { copies[$0] != 0 } }

    init(mbox path: String) throws {
        guard let handle = FileHandle(forReadingAtPath: path) else { return }  // nothing stored
        defer { try? handle.close() }
        let prefix = Array("Message-ID: ".utf8)
        var partial: [UInt8] = []
        while let chunk = try handle.read(upToCount: 4 << 20), !chunk.isEmpty {
            var bytes = partial
            bytes.append(contentsOf: chunk)
            var lineStart = 0
            while let newline = bytes[lineStart...].firstIndex(of: 10) {
                if bytes[lineStart..<newline].starts(with: prefix) {
                    total += 1
                    var end = newline
                    if end > lineStart, bytes[end - 1] == 13 { end -= 1 }
                    if let number = SoakMails.number(inMessageID: bytes[(lineStart + prefix.count)..<end]) {
                        if number >= copies.count { copies.append(contentsOf: repeatElement(0, count: number + 1 - copies.count)) }
                        if copies[number] == 0 { distinct += 1 }
                        copies[number] += 1
                    } else {
                        foreign += 1
                    }
                }
                lineStart = newline + 1
            }
            partial = Array(bytes[lineStart...])
        }
    }
}

/// One proven property.
struct Check {
    let name: String
    let passed: Bool
    let detail: String
}

/// What the faulty phase saw.
struct FaultyResult {
    let given: Int
    let outcomes: [DeliveryReport.Outcome: Int]
    let ledger: SoakLedger
    let samples: [ResourceSample]
    let elapsed: Duration
    let sinkMessages: Int
    let sinkRecipients: Int
    let warmUp: Duration
    let connections: Int

    var reported: Int { outcomes.values.reduce(0, +) }
    func count(_ outcome: DeliveryReport.Outcome) -> Int { outcomes[outcome] ?? 0 }

    /// Samples during warm-up (the first fifth of the run, and never fewer than the first
    /// three samples: a loaded machine may report late), those after, and the last quarter.
    var warmUpSamples: [ResourceSample] {
        let early = samples.filter { $0.at < warmUp }
        return early.count >= 3 ? early : Array(samples.prefix(3))
    }
    var afterWarmUp: [ResourceSample] { Array(samples.dropFirst(warmUpSamples.count)) }
    var lastQuarter: [ResourceSample] { samples.filter { $0.at >= elapsed * 0.75 } }

    func checks(stored: StoredIDs, baseline: ResourceSample, afterShutdown: ResourceSample, leaked: String) -> [Check] {
        var checks: [Check] = []
        let delivered: Set<DeliveryReport.Outcome> = [.accepted, .partiallyAccepted]
        checks.append(Check(
            name: "every message given has exactly one report",
            passed: reported == given && ledger.distinct == given && ledger.duplicates == 0 && ledger.unidentified == 0,
            detail: "given \(given), reports \(reported), distinct \(ledger.distinct), duplicates \(ledger.duplicates)"
                + (ledger.unidentified == 0 ? "" : ", with an unknown Message-ID \(ledger.unidentified)")))
        let missing = ledger.numbers.filter { delivered.contains(ledger.outcome($0)!) && stored.copies(of: $0) == 0 }
        checks.append(Check(
            name: "every message reported accepted is in the sink's store",
            passed: missing.isEmpty, detail: missing.isEmpty ? "all \(count(.accepted) + count(.partiallyAccepted)) found"
                : "missing \(missing.count), e.g. \(missing.prefix(3).map(SoakMails.messageID).joined(separator: " "))"))
        let unexpected = stored.numbers.filter { number in
            guard let outcome = ledger.outcome(number) else { return true }
            return !delivered.contains(outcome) && outcome != .unknown
        }
        // A second copy is right when some recipients were deferred and retried: each attempt
        // stores one copy for the recipients it got accepted, so never more than attempts.
        let extraCopies = stored.numbers.filter { number in
            let copies = stored.copies(of: number)
            return copies > 1 && (ledger.outcome(number).map { !delivered.contains($0) } ?? true || copies > max(ledger.attempts(number), 1))
        }
        checks.append(Check(
            name: "the store holds accepted messages and at most the unknowns besides",
            passed: unexpected.isEmpty && extraCopies.isEmpty && stored.foreign == 0
                && stored.distinct <= count(.accepted) + count(.partiallyAccepted) + count(.unknown),
            detail: "stored \(stored.distinct) distinct (\(stored.total) copies) ≤ accepted \(count(.accepted)) + partial "
                + "\(count(.partiallyAccepted)) + unknown \(count(.unknown)); not delivered yet stored \(unexpected.count), "
                + "unexplained copies \(extraCopies.count)" + (stored.foreign == 0 ? "" : ", not a soak message \(stored.foreign)")))
        // Per recipient, too: a message can be stored for fewer recipients than it was sent to.
        checks.append(Check(
            name: "every recipient reported accepted was stored for",
            passed: sinkRecipients >= ledger.acceptedRecipients
                && sinkRecipients <= ledger.acceptedRecipients + ledger.unknownRecipients,
            detail: "accepted \(ledger.acceptedRecipients) ≤ the sink's \(sinkRecipients) ≤ accepted + unknown "
                + "\(ledger.acceptedRecipients + ledger.unknownRecipients)"))
        checks.append(Check(
            name: "the sink's count matches its store", passed: sinkMessages == stored.total,
            detail: "sink counted \(sinkMessages), mbox holds \(stored.total)"))
        if let warm = warmUpSamples.map(\.residentBytes).max(), let late = lastQuarter.map(\.residentBytes).max(),
           afterWarmUp.count >= 4 {
            let allowed = max(16 << 20, warm / 10)
            checks.append(Check(
                name: "resident memory is flat after warm-up", passed: late <= warm + allowed,
                detail: String(format: "%.1f MiB at warm-up, %.1f MiB late (allowed +%.0f MiB)",
                               Double(warm) / 1_048_576, Double(late) / 1_048_576, Double(allowed) / 1_048_576)))
        } else {
            checks.append(Check(name: "resident memory is flat after warm-up", passed: false,
                                detail: "too few samples (\(samples.count)); run longer"))
        }
        if let warm = warmUpSamples.map(\.descriptors).max(), let late = lastQuarter.map(\.descriptors).max() {
            // The pool may still be opening connections during a short warm-up: each is two
            // descriptors here (client and sink), so a full pool is no growth either. With 16
            // connections a full pool measured 43 above the baseline (taken before the event
            // loops, the listener and the mbox exist): 32 for the connections, 11 for the rest.
            // Allow those, and 8 for connections being replaced. Under ASan beside the whole
            // suite the warm-up saw only 42 of the usual 53, and the old allowance of 8 in
            // all failed the full pool that followed.
            let allowed = max(warm + 4, baseline.descriptors + 2 * connections + 11 + 8)
            checks.append(Check(
                name: "open descriptors are flat after warm-up", passed: late <= allowed,
                detail: "at most \(warm) during warm-up, \(late) late (allowed \(allowed))"))
        }
        checks.append(Check(
            name: "every descriptor is closed after shutdown", passed: afterShutdown.descriptors <= baseline.descriptors,
            detail: "\(baseline.descriptors) before, \(afterShutdown.descriptors) after" + leaked))
        return checks
    }
}

/// What the overload check saw.
struct OverloadResult {
    let offered: Int
    let size: Int
    let maximumInFlight: Int
    let takenWhileStalled: Int
    let reportedWhileStalled: Int
    let residentGrowth: Int
    let outcomes: [DeliveryReport.Outcome: Int]
    let stored: Int
    let drain: Duration

    var checks: [Check] {
        let bound = 64 << 20
        return [
            Check(name: "a sink that stops reading holds the producer back",
                  passed: takenWhileStalled <= reportedWhileStalled + maximumInFlight,
                  detail: "\(takenWhileStalled) of \(offered) taken while stalled (in-flight bound \(maximumInFlight))"),
            Check(name: "memory stays bounded against a stalled sink", passed: residentGrowth <= bound,
                  detail: String(format: "grew %.1f MiB with %d × %d KiB offered (allowed %d MiB)",
                                 Double(residentGrowth) / 1_048_576, offered, size >> 10, bound >> 20)),
            Check(name: "when the sink reads again everything completes",
                  passed: outcomes[.accepted] == offered && stored == offered,
                  detail: String(format: "%d accepted, %d stored, in %.1f s", outcomes[.accepted] ?? 0, stored, drain.seconds)),
        ]
    }
}

/// The whole run, as text or JSON.
struct SoakReport {
    let faulty: FaultyResult
    let stored: StoredIDs
    let baseline: ResourceSample
    let afterShutdown: ResourceSample
    let overload: OverloadResult?
    let checks: [Check]

    private var outcomeText: String {
        faulty.outcomes.sorted { $0.key.rawValue < $1.key.rawValue }.map { "\($0.key.rawValue) \($0.value.grouped)" }
            .joined(separator: ", ")
    }

    var text: String {
        let first = faulty.afterWarmUp.first ?? faulty.samples.first
        let last = faulty.samples.last
        var lines = [
            String(format: "sluice soak: %@ messages given in %.0f s (%@ msg/s)", faulty.given.grouped, faulty.elapsed.seconds,
                   Int(Double(faulty.reported) / max(faulty.elapsed.seconds, 1e-9)).grouped),
            "outcomes:  " + outcomeText,
            "stored:    \(stored.distinct.grouped) messages (\(stored.total.grouped) copies)",
        ]
        if let first, let last {
            lines.append(String(format: "memory:    %.1f MiB after warm-up (%.0f s), %.1f MiB at the end; descriptors %d then %d, %d after shutdown",
                                first.megabytes, first.at.seconds, last.megabytes, first.descriptors, last.descriptors,
                                afterShutdown.descriptors))
        }
        for check in checks { lines.append("\(check.passed ? "ok  " : "FAIL") \(check.name): \(check.detail)") }
        return lines.joined(separator: "\n")
    }

    var json: String {
        var object: [String: Any] = [
            "given": faulty.given, "elapsedSeconds": faulty.elapsed.seconds,
            "outcomes": Dictionary(uniqueKeysWithValues: faulty.outcomes.map { ($0.key.rawValue, $0.value) }),
            "storedMessages": stored.distinct, "storedCopies": stored.total,
            "samples": faulty.samples.map { ["seconds": $0.at.seconds, "residentBytes": $0.residentBytes, "descriptors": $0.descriptors] },
            "descriptorsBefore": baseline.descriptors, "descriptorsAfterShutdown": afterShutdown.descriptors,
            "checks": checks.map { ["name": $0.name, "passed": $0.passed, "detail": $0.detail] },
            "passed": !checks.contains { !$0.passed },
        ]
        if let overload {
            object["overload"] = ["offered": overload.offered, "takenWhileStalled": overload.takenWhileStalled,
                                  "residentGrowthBytes": overload.residentGrowth, "drainSeconds": overload.drain.seconds]
        }
        let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }
}
