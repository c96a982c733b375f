public import Logging
import SluiceCore
import SluiceMIME

extension Envelope {
    /// The envelope of a built message: from its `Sender` (or `From`, when it has none), to
    /// every To, Cc and Bcc recipient, each address once. Without SMTPUTF8, domains are in
    /// A-labels.
    ///
    /// - Throws: ``AddressError`` of kind ``AddressError/Kind/needsSMTPUTF8`` for a UTF-8 local
    ///   part when `smtpUTF8` is false.
    public init(_ message: Message, smtpUTF8: Bool = false) throws(AddressError) {
        let sender = message.sender ?? message.from
        self.init(from: try sender.envelopeAddress(smtpUTF8: smtpUTF8),
                  to: try message.recipients.map { mailbox throws(AddressError) in try mailbox.envelopeAddress(smtpUTF8: smtpUTF8) })
    }
}

extension OutgoingMail {
    /// A built message with its envelope (``Envelope/init(_:smtpUTF8:)``), encoded once and
    /// signed by `signers` in order; it is encoded for SMTPUTF8 only when one of its
    /// addresses needs it.
    ///
    /// - Throws: ``MessageError``, ``AddressError`` or ``DKIMError`` when the message cannot be
    ///   encoded or signed; nothing is sent.
    public init(_ message: Message, options: EncodingOptions? = nil, signers: [DKIMSigner] = []) throws {
        let options = options ?? EncodingOptions(smtpUTF8: message.requiresSMTPUTF8)
        self.init(envelope: try Envelope(message, smtpUTF8: options.smtpUTF8),
                  message: EncodedMessage(try DKIMSigner.sign(try message.encoded(options), with: signers)))
    }
}

extension SMTPClient {
    /// Encodes a built message once, signs it with the configured DKIM signers, and sends it
    /// to its To, Cc and Bcc recipients (Bcc in the envelope only), from its Sender or From.
    ///
    /// - Parameters:
    ///   - message: The message to encode and send.
    ///   - options: How to encode it; by default 7-bit clean, and SMTPUTF8 only when
    ///     an address needs it (the server must then offer SMTPUTF8, or the send fails before
    ///     any 8-bit byte is on the wire).
    ///   - logger: Where this message's events are logged, with the caller's metadata (see
    ///     ``send(_:envelope:logger:)-(EncodedMessage,_,_)``).
    /// - Returns: The report (see ``send(_:envelope:logger:)-(EncodedMessage,_,_)``).
    /// - Throws: ``SMTPError`` of kind ``SMTPError/Kind/invalidInput`` when the message
    ///   cannot be encoded (nothing was sent), or as the other `send` does.
    public func send(_ message: Message, options: EncodingOptions? = nil, logger: Logger? = nil) async throws
        -> DeliveryReport
    {
        let mail: OutgoingMail
        do {
            mail = try OutgoingMail(message, options: options, signers: configuration.dkim)
        } catch {
            throw SMTPError(.invalidInput, "the message cannot be sent: \(error); nothing was sent")
        }
        return try await send(mail.message, envelope: mail.envelope, logger: logger)
    }
}
