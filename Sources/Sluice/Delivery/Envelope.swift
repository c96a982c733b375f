/// Who a message is from and whom it goes to, as SMTP sees it (`MAIL FROM` and `RCPT TO`).
///
/// The envelope is separate from the message's headers: Bcc recipients are in the envelope
/// only, and a bounce goes to the envelope's sender. Addresses are ``EnvelopeAddress`` values,
/// checked to RFC 5321 path syntax when made, so nothing a caller passes can inject a command.
public struct Envelope: Hashable, Sendable {
    /// The reverse path; nil for the null sender `<>` (used by bounces).
    public var from: EnvelopeAddress?
    /// The recipients, with their DSN parameters.
    public var recipients: [SMTPTransaction.Recipient]
    /// `MAIL FROM` parameters (`RET`, `ENVID`, `REQUIRETLS`); SIZE, BODY and SMTPUTF8 are
    /// added by the client when the server offers them and the message needs them.
    public var parameters: MailParameters

    /// An envelope from checked addresses.
    public init(from: EnvelopeAddress?, to recipients: [EnvelopeAddress], parameters: MailParameters = MailParameters()) {
        self.from = from
        self.recipients = recipients.map { SMTPTransaction.Recipient($0) }
        self.parameters = parameters
    }

    /// An envelope with per-recipient DSN parameters.
    public init(from: EnvelopeAddress?, recipients: [SMTPTransaction.Recipient], parameters: MailParameters = MailParameters()) {
        self.from = from
        self.recipients = recipients
        self.parameters = parameters
    }

    /// An envelope from address strings, each checked.
    ///
    /// - Throws: ``AddressError`` naming the first address that is not a valid RFC 5321 path.
    public init(from: String, to recipients: [String]) throws(AddressError) {
        self.init(from: try EnvelopeAddress(from), to: try recipients.map { address throws(AddressError) in
            try EnvelopeAddress(address)
        })
    }
}
