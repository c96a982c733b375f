import ArgumentParser
import Dispatch
import Foundation
import SluiceCore
import SluiceMIME
import SluiceOutbox
import SluiceSink
import SluiceTransport

/// `sluice sink`: an SMTP sink for tests and load work, as the sink issue specifies.
struct SinkCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sink",
        abstract: "Run an SMTP sink: take mail fast (discard, memory, Maildir or mbox), misbehave on demand, count."
    )

    @Option(help: "Address to listen on, HOST:PORT; port 0 picks one.")
    var listen = "127.0.0.1:2525"
    @Option(help: "Name in the greeting and EHLO reply.")
    var hostname = "localhost"
    @Option(name: .customLong("tls-cert"), help: "Server certificate chain (PEM) for STARTTLS and implicit TLS.")
    var tlsCertificate: String?
    @Option(name: .customLong("tls-key"), help: "Private key (PEM) for --tls-cert.")
    var tlsKey: String?
    @Option(name: .customLong("implicit-tls-listen"), help: "Also listen with TLS from the first byte, HOST:PORT.")
    var implicitTLSListen: String?
    @Option(name: .customLong("auth"), help: "A user for AUTH PLAIN/LOGIN, USER:PASSWORD (repeatable).")
    var users: [String] = []
    @Flag(name: .customLong("require-auth"), help: "Refuse MAIL until the client authenticates.")
    var requireAuth = false
    @Flag(name: .customLong("require-tls"), help: "Refuse MAIL and AUTH until TLS is on.")
    var requireTLS = false
    @Flag(name: .customLong("no-pipelining")) var noPipelining = false
    @Flag(name: .customLong("no-chunking")) var noChunking = false
    @Flag(name: .customLong("no-8bitmime")) var no8BitMIME = false
    @Flag(name: .customLong("no-smtputf8")) var noSMTPUTF8 = false
    @Option(name: .customLong("max-message-size"), help: "Largest message in bytes (552 beyond).")
    var maxMessageSize = 64 * 1024 * 1024
    @Option(name: .customLong("max-recipients"), help: "Most recipients per message (452 beyond).")
    var maxRecipients = 1000
    @Option(help: "Where messages go: discard, memory, maildir:DIR or mbox:FILE.")
    var store = "discard"
    @Flag(help: "Receive bounces: record each delivery status notification and complaint in the outbox (--outbox); a message is answered 250 once recorded, 451 if the outbox cannot be written.")
    var bounces = false
    @Option(name: .customLong("outbox"), help: "With --bounces, the outbox: sqlite:PATH or postgresql://… (default: $SLUICE_OUTBOX, else sqlite:sluice-outbox.db).")
    var outboxURL: String?
    @Flag(help: "Check each message's X-Sluice-Checksum (sluice bench --checksum adds it): a body that does not match is answered 554 5.6.0 and counted as corrupted; a message without one is counted as unchecked.")
    var verify = false
    @Flag(name: .customLong("wire-bytes"),
          help: "Keep Maildir and mbox messages exactly as they came (CRLF, no Return-Path, Delivered-To or Received).")
    var wireBytes = false
    @Option(name: .customLong("print"),
            help: "Print each message kept on stdout: 'summary' (bare --print: one line with time, client, TLS, AUTH user, MAIL FROM, RCPT TO, size, Subject, Message-ID) or 'full' (that line and the whole message as an MTA delivers it).")
    var print: PrintMode?

    enum PrintMode: String, ExpressibleByArgument, CaseIterable {
        case summary, full
    }
    @Option(name: .customLong("max-connections"), help: "Connections past this get 421.")
    var maxConnections = 10_000
    @Option(name: .customLong("idle-timeout"), help: "Seconds of client silence before 421 and close.")
    var idleTimeout: Double = 300
    @Option(name: .customLong("command-timeout"), help: "Seconds a client may take over one whole command line before 421 and close.")
    var commandTimeout: Double = 60
    @Option(name: .customLong("content-timeout"), help: "Seconds a client may take over one message's content (or BDAT chunk) before 421 and close.")
    var contentTimeout: Double = 600
    @Option(name: .customLong("max-auth-failures"), help: "Failed AUTH attempts on one connection before 421 and close.")
    var maxAuthFailures = 5
    @Option(name: .customLong("drain-grace"), help: "Seconds that transactions in their content may take to finish after SIGTERM or SIGINT.")
    var drainGrace: Double = 10
    @Option(name: .customLong("reject-rcpt"), help: "Reject recipients: RATE[:CODE], RATE a probability (0.1) or 1/N.")
    var rejectRecipients: String?
    @Option(name: .customLong("defer-rcpt"), help: "Answer recipients 450 at RATE.")
    var deferRecipients: String?
    @Option(name: .customLong("reject-data"), help: "Answer the end of data 554 at RATE.")
    var rejectData: String?
    @Option(name: .customLong("defer-data"), help: "Answer the end of data 451 at RATE.")
    var deferData: String?
    @Option(help: "Disconnect at RATE[:PHASE], PHASE one of greeting, ehlo, mail, rcpt, data, after-data (default mail).")
    var disconnect: String?
    @Option(name: .customLong("drop-after-data"), help: "Close without a reply after the end of data at RATE (alongside --disconnect).")
    var dropAfterData: String?
    @Option(help: "Delay before replies: MS, or MIN-MAX milliseconds.")
    var delay: String?
    @Option(help: ArgumentHelp(
        "Replies by recipient domain, from FILE: lines of DOMAIN RATE CODE [ENHANCED] TEXT (gmail.test 2% 421 4.7.0 Rate limited).",
        discussion: "RATE is 0.02, 2% or 1/50; DOMAIN * is any domain; the first matching rule that fires answers the RCPT, and a 421 also closes the connection, as providers' rate limits do."))
    var replies: String?
    @Option(help: "Greylist as Postgrey does: a new (client, sender, recipient) triplet gets 450 4.7.1 until it retries this many seconds later.")
    var greylist: Double?
    @Option(help: "Hold every RCPT's reply this many milliseconds (a tarpit).")
    var tarpit: Int?
    @Option(help: "Seed for the fault and delay generator.")
    var seed: UInt64 = 1
    @Option(name: .customLong("stats-interval"), help: "Print statistics every this many seconds (0: only at exit).")
    var statsInterval: Double = 0
    @Option(name: .customLong("stats-json"), help: "Write statistics as JSON to this file (at each interval and at exit).")
    var statsJSON: String?
    @Option(name: .customLong("exit-after"), help: "Exit after this many messages.")
    var exitAfter: Int?
    @Option(help: "Event loop threads (default: half the cores, at least one; the load generator usually shares the machine).")
    var loops: Int?

    func run() async throws {
        var configuration = try settingUp("sink") { try makeConfiguration() }
        var bounceOutbox: Outbox?
        if bounces {
            let outbox: Outbox
            do throws(OutboxError) {
                outbox = try await OutboxOptions.open(OutboxOptions.url(outboxURL))
                try await outbox.store.checkSchema()
            } catch {
                FileHandle.standardError.write(Data("sluice sink: \(error.message)\n".utf8))
                throw ExitCode(error.exitStatus)
            }
            bounceOutbox = outbox
            configuration.store = .handler(SinkHandler { message in
                // A message that is no report of this outbox's (an auto-reply, a forgery) is
                // taken and dropped, with its reason: refusing it would only bounce it again.
                // An outbox that cannot be written is a 451: the sender keeps it and retries.
                do throws(OutboxError) {
                    let result = try await outbox.ingestReport(message.content, deliveredTo: message.recipients.map { "\($0)" })
                    FileHandle.standardError.write(Data("bounce \(message.id): \(result)".controlCharactersEscaped.utf8 + [10]))
                } catch {
                    guard error.kind == .invalidInput else { throw error }
                    FileHandle.standardError.write(Data("bounce \(message.id): dropped: \(error.message)".controlCharactersEscaped.utf8 + [10]))
                }
            })
        }
        // A sink usually shares its machine with the client loading it: by default it takes
        // half the cores (on two cores one loop took smtp-source's mail 20-40% faster, with
        // less CPU per message, than two loops that competed with smtp-source).
        raiseDescriptorLimit()
        let group = EventLoopGroup(numberOfLoops: loops ?? max(1, EventLoopGroup.coreCount / 2))
        let sink = try await SMTPSink.start(configuration, group: group)
        // The first line is the contract for scripts: written at once, not buffered.
        var banner = "listening on \(sink.localAddress)\n"
        if let secure = sink.implicitTLSAddress { banner += "listening with implicit TLS on \(secure)\n" }
        FileHandle.standardOutput.write(Data(banner.utf8))

        let stop = StopSignal()
        let signals = stop.fireOnTerminationSignals()
        let statsTask = Task {
            guard statsInterval > 0 else { return }
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(Int(statsInterval * 1000)))
                report(sink.statistics)
            }
        }
        let exitTask = Task {
            guard let exitAfter else { return }
            while !Task.isCancelled, sink.statistics.messages < exitAfter {
                try? await Task.sleep(for: .milliseconds(20))
            }
            stop.fire()
        }
        await stop.wait()
        statsTask.cancel()
        exitTask.cancel()
        for source in signals { source.cancel() }
        // Stop taking new work; let messages already in their content get their 250, so that
        // their clients do not see "unknown" and send them again.
        let left = await sink.drain(grace: .milliseconds(Int64(drainGrace * 1000)))
        if left > 0 { FileHandle.standardError.write(Data("sluice sink: \(left) sessions still open after the grace period; closing them\n".utf8)) }
        await sink.shutdown()
        await group.shutdown()
        await bounceOutbox?.close()
        report(sink.statistics, final: true)
    }

    private func report(_ statistics: SinkStatistics, final: Bool = false) {
        FileHandle.standardError.write(Data("\(final ? "final: " : "")\(statistics.summary)\n".utf8))
        if let statsJSON {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            do {
                // Written beside it and renamed into place: a reader never sees it half-written.
                let temporary = statsJSON + ".tmp-\(getpid())"
                try encoder.encode(statistics).write(to: URL(fileURLWithPath: temporary))
                guard rename(temporary, statsJSON) == 0 else {
                    let reason = String(cString: strerror(errno))
                    unlink(temporary)
                    throw ValidationError("rename: \(reason)")
                }
            } catch {
                FileHandle.standardError.write(Data("cannot write \(statsJSON): \(error)\n".utf8))
            }
        }
    }

    func makeConfiguration() throws -> SinkConfiguration {
        var configuration = SinkConfiguration()
        (configuration.host, configuration.port) = try parseHostPort(listen, option: "--listen")
        configuration.server.hostname = hostname
        configuration.server.pipelining = !noPipelining
        configuration.server.chunking = !noChunking
        configuration.server.eightBitMIME = !no8BitMIME
        configuration.server.smtpUTF8 = !noSMTPUTF8
        configuration.server.requireAuthentication = requireAuth
        configuration.server.requireTLS = requireTLS
        guard maxMessageSize > 0, maxRecipients > 0, maxConnections > 0, idleTimeout > 0, commandTimeout > 0,
              contentTimeout > 0, maxAuthFailures > 0, drainGrace >= 0 else {
            throw ValidationError("--max-message-size, --max-recipients, --max-connections, --idle-timeout, --command-timeout, "
                                  + "--content-timeout and --max-auth-failures must be positive, --drain-grace not negative")
        }
        configuration.commandTimeout = .milliseconds(Int64(commandTimeout * 1000))
        configuration.contentTimeout = .milliseconds(Int64(contentTimeout * 1000))
        configuration.server.maximumAuthenticationFailures = maxAuthFailures
        if let loops, !(1...256).contains(loops) {
            throw ValidationError("--loops takes 1 to 256, got \(loops)")
        }
        configuration.server.maximumMessageSize = maxMessageSize
        configuration.server.maximumRecipients = maxRecipients
        configuration.maximumConnections = maxConnections
        configuration.idleTimeout = .milliseconds(Int(idleTimeout * 1000))
        for user in users {
            guard let colon = user.firstIndex(of: ":"), colon != user.startIndex else {
                throw ValidationError("--auth takes USER:PASSWORD, got '\(user)'")
            }
            configuration.server.users[String(user[..<colon])] = String(user[user.index(after: colon)...])
        }
        guard let store = SinkStore(store) else {
            throw ValidationError("--store takes discard, memory, maildir:DIR or mbox:FILE, got '\(store)'")
        }
        if bounces, store != .discard { throw ValidationError("--bounces records reports in the outbox; it takes no --store") }
        if outboxURL != nil, !bounces { throw ValidationError("--outbox goes with --bounces") }
        configuration.store = store
        configuration.storesWireBytes = wireBytes
        configuration.verifiesChecksums = verify
        if let print {
            let printer = MessagePrinter(mode: print, hostname: hostname)
            configuration.onMessage = { printer.print($0) }
        }
        switch (tlsCertificate, tlsKey) {
        case (let certificate?, let key?):
            configuration.tls = try TLSContext(.server(certificateChainFile: certificate, privateKeyFile: key))
        case (nil, nil):
            if implicitTLSListen != nil || requireTLS {
                throw ValidationError("--implicit-tls-listen and --require-tls need --tls-cert and --tls-key")
            }
        default:
            throw ValidationError("--tls-cert and --tls-key go together")
        }
        if let implicitTLSListen {
            configuration.implicitTLSListen = try parseHostPort(implicitTLSListen, option: "--implicit-tls-listen")
        }
        var faults = SinkFaults()
        faults.seed = seed
        if let rejectRecipients {
            let (rate, code) = try parseRate(rejectRecipients, option: "--reject-rcpt")
            faults.rejectRecipients = rate
            if let code {
                guard let value = Int(code), (500...599).contains(value) else {
                    throw ValidationError("--reject-rcpt's CODE is a 5xx code, got '\(code)'")
                }
                faults.rejectRecipientCode = value
            }
        }
        faults.deferRecipients = try deferRecipients.map { try parseRate($0, option: "--defer-rcpt", allowSuffix: false).0 }
        faults.rejectData = try rejectData.map { try parseRate($0, option: "--reject-data", allowSuffix: false).0 }
        faults.deferData = try deferData.map { try parseRate($0, option: "--defer-data", allowSuffix: false).0 }
        faults.dropAfterData = try dropAfterData.map { try parseRate($0, option: "--drop-after-data", allowSuffix: false).0 }
        if let disconnect {
            let (rate, phase) = try parseRate(disconnect, option: "--disconnect")
            faults.disconnect = rate
            if let phase {
                guard let value = DisconnectPhase(rawValue: phase) else {
                    throw ValidationError("--disconnect's PHASE is one of \(DisconnectPhase.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                faults.disconnectPhase = value
            }
        }
        if let replies {
            do {
                faults.replies = try ReplyRule.parse(try String(contentsOfFile: replies, encoding: .utf8))
            } catch let error as ReplyRuleError {
                throw ValidationError("--replies \(replies): \(error)")
            } catch {
                throw ValidationError("--replies \(replies): cannot read it: \(error.localizedDescription)")
            }
            if faults.replies.isEmpty { throw ValidationError("--replies \(replies): no rules in it") }
        }
        if let greylist {
            guard greylist > 0, greylist.isFinite else { throw ValidationError("--greylist takes a positive number of seconds") }
            faults.greylist = .milliseconds(Int64(greylist * 1000))
        }
        if let tarpit {
            guard tarpit > 0 else { throw ValidationError("--tarpit takes a positive number of milliseconds") }
            faults.tarpit = .milliseconds(tarpit)
        }
        configuration.faults = faults
        if let delay {
            let parts = delay.split(separator: "-")
            guard (1...2).contains(parts.count), let low = Int(parts[0]), low >= 0,
                  let high = parts.count == 2 ? Int(parts[1]) : low, high >= low else {
                throw ValidationError("--delay takes MS or MIN-MAX milliseconds, got '\(delay)'")
            }
            configuration.replyDelay = low == high ? .fixed(.milliseconds(low)) : .random(.milliseconds(low), .milliseconds(high))
        }
        return configuration
    }

    private func parseRate(_ text: String, option: String, allowSuffix: Bool = true) throws -> (FaultRate, String?) {
        let parts = text.split(separator: ":", maxSplits: 1)
        guard let first = parts.first, let rate = FaultRate(first), allowSuffix || parts.count == 1 else {
            throw ValidationError("\(option) takes a RATE: a probability such as 0.1, or 1/N for every Nth; got '\(text)'")
        }
        return (rate, parts.count == 2 ? String(parts[1]) : nil)
    }
}

/// Parses `HOST:PORT` or `[IPv6]:PORT`.
func parseHostPort(_ text: String, option: String, defaultPort: Int? = nil) throws -> (String, Int) {
    var host = text
    var portText: Substring?
    if text.hasPrefix("["), let close = text.firstIndex(of: "]") {
        host = String(text[text.index(after: text.startIndex)..<close])
        let rest = text[text.index(after: close)...]
        if rest.hasPrefix(":") { portText = rest.dropFirst() } else if !rest.isEmpty {
            throw ValidationError("\(option) takes HOST:PORT or [IPv6]:PORT, got '\(text)'")
        }
    } else if let colon = text.lastIndex(of: ":"), text.firstIndex(of: ":") == colon {
        host = String(text[..<colon])
        portText = text[text.index(after: colon)...]
    }
    guard !host.isEmpty else { throw ValidationError("\(option) needs a host, got '\(text)'") }
    if let portText {
        guard let port = Int(portText), (0...65535).contains(port) else {
            throw ValidationError("\(option) has a bad port in '\(text)'")
        }
        return (host, port)
    }
    guard let defaultPort else { throw ValidationError("\(option) takes HOST:PORT, got '\(text)'") }
    return (host, defaultPort)
}

/// A one-shot stop request that tasks and signal handlers share.
final class StopSignal: @unchecked Sendable {
    // Guarded by `lock`.
    private let lock = NSLock()
    private var fired = false
    private var waiters: [CheckedContinuation<Void, Never>] = []

    func fire() {
        lock.lock()
        let waiting = fired ? [] : waiters
        fired = true
        waiters = []
        lock.unlock()
        for waiter in waiting { waiter.resume() }
    }

    /// Fires on SIGINT or SIGTERM from now on (their default actions are turned off); the
    /// caller keeps the returned sources and cancels them when done.
    func fireOnTerminationSignals() -> [any DispatchSourceSignal] {
        [SIGINT, SIGTERM].map { number in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { self.fire() }
            source.resume()
            return source
        }
    }

    func wait() async {
        await withCheckedContinuation { continuation in
            lock.lock()
            if fired {
                lock.unlock()
                continuation.resume()
            } else {
                waiters.append(continuation)
                lock.unlock()
            }
        }
    }
}

/// Prints each message a sink keeps, one whole entry per write so entries from different
/// loops never interleave. Everything from the client is shown with its control characters
/// escaped: a hostile client cannot reach the terminal.
struct MessagePrinter: Sendable {
    let mode: SinkCommand.PrintMode
    let hostname: String

    func print(_ message: StoredMessage) {
        var entry = Self.summary(message) + "\n"
        if mode == .full {
            let text = message.traceHeaders(by: hostname) + String(decoding: message.content, as: UTF8.self)
            // Folded header lines start with a tab: it stays one; every other control is escaped.
            let lines = text.split(separator: "\r\n", omittingEmptySubsequences: false).map {
                $0.split(separator: "\t", omittingEmptySubsequences: false).map(\.controlCharactersEscaped).joined(separator: "\t")
            }
            entry += lines.joined(separator: "\n") + (text.hasSuffix("\r\n") ? "" : "\n") + "\n"
        }
        FileHandle.standardOutput.write(Data(entry.utf8))
    }

    /// `2026-12-05T01:40:00Z 127.0.0.1:50122 TLSv1.3 auth=ada from=<a@example.com>
    /// to=<b@example.org>,<c@example.org> size=1234 subject="Hello" id=<x@example.com>`.
    static func summary(_ message: StoredMessage) -> String {
        let headers = headerFields(message.content)
        var parts = [isoDate(message.receivedAt), message.clientAddress.map { "\($0)" } ?? "-"]
        parts.append(message.tls?.version ?? "plain")
        if let user = message.authenticatedUser { parts.append("auth=\(user)") }
        parts.append("from=<\(message.from?.address ?? "")>")
        parts.append("to=" + message.recipients.map { "<\($0.address)>" }.joined(separator: ","))
        parts.append("size=\(message.content.count)")
        let subject = headers["subject"].map { EncodedWords.decode($0) } ?? ""
        parts.append("subject=\"\(subject.replacingOccurrences(of: "\"", with: "\\\""))\"")
        parts.append("id=\(headers["message-id"] ?? "-")")
        return parts.joined(separator: " ").controlCharactersEscaped
    }

    /// The first value of each header field (names lower-cased, values unfolded), read
    /// leniently: the sink keeps what it is sent, well-formed or not.
    static func headerFields(_ content: [UInt8]) -> [String: String] {
        var fields: [String: String] = [:]
        var current: (name: String, value: String)?
        func finish() {
            if let current, fields[current.name] == nil { fields[current.name] = current.value.trimmingCharacters(in: .whitespaces) }
        }
        for line in content.split(separator: 10, omittingEmptySubsequences: false) {
            let text = String(decoding: line.last == 13 ? line.dropLast() : line[...], as: UTF8.self)
            if text.isEmpty { break }
            if text.first == " " || text.first == "\t" {
                current?.value += text
            } else if let colon = text.firstIndex(of: ":") {
                finish()
                current = (text[..<colon].lowercased(), String(text[text.index(after: colon)...]))
            }
        }
        finish()
        return fields
    }

    static func isoDate(_ sinceEpoch: Duration) -> String {
        let date = Date(timeIntervalSince1970: Double(sinceEpoch.components.seconds))
        return ISO8601DateFormatter().string(from: date)
    }
}
