import ArgumentParser
import Foundation
import Histogram
import Sluice
import SluiceSink
import Synchronization

/// `sluice bench`: drives a server (by default an embedded sink) as fast as it takes mail and
/// reports throughput, latency and the client's CPU per message.
struct BenchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Measure how many messages per second a server takes (by default an embedded sink on 127.0.0.1:0).",
        discussion: """
            Every message has its own Message-ID; with DKIM keys each is signed on its own. With the \
            embedded sink, --security starttls or tls runs real TLS with a certificate made at \
            start-up (and verified); without --security it runs in plaintext. The output says which.
            """,
        subcommands: [BenchMergeCommand.self]
    )

    @Option(help: ArgumentHelp(
        "The server to drive, HOST:PORT[=WEIGHT]; repeatable. Without it an embedded sink is started.",
        discussion: "With several, the connections are split by weight (1 by default), and so are the open model's arrivals."))
    var target: [String] = []
    @Option(name: .customLong("tls-share"),
            help: "The percentage of connections over TLS (--security's, starttls by default); the rest are plaintext.")
    var tlsShare: Double?
    @Option(help: "Messages to send (ignored with --duration).")
    var messages = 100_000
    @Option(help: "Send for this many seconds instead of a fixed count.")
    var duration: Double?
    @Option(help: "Connections in the pool.")
    var connections = 16
    @Option(name: .customLong("messages-per-connection"),
            help: "Close each connection after this many messages (1: a new connection, greeting, EHLO, STARTTLS and AUTH for every message).")
    var messagesPerConnection: Int?
    @Option(help: "Write one line a second: messages, accepted, failed, latency percentiles and connections open (JSON lines, or CSV for a name ending in .csv).")
    var timeseries: String?
    @Option(name: .customLong("hdr-out"),
            help: "Write each second's latencies as HdrHistogram's interval log (microseconds), which its tools and sluice bench merge read.")
    var hdrOut: String?
    @Option(name: .customLong("start-at"),
            help: "Start sending at this time (seconds since the epoch, or ISO 8601 such as 2026-12-05T16:40:00Z): runs on several hosts start together, for sluice bench merge.")
    var startAt: String?
    @Option(help: "Write a report to look at: one self-contained HTML file with throughput and latency over time, the percentile spectrum, the failures and the run's settings.")
    var report: String?
    @Option(help: ArgumentHelp(
        "Recipients per message: N, a uniform range LO-HI, or a mix N:WEIGHT,… (default 1, or as many as --to lists).",
        discussion: "A message with k recipients goes to the first k addresses."))
    var recipients: String?
    @Option(help: ArgumentHelp(
        "Message size in bytes: N, a uniform range LO-HI, or a mix N:WEIGHT,…; k is 1,024 and m 1,048,576 (default 1k; not with --eml).",
        discussion: "--size 1k-100k draws each message's size uniformly; --size 1k:80,10k:15,1m:5 draws from a weighted mix."))
    var size: String?
    @Option(name: .customLong("size-mix"), help: "The same as --size with a mix, SIZE:WEIGHT,… (1k:80,10k:15,1m:5).")
    var sizeMix: String?
    @Flag(help: "Add an X-Sluice-Checksum field (the SHA-256 of the body) that sluice sink --verify checks, so corruption on the way shows up as failures.")
    var checksum = false
    @Option(help: "Seed for the per-message draws of size and recipients (default: random, printed), so a run can be repeated.")
    var seed: UInt64?
    @Option(help: "The envelope sender and the From address.")
    var from = "bench@sluice.test"
    @Option(help: "Recipients: addresses (repeatable or comma-separated), or one pattern with {n}, numbered 1 to --recipients (default rcpt{n}@sink.test).")
    var to: [String] = []
    @Option(help: "The Subject.")
    var subject = "sluice bench"
    @Option(help: "Add a header, 'Name: value'; repeatable.")
    var header: [String] = []
    @Option(help: "Attach this file to the generated message (repeatable): a multipart/mixed message, each file in base64.")
    var attach: [String] = []
    @Option(help: "Send this RFC 5322 message instead of a generated one, or replay a corpus round-robin: a directory of messages or an mbox file (each copy with its own Message-ID).")
    var eml: String?
    @Option(help: ArgumentHelp(
        "The open model: messages arrive at this many a second whatever the server does, and latency counts from each one's intended start.",
        discussion: "Without it, the closed model: a fixed number in flight (--in-flight), each message sent as soon as one reports."))
    var rate: Double?
    @Option(help: ArgumentHelp(
        "A load profile: DURATION:VALUE or DURATION:FROM-TO stages, comma-separated (30s:0-2000,2m:2000,30s:2000-0).",
        discussion: "Each stage moves its value linearly (D:V from where the stage before ended). In the open model (the default with --stages) the values are arrival rates; with --model closed they are messages in flight. The stages decide how long the run lasts."))
    var stages: String?
    @Option(help: "open or closed (default: open with --rate or --stages, else closed).")
    var model: ModelName?

    enum ModelName: String, ExpressibleByArgument, CaseIterable {
        case open, closed
    }

    @Option(name: .customLong("max-lateness"),
            help: "With --rate: a message that cannot start within this many seconds of its intended start is dropped, and counted.")
    var maxLateness: Double = 1
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
        guard messages > 0, connections > 0 else {
            throw ValidationError("--messages and --connections must be positive")
        }
        _ = try sizes()
        _ = try recipientCounts()
        if eml != nil, size != nil || sizeMix != nil || !header.isEmpty || subject != "sluice bench" || !attach.isEmpty {
            throw ValidationError("--eml sends the messages it names; it cannot be combined with --size, --size-mix, --subject, --header or --attach")
        }
        if !attach.isEmpty, size != nil || sizeMix != nil {
            throw ValidationError("--attach makes a message as large as its files; it cannot be combined with --size or --size-mix")
        }
        if let duration, duration <= 0 { throw ValidationError("--duration must be positive") }
        if let rate, rate <= 0 { throw ValidationError("--rate must be positive") }
        if let stages {
            _ = try BenchStages(parsing: stages)
            if rate != nil { throw ValidationError("--stages gives the rates; it cannot be combined with --rate") }
            if duration != nil { throw ValidationError("--stages decides how long the run lasts; it cannot be combined with --duration") }
        } else if model == .open, rate == nil {
            throw ValidationError("--model open needs --rate or --stages: the rate at which messages arrive")
        }
        if model == .closed, rate != nil { throw ValidationError("--rate is the open model's; it cannot be combined with --model closed") }
        if maxLateness <= 0 { throw ValidationError("--max-lateness must be positive") }
        if let messagesPerConnection, messagesPerConnection <= 0 { throw ValidationError("--messages-per-connection must be positive") }
        if let inFlight, inFlight <= 0 { throw ValidationError("--in-flight must be positive") }
        if let loops, loops <= 0 { throw ValidationError("--loops must be positive") }
        for target in target { _ = try BenchTarget(parsing: target) }
        if let tlsShare {
            guard (0...100).contains(tlsShare) else { throw ValidationError("--tls-share is a percentage, 0 to 100") }
            if client.security == .tls || client.security == ClientOptions.SecurityMode.none {
                throw ValidationError("--tls-share splits connections between STARTTLS and plaintext on one port: "
                                      + "give --security starttls (the default) or starttls-opportunistic")
            }
            if client.user != nil, tlsShare < 100, !client.allowPlaintextAuth {
                throw ValidationError("--tls-share \(tlsShare.formatted()) leaves connections in plaintext, where AUTH needs --allow-plaintext-auth")
            }
        }
        if let startAt {
            let wait = try Self.startTime(startAt) - Date().timeIntervalSince1970
            if wait < -1 { throw ValidationError("--start-at \(startAt) passed \(Int(-wait)) s ago") }
            if wait > 86_400 { throw ValidationError("--start-at \(startAt) is more than a day away") }
        }
    }

    /// `--start-at`'s time in seconds since the epoch: a number of seconds, or ISO 8601.
    static func startTime(_ text: String) throws -> Double {
        if let seconds = Double(text), seconds.isFinite { return seconds }
        if let date = try? Date(text, strategy: .iso8601) { return date.timeIntervalSince1970 }
        if let date = try? Date(text, strategy: Date.ISO8601FormatStyle(includingFractionalSeconds: true)) { return date.timeIntervalSince1970 }
        throw ValidationError("--start-at \(text): give seconds since the epoch (\(Int(Date().timeIntervalSince1970) + 10)) or an ISO 8601 time with its zone (2026-12-05T16:40:00Z)")
    }

    /// `--size` or `--size-mix` (not both), or the default of 1k.
    func sizes() throws -> BenchDistribution {
        if size != nil, sizeMix != nil { throw ValidationError("give --size or --size-mix, not both") }
        if let sizeMix, !sizeMix.contains(":") {
            throw ValidationError("--size-mix \(sizeMix): give SIZE:WEIGHT pairs, such as 1k:80,10k:15,1m:5 (or use --size)")
        }
        guard let text = size ?? sizeMix else { return BenchDistribution(.fixed(1_024), salt: Self.sizeSalt) }
        return try BenchDistribution(parsing: text, option: size == nil ? "--size-mix" : "--size", minimum: Self.smallestSize,
                                     salt: Self.sizeSalt, value: BenchDistribution.octets)
    }

    /// `--recipients`, if given.
    func recipientCounts() throws -> BenchDistribution? {
        try recipients.map {
            try BenchDistribution(parsing: $0, option: "--recipients", minimum: 1, salt: Self.recipientSalt) { Int($0) }
        }
    }

    /// Keep the size and recipient draws of one message independent.
    static let sizeSalt: UInt64 = 0x5172_E5A1_7000_0001
    static let recipientSalt: UInt64 = 0x2EC1_71E2_7000_0002

    /// Descriptors the process needs besides its connections: the loops, their wake-ups,
    /// standard streams and the libraries' own.
    static let descriptorOverhead = 64

    func run() async throws {
        let stderr = FileHandle.standardError
        // Each connection takes a descriptor, and with the embedded sink (in this process)
        // its other end takes one more; past the limit connects fail with EMFILE mid-run.
        let descriptorLimit = raiseDescriptorLimit()
        let needed = connections * (target.isEmpty ? 2 : 1) + Self.descriptorOverhead
        if needed > descriptorLimit {
            try settingUp("bench", nothingSent: true) {
                throw ValidationError(
                    "--connections \(connections) needs about \(needed) file descriptors\(target.isEmpty ? " (the embedded sink holds the other end of each)" : ""); "
                        + "the limit here is \(descriptorLimit) (ulimit -n): raise it, or use at most "
                        + "\(max(0, (descriptorLimit - Self.descriptorOverhead) / (target.isEmpty ? 2 : 1))) connections")
            }
        }
        var sink: SMTPSink?
        var sinkGroup: EventLoopGroup?
        let targets = try settingUp("bench", nothingSent: true) { try target.map(BenchTarget.init(parsing:)) }
        var configuration = try settingUp("bench", nothingSent: true) {
            try client.configuration(host: targets.first?.host ?? "127.0.0.1", port: targets.first?.port)
        }
        let seed = seed ?? UInt64.random(in: 0...UInt64.max)
        let load = try settingUp("bench", nothingSent: true) {
            let envelopes = try makeEnvelopes()
            let to = envelopes.first.recipients[0].address.address
            let mails = try eml.map { try BenchMessages.corpus($0, from: from, signers: configuration.dkim, checksum: checksum, seed: seed) }
                ?? (attach.isEmpty ? nil : try BenchMessages.withAttachments(attach, from: from, to: to, subject: subject, headers: header,
                                                                             signers: configuration.dkim, checksum: checksum, seed: seed))
                ?? BenchMessages.generated(sizes: try sizes(), from: from, to: envelopes.first.recipients[0].address.address,
                                           subject: subject, headers: try checkedHeaders(), signers: configuration.dkim,
                                           checksum: checksum, seed: seed)
            return BenchLoad(messages: mails, envelopes: envelopes)
        }
        var certificateDirectory: String?
        defer { certificateDirectory.map(removeDirectory) }
        // With the embedded sink: its ports, plaintext (and STARTTLS) and implicit TLS.
        var embeddedPorts: (plain: Int, implicitTLS: Int)?
        if targets.isEmpty {
            // The embedded sink runs on loops of its own, so its CPU can be told from the client's.
            let group = EventLoopGroup(numberOfLoops: max(1, EventLoopGroup.coreCount / 2))
            var sinkConfiguration = SinkConfiguration()
            sinkConfiguration.port = 0
            sinkConfiguration.server.maximumRecipients = max(1000, load.envelopes.counts.maximum)
            sinkConfiguration.verifiesChecksums = checksum
            sinkConfiguration.server.maximumMessageSize = max(sinkConfiguration.server.maximumMessageSize, load.messages.largest + 65_536)
            let security = client.security ?? (tlsShare == nil ? .none : .starttls)
            if security != .none {
                // Real TLS, with a certificate made now that the client verifies.
                let directory = try settingUp("bench", nothingSent: true) { try makeTemporaryDirectory("sluice-bench") }
                certificateDirectory = directory
                let certificate = try settingUp("bench", nothingSent: true) { try SelfSignedCertificate(in: directory) }
                sinkConfiguration.tls = try TLSContext(.server(certificateChainFile: certificate.certificateFile,
                                                               privateKeyFile: certificate.privateKeyFile))
                if security == .tls { sinkConfiguration.implicitTLSListen = ("127.0.0.1", 0) }
                configuration.tls = .client(trustRoots: .pemFile(certificate.certificateFile))
                configuration.tlsServerName = "localhost"
            }
            let started = try await SMTPSink.start(sinkConfiguration, group: group)
            sink = started
            sinkGroup = group
            embeddedPorts = (started.localAddress.port, started.implicitTLSAddress?.port ?? 0)
            configuration.security = security.security
        }
        configuration.pool.maximumMessagesPerConnection = messagesPerConnection ?? Int.max
        configuration.pool.maximumConnectionLifetime = .seconds(86_400)
        configuration.pipelining.enabled = !noPipelining
        configuration.pipelining.chunking = !noChunking
        configuration.retry = .none
        let clientGroup = EventLoopGroup(
            numberOfLoops: loops ?? (sink == nil ? EventLoopGroup.coreCount : max(1, EventLoopGroup.coreCount / 2)))
        configuration.eventLoopGroup = clientGroup
        // Connections open (for the live line), and how long each phase of opening one took.
        let liveLine = isatty(2) != 0
        let benchMetrics = BenchMetrics()
        configuration.metrics.factory = benchMetrics
        configuration.metrics.timesTransactionPhases = true
        let lanes = try settingUp("bench", nothingSent: true) {
            try BenchLane.plan(targets: targets.isEmpty ? [BenchTarget(host: "127.0.0.1", port: nil, name: "embedded sink")] : targets,
                               connections: connections, security: configuration.security, tlsPercent: tlsShare)
        }
        let clients = try settingUp("bench", nothingSent: true) {
            try lanes.map { lane in
                var laneConfiguration = configuration
                laneConfiguration.host = lane.host
                laneConfiguration.security = lane.security
                if let embeddedPorts {
                    laneConfiguration.port = lane.security == .implicitTLS ? embeddedPorts.implicitTLS : embeddedPorts.plain
                } else {
                    laneConfiguration.port = lane.port ?? configuration.security.defaultPort  // one port for both kinds of lane
                }
                laneConfiguration.pool.maximumConnections = lane.connections
                return try SMTPClient(configuration: laneConfiguration)
            }
        }

        let profile = try stages.map(BenchStages.init(parsing:))
        let isOpen = model == .open || rate != nil || (profile != nil && model != .closed)
        // The schedule of the open model: the stages, or one stage at the constant rate that
        // lasts the run's duration, or long enough for --messages.
        let schedule = profile ?? rate.map {
            BenchStages([.init(duration: duration ?? Double(messages) / $0 + 1, from: $0, to: $0)])
        }
        let runDuration = duration ?? profile?.totalDuration
        if let startAt {
            // Set up first, then wait: every host starts sending at the same moment.
            let wait = try Self.startTime(startAt) - Date().timeIntervalSince1970
            if wait > 0 { try await Task.sleep(for: .milliseconds(Int64(wait * 1000))) }
        }
        let clock = ContinuousClock()
        let start = clock.now
        let wallStart = Date().timeIntervalSince1970
        let deadline = runDuration.map { start + .milliseconds(Int64($0 * 1000)) }
        let total = runDuration == nil ? messages : Int.max
        let sinkCPUStart = await sinkGroup?.threadCPUTime() ?? .zero
        let cpuStart = processCPUTime()

        let series = try settingUp("bench", nothingSent: true) {
            if let report, !FileManager.default.createFile(atPath: report, contents: nil) {
                throw ValidationError("--report: cannot write \(report)")  // found now, not after the run
            }
            let log = try hdrOut.map { try HistogramLogWriter(path: $0, startTime: wallStart) }
            return timeseries == nil && report == nil && hdrOut == nil && !liveLine ? nil
                : try TimeSeries(path: timeseries, log: log, metrics: benchMetrics, start: start)
        }
        let recorder = BenchRecorder(
            series: series, lanes: lanes.count, connectionCount: liveLine ? benchMetrics : nil,
            progress: Progress(total: runDuration == nil ? messages : nil, duration: runDuration, start: start, isTerminal: liveLine))
        let maximumInFlight = inFlight ?? (profile != nil && !isOpen ? Int(profile!.peak.rounded(.up)) : connections * 64)
        // What each lane sends: the open model gives each its own arrivals (its share of the
        // numbers); the closed ones share one source, taken from as each has room.
        let feed: BenchFeed =
            if isOpen, let schedule {
                .open(lanes.map {
                    OpenArrivals(load: load, count: total, schedule: schedule, start: start,
                                 maximumLateness: .milliseconds(Int64(maxLateness * 1000)), share: $0.share)
                })
            } else if let profile {
                .closedStages(ClosedStages(load: load, stages: profile, start: start))
            } else {
                .closed(BenchMails(load: load, count: total, deadline: deadline))
            }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (index, lane) in lanes.enumerated() {
                let smtp = clients[index]
                // Each lane's share of what may be in flight, as its share of the connections.
                let laneInFlight = max(1, maximumInFlight * lane.connections / connections)
                group.addTask {
                    switch feed {
                    case .open(let arrivals):
                        // The open model: arrivals on a schedule, latency from each intended
                        // start (wrk2's correction for coordinated omission), what cannot start
                        // in time dropped (k6's).
                        let open = arrivals[index]
                        for try await report in smtp.send(contentsOf: open, maximumInFlight: laneInFlight) {
                            let number = load.number(of: report)
                            recorder.record(report, latency: clock.now - open.due(number ?? 1),
                                            size: load.size(of: report, number: number), lane: index, to: stderr)
                        }
                    case .closedStages(let sequence):
                        // The closed model with the number in flight following the stages.
                        for try await report in smtp.send(contentsOf: sequence, maximumInFlight: max(1, maximumInFlight)) {
                            sequence.finished()
                            recorder.record(report, latency: report.elapsed, size: load.size(of: report), lane: index, to: stderr)
                        }
                    case .closed(let mails):
                        for try await report in smtp.send(contentsOf: mails, maximumInFlight: laneInFlight) {
                            recorder.record(report, latency: report.elapsed, size: load.size(of: report), lane: index, to: stderr)
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        let elapsed = clock.now - start
        let run = recorder.finish(now: clock.now, to: stderr)
        let cpu = processCPUTime() - cpuStart
        let sinkCPU = (await sinkGroup?.threadCPUTime() ?? .zero) - sinkCPUStart
        for smtp in clients { await smtp.shutdown() }
        await clientGroup.shutdown()
        await sink?.shutdown()
        await sinkGroup?.shutdown()

        let dropped = if case .open(let arrivals) = feed { arrivals.reduce(0) { $0 + $1.dropped } } else { 0 }
        let tally = run.tally
        let result = BenchResult(
            target: targets.isEmpty ? "embedded sink" : targets.map(\.name).joined(separator: ", "),
            security: Self.describe(lanes: lanes, embedded: sink != nil, signed: !configuration.dkim.isEmpty),
            connections: connections, seed: seed, sizes: load.messages.sizeDescription,
            recipients: load.envelopes.counts.description, checksum: checksum,
            pipelining: !noPipelining, chunking: !noChunking,
            model: isOpen ? .open(rate: rate, stages: profile?.description, dropped: dropped, maximumLateness: maxLateness)
                : .closed(inFlight: maximumInFlight, stages: profile?.description),
            tally: tally, elapsed: elapsed,
            clientCPU: cpu - sinkCPU.seconds, sinkCPU: sink == nil ? nil : sinkCPU.seconds,
            sinkTLSSessions: sink?.statistics.tlsSessions,
            sinkChecksums: checksum ? sink.map { ($0.statistics.checksumsVerified, $0.statistics.checksumMismatches) } : nil,
            lanes: lanes.count == 1 ? [] : zip(lanes, run.lanes).map {
                BenchResult.Lane(target: $0.target, security: Self.describe($0.security, embedded: false, signed: false),
                                 connections: $0.connections, messages: $1.messages, accepted: $1.accepted)
            },
            phases: benchMetrics.phaseLatencies)
        print(json ? result.json : result.text)
        if let log = run.series?.log {
            log.comment(BenchRecord(result, acceptedBySecond: run.series?.seconds.map(\.accepted) ?? []).comment)
            log.close()
        }
        if let report, let series = run.series {
            do {
                try BenchReport.write(result, seconds: series.seconds, to: report)
            } catch {
                stderr.write(Data("sluice bench: \(error)\n".utf8))
                throw ExitCode(1)
            }
        }
        try tally.failUnlessAllAccepted("sluice bench")
    }

    /// The envelopes messages go with: `--from`, and the first k of `--to`'s addresses (or of
    /// its pattern numbered from 1) for each k that `--recipients` can draw.
    func makeEnvelopes() throws -> BenchEnvelopes {
        let listed = to.flatMap { $0.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) } }
        let counts: BenchDistribution
        let addresses: [String]
        if listed.isEmpty || (listed.count == 1 && listed[0].contains("{n}")) {
            counts = try recipientCounts() ?? BenchDistribution(.fixed(1), salt: Self.recipientSalt)
            let pattern = listed.first ?? "rcpt{n}@sink.test"
            addresses = (1...counts.maximum).map { pattern.replacingOccurrences(of: "{n}", with: String($0)) }
        } else {
            counts = try recipientCounts() ?? BenchDistribution(.fixed(listed.count), salt: Self.recipientSalt)
            if counts.maximum > listed.count {
                throw ValidationError("--to lists \(listed.count) addresses but --recipients \(counts) needs \(counts.maximum); "
                                      + "list more, or give one pattern with {n} to number them")
            }
            addresses = listed
        }
        do {
            return try BenchEnvelopes(from: from, addresses: addresses, counts: counts)
        } catch {
            throw ValidationError("--from or --to: \(error)")
        }
    }

    /// `--header` values, each `Name: value` with a name a header may have.
    func checkedHeaders() throws -> [String] {
        try header.map { line in
            let (name, value) = try parseHeaderFlag(line)
            return "\(name): \(value)"
        }
    }

    /// What the output says of the connections: one kind, or with `--tls-share` how many of
    /// each.
    static func describe(lanes: [BenchLane], embedded: Bool, signed: Bool) -> String {
        let kinds = Dictionary(grouping: lanes, by: \.security)
        guard kinds.count > 1, let secured = lanes.first(where: { $0.security != .none }) else {
            return describe(lanes[0].security, embedded: embedded, signed: signed)
        }
        let total = lanes.reduce(0) { $0 + $1.connections }
        let tls = kinds[secured.security, default: []].reduce(0) { $0 + $1.connections }
        return describe(secured.security, embedded: embedded, signed: signed)
            + "; on \(tls) of \(total) connections (the rest in plaintext)"
    }

    /// What the output says of the connection: `starttls`, and how its certificate came.
    static func describe(_ security: SMTPClient.Security, embedded: Bool, signed: Bool) -> String {
        var text: String =
            switch security {
            case .startTLS: "starttls"
            case .opportunisticStartTLS: "starttls-opportunistic"
            case .implicitTLS: "tls"
            default: "none (plaintext)"
            }
        if embedded, security != .none { text += ", certificate made at start-up and verified" }
        if signed { text += "; DKIM-signed per message" }
        return text
    }
}

/// A fresh directory under the temporary directory, `NAME-XXXXXX` (mkdtemp: new, and the
/// owner's only).
func makeTemporaryDirectory(_ name: String) throws -> String {
    var template = Array((NSTemporaryDirectory() + "/\(name)-XXXXXX").utf8CString)
    guard let made = mkdtemp(&template) else {
        throw ValidationError("cannot make a temporary directory: \(String(cString: strerror(errno)))")
    }
    return String(cString: made)
}

/// Removes `path` and what it holds.
func removeDirectory(_ path: String) {
    try? FileManager.default.removeItem(atPath: path)
}

/// What message number n of a run is: its content and its envelope.
///
/// A class: every lane asks it for each message, and a struct held by the lanes was copied
/// for each call, a retain and a release of every array it holds.
final class BenchLoad: Sendable {
    let messages: BenchMessages
    let envelopes: BenchEnvelopes

    init(messages: BenchMessages, envelopes: BenchEnvelopes) {
        self.messages = messages
        self.envelopes = envelopes
    }

    /// Message `number` (from 1) with the envelope for the recipient count drawn for it.
    func mail(_ number: Int) -> OutgoingMail {
        OutgoingMail(envelope: envelopes.envelope(for: number, seed: messages.seed), message: messages.message(number))
    }

    /// The number of the message `report` is about (it is in its Message-ID).
    func number(of report: DeliveryReport) -> Int? {
        report.messageID.flatMap(messages.number(inMessageID:))
    }

    /// The size of the message `report` is about (`number` if already known).
    func size(of report: DeliveryReport, number: Int? = nil) -> Int {
        if let size = messages.oneSize { return size }
        return messages.size(of: number ?? self.number(of: report) ?? 1)
    }
}

/// The envelopes of a run: one for each recipient count that can be drawn, each to the first
/// that many addresses.
struct BenchEnvelopes: Sendable {
    let counts: BenchDistribution
    /// By recipient count; nil for counts that cannot be drawn.
    private let byCount: [Envelope?]

    /// The most addresses all the envelopes may hold together (about 64 MB).
    static let addressLimit = 1_000_000

    init(from: String, addresses: [String], counts: BenchDistribution) throws {
        let possible: [Int] =
            switch counts.shape {
            case .fixed(let value): [value]
            case .uniform(let range): Array(range)
            case .mix(let entries, _): entries.map(\.value)
            }
        let total = Set(possible).reduce(0) { $0 + $1 }
        guard total <= Self.addressLimit else {
            throw ValidationError("--recipients \(counts) needs \(total.grouped) addresses across its envelopes; "
                                  + "the most is \(Self.addressLimit.grouped) (a smaller range, or a mix of a few counts)")
        }
        var byCount = [Envelope?](repeating: nil, count: counts.maximum + 1)
        for count in possible where byCount[count] == nil {
            byCount[count] = try Envelope(from: from, to: Array(addresses.prefix(count)))
        }
        self.counts = counts
        self.byCount = byCount
    }

    /// The envelope with the most recipients (its first address names the bench message's To).
    var first: Envelope { byCount.last!! }  // the maximum can always be drawn

    func envelope(for number: Int, seed: UInt64) -> Envelope {
        byCount[counts.value(for: number, seed: seed)]!  // a drawn count was made in init
    }
}

/// `count` messages, or as many as go until `deadline`, each its own copy: one source that
/// every lane of a closed run takes from as it has room.
final class BenchMails: Sequence, Sendable {
    let load: BenchLoad
    let count: Int
    let deadline: ContinuousClock.Instant?
    private let taken = Atomic<Int>(0)
    private let ended = Atomic<Bool>(false)

    init(load: BenchLoad, count: Int, deadline: ContinuousClock.Instant?) {
        self.load = load
        self.count = count
        self.deadline = deadline
    }

    struct Iterator: IteratorProtocol {
        let mails: BenchMails
        mutating func next() -> OutgoingMail? {
            guard !mails.ended.load(ordering: .relaxed) else { return nil }
            let number = mails.taken.add(1, ordering: .relaxed).newValue
            if number > mails.count || (number % 64 == 0 && mails.deadline.map { ContinuousClock.now >= $0 } == true) {
                mails.ended.store(true, ordering: .relaxed)
                return nil
            }
            return mails.load.mail(number)
        }
    }

    func makeIterator() -> Iterator { Iterator(mails: self) }
}

/// Outcomes and latencies so far.
struct Tally {
    var count = 0
    /// Octets of the messages accepted (before any DKIM signature).
    var acceptedBytes = 0
    var firstError: String?
    var latency = Histogram<UInt64>.latencies()
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
    ///
    /// Written with plain `if let`s: Swift 6.3.1's optimizer crashes (CopyPropagation) on the
    /// same logic written with `Optional.map` closures in a release build.
    static func failureKey(_ report: DeliveryReport) -> String {
        if let error = report.error {
            var key = error.command ?? error.kind.description
            if let code = error.code { key += " " + String(code) }
            return key
        }
        for recipient in report.recipients where recipient.status != .accepted {
            if let code = recipient.code { return "RCPT " + String(code) }
            return String(describing: recipient.status)
        }
        return report.outcome.rawValue
    }

    /// The failures, most frequent first: `RCPT 550 ×98, connection ×2`.
    var failureSummary: String {
        failures.sorted { ($1.value, $0.key) < ($0.value, $1.key) }.map { "\($0.key) ×\($0.value.grouped)" }
            .joined(separator: ", ")
    }

    /// Counts `report`, whose message took `latency`: from its submission in the closed
    /// model, from its intended start in the open one.
    mutating func add(_ report: DeliveryReport, latency elapsed: Duration, size: Int) {
        count += 1
        counts[Self.index(of: report.outcome)] += 1
        if report.outcome == .accepted { acceptedBytes += size }
        if report.outcome != .accepted { failures[Self.failureKey(report), default: 0] += 1 }
        if firstError == nil, let error = report.error { firstError = "\(error)" }
        latency.record(latency: elapsed)
    }

    /// Exits with status 1, saying how many and why, unless every message was accepted.
    func failUnlessAllAccepted(_ command: String) throws {
        guard accepted != count else { return }
        let reason = "\(command): \((count - accepted).grouped) of \(count.grouped) messages were not accepted (\(failureSummary))\n"
        FileHandle.standardError.write(Data(reason.utf8))
        throw ExitCode(1)
    }

    /// Adds another run's counts (`sluice bench merge`); its latencies are added apart.
    mutating func add(outcomes: [String: Int], failures: [String: Int], acceptedBytes: Int) {
        for (name, count) in outcomes {
            guard let outcome = DeliveryReport.Outcome(rawValue: name) else { continue }
            counts[Self.index(of: outcome)] += count
            self.count += count
        }
        self.failures.merge(failures, uniquingKeysWith: +)
        self.acceptedBytes += acceptedBytes
    }
}

/// What a run measured.
struct BenchResult {
    let target: String
    let security: String
    let connections: Int
    let seed: UInt64
    /// The size of every message, or the distribution sizes were drawn from.
    let sizes: String
    /// The recipients of every message, or the distribution their counts were drawn from.
    let recipients: String
    let checksum: Bool
    let pipelining: Bool
    let chunking: Bool
    let model: LoadModel
    let tally: Tally
    let elapsed: Duration
    let clientCPU: Double
    let sinkCPU: Double?
    /// Sessions the embedded sink saw finish a TLS handshake: the proof that TLS ran.
    let sinkTLSSessions: Int?
    /// With `--checksum`, the messages whose checksum the embedded sink verified, and those
    /// whose body did not match it.
    let sinkChecksums: (verified: Int, mismatched: Int)?
    /// With several targets or `--tls-share`, what went through each lane.
    var lanes: [Lane] = []
    /// How long each phase of opening a connection's session and of a transaction took
    /// (microseconds), in the order they come.
    var phases: [(phase: String, latency: Histogram<UInt64>)] = []

    struct Lane {
        let target: String
        let security: String
        let connections: Int
        let messages: Int
        let accepted: Int
    }

    /// Messages tried a second, whatever became of them.
    var messagesPerSecond: Double { Double(tally.count) / max(elapsed.seconds, 1e-9) }
    /// Messages accepted (for every recipient) a second: the figure a server is judged by.
    var acceptedPerSecond: Double { Double(tally.accepted) / max(elapsed.seconds, 1e-9) }
    var megabytesPerSecond: Double { Double(tally.acceptedBytes) / 1_000_000 / max(elapsed.seconds, 1e-9) }
    /// The mean size of the messages accepted.
    var meanSize: Int { tally.acceptedBytes / max(1, tally.accepted) }
    var clientCPUPerMessage: Double { clientCPU / Double(max(1, tally.count)) * 1e6 }
    func percentile(_ p: Double) -> Double { Double(tally.latency.valueAtPercentile(p)) / 1000 }

    /// What was run, in one line: the text's first line after the target.
    var headline: String {
        String(text.prefix { $0 != "\n" }.drop { $0 != ":" }.dropFirst()).trimmingCharacters(in: .whitespaces)
    }

    var text: String {
        var lines = [
            "sluice bench → \(target): \(tally.count.grouped) messages of \(Int(sizes).map(\.grouped) ?? sizes + " (mean \(meanSize.grouped))") bytes, "
                + "\(recipients) recipient(s), \(connections) connections, pipelining \(pipelining ? "on" : "off"), chunking \(chunking ? "on" : "off")"
                + (checksum ? ", checksummed" : "") + (Int(sizes) == nil || Int(recipients) == nil ? ", seed \(seed)" : ""),
            "security:  \(security)",
            "model:     \(model.text)",
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
        if let sinkChecksums {
            lines.append("checksums: \(sinkChecksums.verified.grouped) verified by the sink, \(sinkChecksums.mismatched.grouped) mismatched")
        }
        if !phases.isEmpty {
            lines.append("phases:    " + phases.map {
                String(format: "%@ p50 %.2f ms, p99 %.2f ms ×%@", $0.phase, Double($0.latency.valueAtPercentile(50)) / 1000,
                       Double($0.latency.valueAtPercentile(99)) / 1000, Int($0.latency.totalCount).grouped)
            }.joined(separator: "; "))
        }
        for lane in lanes {
            lines.append("lane:      \(lane.target), \(lane.security), \(lane.connections.grouped) connections: "
                         + "\(lane.messages.grouped) messages, \(lane.accepted.grouped) accepted")
        }
        if !tally.failures.isEmpty { lines.append("failures:  " + tally.failureSummary) }
        if let error = tally.firstError { lines.append("first error: \(error)") }
        return lines.joined(separator: "\n")
    }

    var json: String {
        var object: [String: Any] = [
            "target": target, "security": security, "messages": tally.count, "size": Int(sizes) ?? meanSize, "sizes": sizes,
            "recipients": Int(recipients) ?? 0, "recipientCounts": recipients, "seed": String(seed), "checksum": checksum,
            "connections": connections,
            "pipelining": pipelining, "chunking": chunking, "outcomes": tally.byOutcome, "model": model.json,
            "elapsedSeconds": elapsed.seconds, "messagesPerSecond": messagesPerSecond,
            "acceptedPerSecond": acceptedPerSecond, "accepted": tally.accepted, "failures": tally.failures,
            "megabytesPerSecond": megabytesPerSecond,
            "latencyMilliseconds": tally.latency.millisecondsSummary,
            "clientCPUSeconds": clientCPU, "clientCPUMicrosecondsPerMessage": clientCPUPerMessage,
        ]
        if let sinkCPU { object["sinkCPUSeconds"] = sinkCPU }
        if let sinkTLSSessions { object["sinkTLSSessions"] = sinkTLSSessions }
        if let sinkChecksums {
            object["sinkChecksums"] = ["verified": sinkChecksums.verified, "mismatched": sinkChecksums.mismatched]
        }
        if let error = tally.firstError { object["firstError"] = error }
        if !phases.isEmpty {
            object["phaseMilliseconds"] = Dictionary(uniqueKeysWithValues: phases.map {
                var summary = $0.latency.millisecondsSummary
                summary["count"] = Double($0.latency.totalCount)
                return ($0.phase, summary)
            })
        }
        if !lanes.isEmpty {
            object["lanes"] = lanes.map {
                ["target": $0.target, "security": $0.security, "connections": $0.connections, "messages": $0.messages,
                 "accepted": $0.accepted] as [String: Any]
            }
        }
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

/// How load is offered.
enum LoadModel {
    /// A fixed number in flight (or, with `stages`, a number that follows them): each
    /// message goes as soon as one reports (`smtp-source`'s model). Latency is from
    /// submission, so a stalled server slows the arrivals and hides.
    case closed(inFlight: Int, stages: String?)
    /// Arrivals at `rate` a second (or at the rates of `stages`) whatever the server does;
    /// latency from each message's intended start; `dropped` could not start within
    /// `maximumLateness` seconds.
    case open(rate: Double?, stages: String?, dropped: Int, maximumLateness: Double)

    var text: String {
        switch self {
        case .closed(let inFlight, let stages):
            (stages.map { "closed, in flight by stages \($0)" } ?? "closed, \(inFlight.grouped) in flight")
                + "; latency from each message's submission"
        case .open(let rate, let stages, let dropped, let lateness):
            String(format: "open, %@; latency from each message's intended start; dropped %@ (could not start within %g s)",
                   stages.map { "arrivals by stages \($0) (msg/s)" } ?? "\(Int((rate ?? 0).rounded()).grouped) msg/s arriving",
                   dropped.grouped, lateness)
        }
    }

    var json: [String: Any] {
        var object: [String: Any]
        switch self {
        case .closed(let inFlight, let stages):
            object = ["name": "closed", "inFlight": inFlight]
            if let stages { object["stages"] = stages }
        case .open(let rate, let stages, let dropped, let lateness):
            object = ["name": "open", "dropped": dropped, "maximumLatenessSeconds": lateness]
            if let rate { object["rate"] = rate }
            if let stages { object["stages"] = stages }
        }
        return object
    }
}

/// The open model's arrivals: message n (from 1) is due when the schedule's rate, integrated
/// from the start, reaches n - 1 (at `(n - 1) / rate` for a constant rate). The bulk send
/// asks for the next message once the one before has room, so a message asked for later than
/// its due time plus `maximumLateness` could not start in time: it is dropped, counted, and
/// the schedule goes on with the first message still in time.
final class OpenArrivals: AsyncSequence, Sendable {
    typealias Element = OutgoingMail
    let load: BenchLoad
    /// Arrivals in all: at most the count asked for, and no more than the schedule holds.
    let count: Int
    let schedule: BenchStages
    let start: ContinuousClock.Instant
    let maximumLateness: Duration
    /// The numbers this sequence sends (a lane's share; all of them by default).
    let share: LaneShare
    private let droppedCount = Atomic<Int>(0)

    init(load: BenchLoad, count: Int, schedule: BenchStages, start: ContinuousClock.Instant, maximumLateness: Duration,
         share: LaneShare = .all) {
        self.share = share
        self.load = load
        self.count = Swift.min(count, schedule.totalArrivals)
        self.schedule = schedule
        self.start = start
        self.maximumLateness = maximumLateness
    }

    /// Messages that could not start in time.
    var dropped: Int { droppedCount.load(ordering: .relaxed) }

    /// When message `number` (from 1) is due (for a number past the end, the end).
    func due(_ number: Int) -> ContinuousClock.Instant {
        start + .nanoseconds(Int64(((schedule.due(number) ?? schedule.totalDuration) * 1e9).rounded()))
    }

    struct AsyncIterator: AsyncIteratorProtocol {
        let arrivals: OpenArrivals
        var next: Int

        init(arrivals: OpenArrivals) {
            self.arrivals = arrivals
            next = arrivals.share.first(atOrAfter: 1)
        }

        mutating func next() async throws -> OutgoingMail? {
            let clock = ContinuousClock()
            while next <= arrivals.count {
                let due = arrivals.due(next)
                let now = clock.now
                if now > due + arrivals.maximumLateness {
                    // Too late: every message due before now - lateness is dropped at once:
                    // those the schedule's rate brought by then.
                    let lateness = (now - arrivals.maximumLateness - arrivals.start).seconds
                    let brought = arrivals.schedule.arrivals(by: lateness).rounded(.up)
                    let firstInTime = brought >= Double(arrivals.count) ? arrivals.count + 1 : Swift.max(next + 1, Int(brought) + 1)
                    arrivals.droppedCount.add(arrivals.share.count(in: next..<firstInTime), ordering: .relaxed)
                    next = arrivals.share.first(atOrAfter: firstInTime)
                    continue
                }
                if due > now { try await Task.sleep(until: due, clock: clock) }
                defer { next = arrivals.share.first(atOrAfter: next + 1) }
                return arrivals.load.mail(next)
            }
            return nil
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(arrivals: self) }
}

/// The closed model under `--stages`: the number of messages in flight follows the stages.
/// A message goes when fewer than the stage's value are in flight (the value rounded, and
/// checked again every millisecond while the limit is reached), until the last stage ends.
final class ClosedStages: AsyncSequence, Sendable {
    typealias Element = OutgoingMail
    let load: BenchLoad
    let stages: BenchStages
    let start: ContinuousClock.Instant
    private let issued = Atomic<Int>(0)
    private let reported = Atomic<Int>(0)

    init(load: BenchLoad, stages: BenchStages, start: ContinuousClock.Instant) {
        self.load = load
        self.stages = stages
        self.start = start
    }

    /// Counts a report: its message is no longer in flight.
    func finished() { reported.add(1, ordering: .relaxed) }

    struct AsyncIterator: AsyncIteratorProtocol {
        let sequence: ClosedStages

        func next() async throws -> OutgoingMail? {
            let clock = ContinuousClock()
            while true {
                let elapsed = (clock.now - sequence.start).seconds
                if elapsed >= sequence.stages.totalDuration { return nil }
                let limit = Int(sequence.stages.value(at: elapsed).rounded())
                let inFlight = sequence.issued.load(ordering: .relaxed) - sequence.reported.load(ordering: .relaxed)
                if inFlight < limit {
                    let number = sequence.issued.add(1, ordering: .relaxed).newValue
                    return sequence.load.mail(number)
                }
                try await Task.sleep(for: .milliseconds(1))
            }
        }
    }

    func makeAsyncIterator() -> AsyncIterator { AsyncIterator(sequence: self) }
}

/// The run second by second, as reports arrive (a second in which none arrived is a line of
/// zeros, made when the next one comes or at the end): for `--timeseries`, one JSON line a
/// second written as it ends, and for `--report`, kept.
struct TimeSeries {
    /// One second of the run.
    struct Second {
        let second: Int
        let messages: Int
        let accepted: Int
        /// p50, p90, p99 and max, in milliseconds.
        let latency: [String: Double]
        /// Connections open as the second ended (unknown for merged runs).
        var connections: Int?

        var json: [String: Any] {
            var object: [String: Any] = ["second": second, "messages": messages, "accepted": accepted, "failed": messages - accepted,
                                         "latencyMilliseconds": latency]
            if let connections { object["connections"] = connections }
            return object
        }

        static let csvHeader = "second,messages,accepted,failed,p50_ms,p90_ms,p99_ms,max_ms,connections\n"

        var csv: String {
            "\(second),\(messages),\(accepted),\(messages - accepted),"
                + ["p50", "p90", "p99", "max"].map { String(format: "%.3f", latency[$0] ?? 0) }.joined(separator: ",")
                + ",\(connections.map(String.init) ?? "")\n"
        }
    }

    private let file: FileHandle?
    /// The file is CSV (its name ends in `.csv`), else JSON lines.
    private let isCSV: Bool
    /// Where the connections open come from, if counted.
    private let metrics: BenchMetrics?
    private let start: ContinuousClock.Instant
    private(set) var seconds: [Second] = []
    private var second = 0
    private var messages = 0
    private var accepted = 0
    private var latency = Histogram<UInt64>.latencies()
    /// With `--hdr-out`, each second's histogram as an interval of HdrHistogram's log.
    let log: HistogramLogWriter?

    /// Writes each second to `path` as it ends (CSV if its name ends in `.csv`, else JSON
    /// lines), and its histogram to `log`, if given; `metrics` counts the connections open.
    init(path: String?, log: HistogramLogWriter? = nil, metrics: BenchMetrics? = nil, start: ContinuousClock.Instant) throws {
        self.log = log
        self.metrics = metrics
        isCSV = path?.lowercased().hasSuffix(".csv") ?? false
        if let path {
            guard FileManager.default.createFile(atPath: path, contents: nil), let file = FileHandle(forWritingAtPath: path) else {
                throw ValidationError("--timeseries: cannot write \(path)")
            }
            self.file = file
            if isCSV { file.write(Data(Second.csvHeader.utf8)) }
        } else {
            file = nil
        }
        self.start = start
    }

    mutating func add(_ report: DeliveryReport, latency elapsed: Duration, now: ContinuousClock.Instant) {
        flush(through: Int((now - start).seconds))
        messages += 1
        if report.outcome == .accepted { accepted += 1 }
        latency.record(latency: elapsed)
    }

    /// Ends every second before `current`.
    private mutating func flush(through current: Int) {
        while second < current {
            end()
            second += 1
        }
    }

    private mutating func end(length: Double = 1) {
        let record = Second(second: second, messages: messages, accepted: accepted, latency: latency.millisecondsSummary,
                            connections: metrics?.open)
        seconds.append(record)
        log?.interval(start: Double(second), length: length, histogram: latency)
        if let file {
            if isCSV {
                file.write(Data(record.csv.utf8))
            } else {
                let data = (try? JSONSerialization.data(withJSONObject: record.json, options: [.sortedKeys])) ?? Data()
                file.write(data + Data("\n".utf8))
            }
        }
        messages = 0
        accepted = 0
        latency.reset()
    }

    /// Ends the seconds left, the last one partial.
    mutating func finish(now: ContinuousClock.Instant) {
        let elapsed = (now - start).seconds
        flush(through: Int(elapsed))
        if messages > 0 { end(length: elapsed - Double(second)) }
        try? file?.close()
    }
}

/// Latencies in whole microseconds, as both the run's tally and each second of the time
/// series keep them.
extension Histogram where Count == UInt64 {
    /// Records `elapsed`, at least one microsecond.
    mutating func record(latency elapsed: Duration) {
        let (seconds, attoseconds) = elapsed.components  // one Int128 division, not two
        _ = record(UInt64(Swift.max(1, seconds * 1_000_000 + attoseconds / 1_000_000_000_000)))
    }

    /// p50, p90, p99 and the maximum in milliseconds, for JSON; zeros with nothing recorded.
    var millisecondsSummary: [String: Double] {
        func milliseconds(_ value: UInt64) -> Double { totalCount == 0 ? 0 : Double(value) / 1000 }
        return ["p50": milliseconds(valueAtPercentile(50)), "p90": milliseconds(valueAtPercentile(90)),
                "p99": milliseconds(valueAtPercentile(99)), "max": milliseconds(max)]
    }
}
