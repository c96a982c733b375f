import SluiceCore

/// What happened to one message: its outcome and every recipient's, with the server's words.
///
/// Outcomes are never guessed (DESIGN.md): a recipient is accepted only on a 2xx to its
/// `RCPT` and a 2xx to the end of the data; a connection lost after the data's terminator and
/// before its reply leaves the outcome ``Outcome/unknown``.
public struct DeliveryReport: Sendable, Hashable, CustomStringConvertible {
    /// The message's outcome, from its recipients' statuses.
    public enum Outcome: String, Sendable, Hashable, Codable, CaseIterable {
        /// Every recipient was accepted.
        case accepted
        /// Some recipients were accepted and others were not (see ``DeliveryReport/recipients``).
        case partiallyAccepted
        /// No recipient was accepted and every refusal was permanent (5xx).
        case rejected
        /// No recipient was accepted and some refusal was transient (4xx, a lost connection
        /// before the end of the data, a timeout): trying later may succeed.
        case deferred
        /// Nothing was sent, and trying again unchanged will fail the same way, for a reason
        /// that is not the recipients' own: a 5xx to the greeting, EHLO or AUTH, a
        /// certificate that does not verify, STARTTLS required and not offered, a host name
        /// that does not exist. ``DeliveryReport/error`` says which (see
        /// ``SMTPError/status``).
        case failed
        /// The end of the data was written but no reply came: the message may or may not
        /// have been delivered, and a retry could duplicate it.
        case unknown
    }

    /// One recipient's outcome.
    public struct Recipient: Sendable, Hashable {
        /// The recipient.
        public let address: EnvelopeAddress
        /// Its status.
        public let status: DeliveryStatus
        /// The reply that decided it: the `RCPT` reply if that refused it, else the reply to
        /// the end of the data; nil when no reply came.
        public let reply: SMTPReply?
        /// Why it was not accepted, in the terms a bulk sender acts on (from ``reply``, or from
        /// the failure when no reply came; see ``BounceClassifier``); nil when accepted.
        public let bounceClass: BounceClass?

        init(address: EnvelopeAddress, status: DeliveryStatus, reply: SMTPReply?, bounceClass: BounceClass? = nil) {
            self.address = address
            self.status = status
            self.reply = reply
            self.bounceClass = bounceClass
        }

        /// The reply code, if a reply came.
        public var code: Int? { reply?.code.rawValue }
        /// The enhanced status code, if the server sent one.
        public var enhancedCode: EnhancedStatusCode? { reply?.enhancedCode }
        /// The server's text.
        public var text: String? { reply?.text }
    }

    /// The message's outcome.
    public let outcome: Outcome
    /// Each recipient's outcome, in the envelope's order.
    public let recipients: [Recipient]
    /// The message's `Message-ID`, if it has one.
    public let messageID: String?
    /// The envelope it was sent with.
    public let envelope: Envelope
    /// Transactions tried (1 when the first try decided it).
    public let attempts: Int
    /// From the call to send until the outcome was known, retries included.
    public let elapsed: Duration
    /// Why it was not accepted when no reply says so, or the last error seen.
    public let error: SMTPError?

    init(recipients: [Recipient], messageID: String?, envelope: Envelope, attempts: Int, elapsed: Duration,
         error: SMTPError?) {
        self.recipients = recipients
        self.outcome = Self.outcome(of: recipients)
        self.messageID = messageID
        self.envelope = envelope
        self.attempts = attempts
        self.elapsed = elapsed
        self.error = error
    }

    /// The recipients accepted.
    public var acceptedRecipients: [EnvelopeAddress] { recipients.filter { $0.status == .accepted }.map(\.address) }

    /// The recipients not accepted.
    public var failedRecipients: [Recipient] { recipients.filter { $0.status != .accepted } }

    public var description: String {
        var text = "\(outcome)"
        if let messageID { text += " \(messageID)" }
        for recipient in recipients {
            text += "; \(recipient.address): \(recipient.status)"
            if let reply = recipient.reply { text += " (\(reply))" }
            if let bounceClass = recipient.bounceClass { text += " [\(bounceClass)]" }
        }
        if let error { text += "; \(error)" }
        return text
    }

    static func outcome(of recipients: [Recipient]) -> Outcome {
        // No recipient (a bulk mail with an empty envelope): nothing can be sent as it is.
        if recipients.isEmpty { return .failed }
        let accepted = recipients.count { $0.status == .accepted }
        if accepted == recipients.count, accepted > 0 { return .accepted }
        if accepted > 0 { return .partiallyAccepted }
        if recipients.contains(where: { $0.status == .unknown }) { return .unknown }
        if recipients.contains(where: { $0.status == .deferred }) { return .deferred }
        if recipients.contains(where: { $0.status == .failed }) { return .failed }
        return .rejected
    }
}
