/// What the state machine needs to know of a message's content, prepared for the wire once.
///
/// The client layer keeps the bytes themselves (shared, not copied per connection) and writes
/// them when the machine says ``ClientOutput/data(transactionID:)`` or
/// ``ClientOutput/chunk(transactionID:)``. Keeping the machine free of the content's type
/// keeps it non-generic, so it runs specialised when called from other modules (a generic
/// machine spent most of its time in runtime metadata lookups, measured).
public struct SMTPContentInfo: Hashable, Sendable {
    /// Octets of the dot-stuffed form, terminator included (for DATA).
    public var dataLength: Int
    /// Octets of the CRLF-normalised form (for BDAT).
    public var chunkLength: Int
    /// Whether the content has 8-bit bytes and so needs 8BITMIME (RFC 6152).
    public var requires8BitMIME: Bool

    /// Describes prepared content.
    public init(dataLength: Int, chunkLength: Int, requires8BitMIME: Bool) {
        self.dataLength = dataLength
        self.chunkLength = chunkLength
        self.requires8BitMIME = requires8BitMIME
    }
}

/// One message to send: an envelope and its content.
public struct SMTPTransaction: Hashable, Sendable {
    /// A recipient and its DSN parameters.
    public struct Recipient: Hashable, Sendable {
        /// The recipient's address.
        public var address: EnvelopeAddress
        /// `NOTIFY`/`ORCPT`.
        public var parameters: RecipientParameters

        /// A recipient.
        public init(_ address: EnvelopeAddress, parameters: RecipientParameters = RecipientParameters()) {
            self.address = address
            self.parameters = parameters
        }
    }

    /// Chosen by the caller; outcomes carry it back.
    public var id: Int
    /// The reverse path; nil for the null sender `<>` (bounces).
    public var from: EnvelopeAddress?
    /// The recipients, at least one.
    public var recipients: [Recipient]
    /// `MAIL FROM` parameters. SIZE, BODY and SMTPUTF8 are added by the machine when the
    /// server offers them and the message needs them.
    public var parameters: MailParameters
    /// The content's lengths and needs; the bytes stay with the caller.
    public var content: SMTPContentInfo

    /// A transaction.
    public init(id: Int, from: EnvelopeAddress?, recipients: [Recipient], parameters: MailParameters = MailParameters(),
                content: SMTPContentInfo) {
        precondition(!recipients.isEmpty, "a transaction needs at least one recipient")
        self.id = id
        self.from = from
        self.recipients = recipients
        self.parameters = parameters
        self.content = content
    }

    /// Whether any address needs SMTPUTF8.
    var requiresSMTPUTF8: Bool {
        (from?.requiresSMTPUTF8 ?? false) || recipients.contains { $0.address.requiresSMTPUTF8 }
    }
}

/// What happened to a message, or to one of its recipients (DESIGN.md: outcomes are never
/// guessed).
public enum DeliveryStatus: String, Hashable, Sendable {
    /// A 2xx reply to the end of the data (and, for a recipient, to its RCPT).
    case accepted
    /// A 5xx reply: do not retry unchanged.
    case rejected
    /// A 4xx reply, or the connection failed before the data was complete: safe to retry.
    case deferred
    /// Not sent, and trying again unchanged will fail the same way: the session could not be
    /// had for a reason that is not this recipient's (a 5xx to the greeting, EHLO or AUTH,
    /// a certificate that does not verify, STARTTLS required and not offered, a host name
    /// that does not exist). Nothing was refused for the recipient itself; something must
    /// change (the credentials, the trust, the name, the server) before it can be sent.
    case failed
    /// The end of the data was written but no reply came: it may or may not have been
    /// delivered; a retry could duplicate it.
    case unknown
}

/// One recipient's outcome.
public struct RecipientOutcome: Hashable, Sendable {
    /// The recipient.
    public let address: EnvelopeAddress
    /// Its status.
    public let status: DeliveryStatus
    /// The reply that decided it: its RCPT reply if that failed, else the reply to the data
    /// (nil when no reply came).
    public let reply: SMTPReply?
}

/// A finished transaction.
public struct TransactionOutcome: Hashable, Sendable {
    /// The transaction's id.
    public let id: Int
    /// The message's status: accepted only on a 2xx to the end of the data.
    public let status: DeliveryStatus
    /// Each recipient's outcome, in the order given.
    public let recipients: [RecipientOutcome]
    /// The reply that decided the message (the final reply, or the failing MAIL, DATA or
    /// BDAT reply); nil when none came.
    public let reply: SMTPReply?
    /// The command ``reply`` answers: `MAIL`, `RCPT` (every recipient was refused), `DATA`
    /// or `BDAT`; nil when no reply decided it.
    public let command: String?
    /// Why the message was not accepted when no reply says so (connection lost, timeout,
    /// refused locally before sending).
    public let error: SMTPSessionError?

    /// The recipients accepted.
    public var acceptedRecipients: [EnvelopeAddress] { recipients.filter { $0.status == .accepted }.map(\.address) }
}
