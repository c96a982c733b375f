import SluiceCore
import SluiceTransport

/// Why a message was not delivered to any recipient, or why the client could not work.
///
/// ``SMTPClient/send(_:envelope:logger:)-(EncodedMessage,_,_)`` throws it only when no recipient was accepted; the
/// ``report`` then holds every recipient's status. A partial acceptance is not an error: it
/// is visible in the ``DeliveryReport``, as .NET's `SmtpFailedRecipientsException` makes it
/// visible.
public struct SMTPError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What kind of failure it is, in a form that can be matched.
    public struct Kind: Hashable, Sendable, CustomStringConvertible {
        /// The kind in words, as messages say it.
        public let description: String
        private init(_ description: String) { self.description = description }

        /// The server refused the message or every recipient permanently (5xx).
        public static let rejected = Kind("rejected")
        /// The server refused for now (4xx), after every retry the policy allowed.
        public static let deferred = Kind("deferred")
        /// The end of the data was written and no reply came: it may have been delivered.
        public static let unknownOutcome = Kind("unknown outcome")
        /// The connection could not be made, was refused, closed, or the server said 421.
        public static let connection = Kind("connection")
        /// TLS failed or was required and not available (certificates, STARTTLS refused,
        /// injection after STARTTLS).
        public static let tls = Kind("tls")
        /// AUTH failed, or credentials would have gone over plaintext.
        public static let authentication = Kind("authentication")
        /// A reply or the connection did not come in time.
        public static let timeout = Kind("timeout")
        /// The server broke the protocol.
        public static let protocolViolation = Kind("protocol")
        /// The message or envelope cannot be sent as given; nothing went on the wire for it.
        public static let invalidInput = Kind("invalid input")
        /// The task was cancelled before the message's data was sent.
        public static let cancelled = Kind("cancelled")
        /// The client was shut down before the message could be sent.
        public static let shutdown = Kind("shutdown")
    }

    /// What failed.
    public var kind: Kind { storage.fields.kind }
    /// The server's reply that decided it, if any.
    public var reply: SMTPReply? { storage.fields.reply }
    /// The command that was answered or awaited (`MAIL`, `RCPT`, `DATA`, `AUTH`, …).
    public var command: String? { storage.fields.command }
    /// What happened, in words.
    public var detail: String { storage.fields.detail }
    /// Whether trying again later may succeed (a 4xx, a lost connection, a timeout).
    public var isTransient: Bool { storage.fields.isTransient }
    /// The session error from the protocol layer, when there was one. Not public: everything
    /// it says is in ``kind``, ``command``, ``reply``, ``detail`` and ``enhancedCode``.
    package var sessionError: SMTPSessionError? { storage.fields.sessionError }
    /// The transport error (connect, TLS, socket), when there was one.
    public var transportError: TransportError? { storage.fields.transportError }

    /// The fields, in one immutable object: an error rides in every report (and a report in
    /// many values on the way to its caller), and held inline it made each of them over 300
    /// bytes to copy. It also lets an error hold the report that holds it.
    private let storage: Storage

    private struct Fields: Sendable {
        let kind: Kind
        let reply: SMTPReply?
        let command: String?
        let detail: String
        let isTransient: Bool
        let sessionError: SMTPSessionError?
        let transportError: TransportError?
    }

    private final class Storage: Sendable {
        let fields: Fields
        let report: DeliveryReport?

        init(_ fields: Fields, report: DeliveryReport?) {
            self.fields = fields
            self.report = report
        }
    }

    /// The reply code, if a reply decided it.
    public var code: Int? { reply?.code.rawValue }
    /// The enhanced status code: the server's, if its reply had one; for a message refused
    /// here before anything was sent, the code that says why (`5.3.4` larger than the
    /// server's SIZE, `5.6.7` an address that needs SMTPUTF8, `5.6.3` 8-bit content without
    /// 8BITMIME).
    public var enhancedCode: EnhancedStatusCode? { reply?.enhancedCode ?? sessionError?.enhancedCode }
    /// The server's text, if a reply decided it.
    public var text: String? { reply?.text }
    /// The message's report: every recipient's status (nil for errors that are not about
    /// one message).
    public var report: DeliveryReport? { storage.report }

    init(_ kind: Kind, _ detail: String, reply: SMTPReply? = nil, command: String? = nil, isTransient: Bool = false,
         sessionError: SMTPSessionError? = nil, transportError: TransportError? = nil) {
        storage = Storage(Fields(kind: kind, reply: reply, command: command, detail: detail, isTransient: isTransient,
                                 sessionError: sessionError, transportError: transportError), report: nil)
    }

    private init(_ error: SMTPError, report: DeliveryReport) {
        storage = Storage(error.storage.fields, report: report)
    }

    /// A send cancelled before its transaction started.
    static let cancelledBeforeStart = SMTPError(.cancelled, "the send was cancelled before its transaction started")

    /// A send with no recipient in its envelope.
    static let noRecipients = SMTPError(.invalidInput, "the envelope has no recipients; nothing was sent")

    /// This error with the report of the message it ended.
    func with(report: DeliveryReport) -> SMTPError { SMTPError(self, report: report) }

    /// The error for a session that failed.
    init(_ error: SMTPSessionError) {
        let kind: Kind =
            switch error.kind {
            case .tlsRequired, .tlsInjection, .tlsFailed: .tls
            case .authenticationFailed, .authenticationNotAllowed: .authentication
            case .timeout: .timeout
            case .protocolViolation: .protocolViolation
            case .refusedLocally: .rejected  // the server's own limits (SIZE, 8BITMIME, SMTPUTF8) rule it out
            case .cancelled: .cancelled
            default: .connection  // greeting refused, EHLO rejected, 421, connection lost
            }
        // The session error's own words; its kind, command and reply are said once, by this
        // error's description.
        self.init(kind, error.detail, reply: error.reply, command: error.command,
                  isTransient: error.isTransient, sessionError: error)
    }

    /// The error for a connection that could not be made.
    init(_ error: TransportError) {
        let kind: Kind =
            switch error.kind {
            case .tls: .tls
            case .connectTimeout: .timeout
            default: .connection
            }
        self.init(kind, error.description, isTransient: Self.isTransient(error), transportError: error)
    }

    /// Whether a connection that failed this way may be had later: a certificate that does
    /// not verify, a name that does not exist or a bad address will fail the same way next
    /// time; a refusal, a reset, a timeout, a resolver that did not answer or a handshake
    /// that broke may not.
    static func isTransient(_ error: TransportError) -> Bool {
        switch error.kind {
        case .tls: !(error.tls?.isCertificateFailure ?? false)
        case .hostNotFound, .invalidArgument: false
        default: true
        }
    }

    /// What this failure means for each recipient it leaves undecided. This is where a
    /// failure becomes an outcome, and the report, the recipients' statuses, the CLI's
    /// `--json` and its exit status all follow it:
    ///
    /// | Failure | Status |
    /// |---|---|
    /// | no reply after the end of the data was written | ``DeliveryStatus/unknown`` |
    /// | 4xx (421, 450, 451, 452, 454 …), timeout, connection refused, reset or lost, resolver not answering, TLS handshake broken, protocol violation | ``DeliveryStatus/deferred`` |
    /// | cancelled, or the client shut down before it was sent | ``DeliveryStatus/deferred`` |
    /// | 5xx to `MAIL`, `RCPT`, `DATA` or `BDAT`; a message the server's SIZE, 8BITMIME or SMTPUTF8 rules out | ``DeliveryStatus/rejected`` |
    /// | 5xx to the greeting, EHLO or AUTH; a certificate that does not verify; STARTTLS required and not offered; credentials that may not be sent; a host name that does not exist | ``DeliveryStatus/failed`` |
    ///
    /// ``isTransient`` is true exactly for the deferred rows but cancellation and shutdown
    /// (those are not the server's doing, and nothing was tried).
    public var status: DeliveryStatus {
        if kind == .unknownOutcome { return .unknown }
        if isTransient || kind == .cancelled || kind == .shutdown { return .deferred }
        return kind == .rejected ? .rejected : .failed
    }

    public var description: String {
        // Each thing once: `SMTP authentication (AUTH): the server refused authentication
        // [535 5.7.8 Error: authentication failed]`.
        var text = "SMTP \(kind)"
        if let command { text += " (\(command))" }
        text += ": \(detail.controlCharactersEscaped)"
        if let reply { text += " [\(reply)]" }
        return text
    }

    public static func == (lhs: SMTPError, rhs: SMTPError) -> Bool {
        lhs.kind == rhs.kind && lhs.reply == rhs.reply && lhs.command == rhs.command && lhs.detail == rhs.detail
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(kind)
        hasher.combine(reply)
        hasher.combine(detail)
    }
}
