import ArgumentParser
import Foundation
import Logging
import Sluice

/// `sluice send`: one message, the way `swaks` sends one, with a truthful report and an exit
/// status a script can act on.
struct SendCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "send",
        abstract: "Send one message and report every recipient's outcome.",
        discussion: """
            Everything is checked before a connection is made: a bad address, a header with CR or \
            LF, a missing file or an empty recipient list is refused with exit status 64.

            With --eml and no --from or --to/--cc/--bcc, the envelope comes from the message's \
            own headers, as with sendmail -t: Sender (else From), and every To, Cc and Bcc \
            mailbox. Bcc fields are always removed before the message is signed and sent.

            --dry-run builds, signs and prints the envelope and the message, and sends nothing.

            Results go to standard output; errors, diagnostics and the transcript to standard error.

            Exit status: 0 accepted for every recipient, 2 partially accepted, 3 rejected (a 5xx \
            to MAIL, RCPT or the data), 4 deferred (a 4xx, a refused or lost connection, a \
            timeout: try later), 5 outcome unknown (no reply after the end of the data: it may \
            have been delivered), 64 invalid input (nothing was sent), 69 failed (nothing was \
            sent and a retry will fail the same way: a 5xx to the greeting, EHLO or AUTH, a \
            certificate that does not verify, STARTTLS not offered, a host name that does not \
            exist).
            """
    )

    @Option(help: "The server, HOST[:PORT]; the port defaults to 587 (starttls), 465 (tls) or 25 (none). Not needed with --dry-run.")
    var server: String?
    @OptionGroup var client: ClientOptions

    @Option(help: "The sender: an address or 'Name <address>'. The envelope sender too. With --eml, defaults to its Sender or From.")
    var from: String?
    @Option(help: "A recipient (To); repeatable, or comma-separated.")
    var to: [String] = []
    @Option(help: "A copied recipient (Cc); repeatable.")
    var cc: [String] = []
    @Option(help: "A blind-copied recipient (envelope only, never a header); repeatable.")
    var bcc: [String] = []
    @Option(help: "The subject (any Unicode).")
    var subject: String?
    @Option(help: "The plain-text body.")
    var text: String?
    @Option(name: .customLong("text-file"), help: "Read the plain-text body from this UTF-8 file.")
    var textFile: String?
    @Option(help: "The HTML body.")
    var html: String?
    @Option(name: .customLong("html-file"), help: "Read the HTML body from this UTF-8 file.")
    var htmlFile: String?
    @Option(help: "Attach this file; repeatable.")
    var attach: [String] = []
    @Option(help: "Add a header, 'Name: value'; repeatable.")
    var header: [String] = []
    @Option(name: .customLong("list-unsubscribe"),
            help: "Add List-Unsubscribe: an https: URL, a mailto: address, or both, comma-separated.")
    var listUnsubscribe: String?
    @Flag(name: .customLong("one-click"), help: "Add List-Unsubscribe-Post for one-click unsubscription (RFC 8058; needs an https: URL).")
    var oneClick = false
    @Option(help: "Send this existing RFC 5322 message as it is (Bcc removed); the envelope comes from --from, --to, --cc and --bcc, or else from its headers.")
    var eml: String?
    @Flag(name: [.customLong("dry-run"), .customLong("print")],
          help: "Build, sign and print the envelope and the message on stdout; connect to nothing.")
    var dryRun = false
    @Option(help: "The most any step (connect, each command, the data) may take, in seconds.")
    var timeout: Double = 60
    @Flag(help: "Print the SMTP conversation on stderr (AUTH redacted).")
    var transcript = false
    @Flag(help: "Print the delivery report as one JSON object on stdout.")
    var json = false

    func validate() throws {
        if let server { _ = try ClientOptions.parseServer(server) } else if !dryRun {
            throw ValidationError("give the server with --server HOST[:PORT] (or --dry-run to only print the message)")
        }
        guard timeout > 0, timeout <= 86_400 else { throw ValidationError("--timeout must be between 0 and 86400 seconds") }
        guard text == nil || textFile == nil else { throw ValidationError("give --text or --text-file, not both") }
        guard html == nil || htmlFile == nil else { throw ValidationError("give --html or --html-file, not both") }
        if eml != nil, subject != nil || text != nil || textFile != nil || html != nil || htmlFile != nil || !attach.isEmpty
            || !header.isEmpty || listUnsubscribe != nil || oneClick {
            throw ValidationError("--eml sends a message as it is; it cannot be combined with --subject, --text, "
                                  + "--text-file, --html, --html-file, --attach, --header, --list-unsubscribe or --one-click")
        }
        if oneClick, listUnsubscribe == nil { throw ValidationError("--one-click needs --list-unsubscribe with an https: URL") }
        if eml == nil, from == nil { throw ValidationError("give the sender with --from (only --eml can take it from its headers)") }
    }

    func run() async throws {
        let (host, port) = try server.map(ClientOptions.parseServer) ?? ("localhost", nil)
        // Everything the message needs is read, checked and signed before any connection is made.
        var configuration = try settingUp("send", nothingSent: true) { try client.configuration(host: host, port: port) }
        let mail = try settingUp("send", nothingSent: true) { try prepare(signers: configuration.dkim) }
        if dryRun {
            FileHandle.standardOutput.write(Data(json ? DryRun(mail).json.utf8 + [10] : DryRun(mail).text))
            return
        }
        let limit = Duration.milliseconds(Int64(timeout * 1_000))
        configuration.pool.maximumConnections = 1
        configuration.pool.connectAttempts = 1
        configuration.pool.connectTimeout = limit
        configuration.retry = .none
        configuration.timeouts.capped(at: limit)
        var logger = Logger(label: "sluice.send") { _ in TranscriptHandler() }
        logger.logLevel = transcript ? .trace : .warning
        configuration.logger = logger

        let smtpClient = try settingUp("send", nothingSent: true) { try SMTPClient(configuration: configuration) }
        var report: DeliveryReport?
        var failure: SMTPError?
        do {
            report = try await smtpClient.send(mail.message, envelope: mail.envelope)
        } catch let error as SMTPError {
            failure = error
            report = error.report
        }
        await smtpClient.shutdown()
        print(json ? SendResult(report: report, error: failure).json : SendResult.text(report: report))
        if !json, let failure { FileHandle.standardError.write(Data("sluice send: \(failure)\n".utf8)) }
        let status = Self.exitStatus(report: report, error: failure)
        if status != 0 { throw ExitCode(status) }
    }

    /// The message and its envelope, from the flags.
    private func prepare(signers: [DKIMSigner]) throws -> OutgoingMail {
        let to = try to.flatMap { try Mailbox.list($0) }
        let cc = try cc.flatMap { try Mailbox.list($0) }
        let bcc = try bcc.flatMap { try Mailbox.list($0) }
        if let eml { return try prepareEML(eml, recipients: to + cc + bcc, signers: signers) }
        guard !(to + cc + bcc).isEmpty else { throw ValidationError("no recipient: give --to, --cc or --bcc") }
        var message = Message(from: try Mailbox(from ?? ""), to: to, cc: cc, bcc: bcc, subject: subject)
        message.textBody = try text ?? textFile.map { try readTextFile($0, flag: "--text-file") }
        message.htmlBody = try html ?? htmlFile.map { try readTextFile($0, flag: "--html-file") }
        if message.textBody == nil, message.htmlBody == nil, attach.isEmpty { message.textBody = "" }
        for path in attach {
            guard FileManager.default.isReadableFile(atPath: path) else {
                throw ValidationError("--attach: cannot read \(path)")
            }
            message.attachments.append(Attachment(contentsOfFile: path))
        }
        for line in header {
            let (name, value) = try parseHeaderFlag(line)
            message.headers.append(Header(name, value))
        }
        if let listUnsubscribe {
            var url: String?
            var mailto: String?
            for part in listUnsubscribe.split(separator: ",").map({ $0.trimmingCharacters(in: .whitespaces) }) {
                if part.lowercased().hasPrefix("mailto:") {
                    guard mailto == nil else { throw ValidationError("--list-unsubscribe takes one mailto: address") }
                    mailto = part
                } else {
                    guard url == nil else { throw ValidationError("--list-unsubscribe takes one URL") }
                    url = part
                }
            }
            do {
                message.listUnsubscribe = try ListUnsubscribe(url: url, mailto: mailto, oneClick: oneClick)
            } catch {
                throw ValidationError("--list-unsubscribe: \(error.detail ?? "\(error)")")
            }
        }
        return try OutgoingMail(message, signers: signers)
    }

    /// An existing message with its Bcc fields removed, to the flags' envelope or, where the
    /// flags give none, to the one its headers name (`sendmail -t`).
    private func prepareEML(_ path: String, recipients explicit: [Mailbox], signers: [DKIMSigner]) throws -> OutgoingMail {
        let raw = try RawMessage(contentsOfFile: path)
        let sender: Mailbox
        do {
            sender = try from.map { try Mailbox($0) } ?? raw.headerSender()
        } catch {
            throw ValidationError("--eml: the message's Sender or From is not one mailbox (\(error)); give --from")
        }
        let recipients: [Mailbox]
        do {
            recipients = explicit.isEmpty ? try raw.headerRecipients() : explicit
        } catch {
            throw ValidationError("--eml: the message's To, Cc or Bcc cannot be read (\(error)); give --to")
        }
        guard !recipients.isEmpty else {
            throw ValidationError("no recipient: give --to, --cc or --bcc, or send a message with To, Cc or Bcc")
        }
        let sent = raw.removingHeaders(named: "Bcc")
        let message = Message(from: sender, to: recipients)
        let smtpUTF8 = message.requiresSMTPUTF8 || sent.has8BitBytes && !sent.headerIsASCII
        return OutgoingMail(envelope: try Envelope(message, smtpUTF8: smtpUTF8),
                            message: EncodedMessage(try DKIMSigner.sign(sent, with: signers)))
    }

    /// The exit status: the report's outcome, or what the error means when there is no
    /// report (the two never disagree: both come from ``SMTPError/status``).
    static func exitStatus(report: DeliveryReport?, error: SMTPError?) -> Int32 {
        if let error, error.kind == .invalidInput { return 64 }
        if let report { return exitStatus(report.outcome) }
        switch error?.status {
        case .rejected?: return 3
        case .deferred?: return 4
        case .unknown?: return 5
        default: return 69
        }
    }

    /// 0 accepted, 2 partial, 3 rejected, 4 deferred, 5 unknown, 69 failed.
    static func exitStatus(_ outcome: DeliveryReport.Outcome) -> Int32 {
        switch outcome {
        case .accepted: 0
        case .partiallyAccepted: 2
        case .rejected: 3
        case .deferred: 4
        case .unknown: 5
        case .failed: 69
        }
    }
}

extension SMTPTimeouts {
    /// Every phase at most `limit`.
    mutating func capped(at limit: Duration) {
        greeting = min(greeting, limit)
        command = min(command, limit)
        tlsHandshake = min(tlsHandshake, limit)
        mail = min(mail, limit)
        recipient = min(recipient, limit)
        data = min(data, limit)
        dataBlock = min(dataBlock, limit)
        dataTermination = min(dataTermination, limit)
    }
}

extension RawMessage {
    /// Whether the header section is ASCII (8-bit bytes only in the body need 8BITMIME, not
    /// SMTPUTF8).
    var headerIsASCII: Bool { bytes[0..<headerLength].allSatisfy { $0 < 0x80 } }
}

/// The report `send` prints: the contract of `--json`.
struct SendResult: Encodable {
    struct Recipient: Encodable {
        let address: String
        let status: String
        let code: Int?
        let enhancedCode: String?
        let text: String?
        /// Why it was not accepted (``BounceClass``); absent when accepted.
        let bounceClass: String?
    }
    struct Failure: Encodable {
        let kind: String
        /// The command answered or awaited (`RCPT`, `AUTH`, …).
        let command: String?
        /// Whether a later try may succeed.
        let transient: Bool
        /// The reply code that decided it, if a reply did.
        let code: Int?
        /// The enhanced status code: the server's, or for a message refused here the one that
        /// says why (`5.3.4` too large for the server's SIZE).
        let enhancedCode: String?
        let message: String
    }
    let outcome: String
    let messageId: String?
    let recipients: [Recipient]
    let error: Failure?

    init(report: DeliveryReport?, error: SMTPError?) {
        outcome = report?.outcome.rawValue ?? "failed"
        messageId = report?.messageID
        recipients = (report?.recipients ?? []).map {
            Recipient(address: $0.address.address, status: "\($0.status)", code: $0.code,
                      enhancedCode: $0.enhancedCode.map { "\($0)" }, text: $0.text, bounceClass: $0.bounceClass?.rawValue)
        }
        self.error = error.map {
            Failure(kind: Self.kindName($0.kind), command: $0.command, transient: $0.isTransient, code: $0.code,
                    enhancedCode: $0.enhancedCode.map { "\($0)" }, message: $0.description)
        }
    }

    static func kindName(_ kind: SMTPError.Kind) -> String {
        switch kind {
        case .rejected: "rejected"
        case .deferred: "deferred"
        case .unknownOutcome: "unknownOutcome"
        case .connection: "connection"
        case .tls: "tls"
        case .authentication: "authentication"
        case .timeout: "timeout"
        case .protocolViolation: "protocolViolation"
        case .invalidInput: "invalidInput"
        case .cancelled: "cancelled"
        default: "shutdown"
        }
    }

    var json: String { compactJSON(self) }

    /// One line per recipient and a summary, for people (the error goes to stderr).
    static func text(report: DeliveryReport?) -> String {
        var lines: [String] = []
        for recipient in report?.recipients ?? [] {
            // Built part by part: Swift 6.3.1's optimizer crashes (CopyPropagation) on the
            // equivalent array-of-optionals-and-compactMap form in a release build.
            var parts: [String] = []
            if let code = recipient.code { parts.append(String(code)) }
            if let enhanced = recipient.enhancedCode { parts.append("\(enhanced)") }
            if let text = recipient.text { parts.append(text.controlCharactersEscaped) }
            let reply = parts.joined(separator: " ")
            var line = "\(recipient.status)\t\(recipient.address.address)\t\(reply.isEmpty ? "(no reply)" : reply)"
            if let bounceClass = recipient.bounceClass { line += "\t[\(bounceClass)]" }
            lines.append(line)
        }
        var summary = "outcome: \(report?.outcome.rawValue ?? "failed")"
        if let id = report?.messageID { summary += ", Message-ID: \(id)" }
        lines.append(summary)
        return lines.joined(separator: "\n")
    }
}

/// What `--dry-run` prints: the envelope as the commands that would carry it, then the
/// message exactly as it would go (signed, Bcc removed, CRLF).
struct DryRun: Encodable {
    struct EnvelopeText: Encodable {
        let from: String
        let recipients: [String]
    }
    let envelope: EnvelopeText
    let message: String
    let size: Int
    let messageId: String?
    private let bytes: [UInt8]

    private enum CodingKeys: String, CodingKey { case envelope, message, size, messageId }

    init(_ mail: OutgoingMail) {
        envelope = EnvelopeText(from: mail.envelope.from?.address ?? "",
                                recipients: mail.envelope.recipients.map(\.address.address))
        bytes = mail.message.bytes
        message = String(decoding: bytes, as: UTF8.self)
        size = bytes.count
        messageId = mail.message.messageID
    }

    /// `MAIL FROM:<…>`, a `RCPT TO:<…>` per recipient, a blank line, the message.
    var text: [UInt8] {
        var head = "MAIL FROM:<\(envelope.from)>\r\n"
        for recipient in envelope.recipients { head += "RCPT TO:<\(recipient)>\r\n" }
        return Array((head + "\r\n").utf8) + bytes
    }

    var json: String { compactJSON(self) }
}

/// `value` as one line of JSON, keys sorted, with DEL and C1 controls escaped too (see
/// `jsonControlsEscaped`): what `send --json` prints, for a report or a dry run.
func compactJSON(_ value: some Encodable) -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return String(decoding: (try? encoder.encode(value)) ?? Data("{}".utf8), as: UTF8.self).jsonControlsEscaped
}

/// Writes log messages to stderr as they are: the transcript's `C:`/`S:` lines at trace level,
/// warnings and errors otherwise.
struct TranscriptHandler: LogHandler {
    var logLevel: Logger.Level = .warning
    var metadata: Logger.Metadata = [:]

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let prefix = event.level >= .warning ? "sluice: \(event.level): " : ""
        FileHandle.standardError.write(Data("\(prefix)\(event.message)\n".utf8))
    }
}
