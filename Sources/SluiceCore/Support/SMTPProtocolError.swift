/// The peer broke the protocol: a malformed or oversized reply or command, or a reply where
/// none belongs. A connection that sees one is closed.
public struct SMTPProtocolError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What kind of violation, in a form that can be matched.
    public struct Kind: Hashable, Sendable, CustomStringConvertible {
        /// The kind in words, as messages say it.
        public let description: String
        private init(_ description: String) { self.description = description }

        /// A reply line that is not `code[ -]text CRLF` with a code from 200 to 599.
        public static let malformedReply = Kind("malformed reply")
        /// The lines of one multiline reply carry different codes.
        public static let mixedReplyCodes = Kind("mixed codes in a multiline reply")
        /// A line longer than the configured limit.
        public static let lineTooLong = Kind("line too long")
        /// A multiline reply larger than the configured limit.
        public static let replyTooLong = Kind("reply too long")
        /// A reply arrived when no command was waiting for one, or a reply the command
        /// cannot have (e.g. 354 to RCPT).
        public static let unexpectedReply = Kind("unexpected reply")
        /// Bytes arrived where none may (e.g. after the 220 to STARTTLS, before TLS).
        public static let unexpectedBytes = Kind("unexpected bytes")
        /// A 334 challenge that is not valid base64 or not what the mechanism expects.
        public static let malformedChallenge = Kind("malformed challenge")
    }

    /// The violation.
    public let kind: Kind
    /// What was seen, for logs (truncated, control characters escaped).
    public let detail: String

    /// Creates an error.
    public init(_ kind: Kind, _ detail: String) {
        self.kind = kind
        self.detail = detail
    }

    public var description: String { "SMTP protocol error: \(kind): \(detail)" }

    /// Up to 80 bytes of `bytes` with controls and non-ASCII escaped, for error details.
    static func excerpt(_ bytes: some Collection<UInt8>) -> String {
        var text = ""
        for byte in bytes.prefix(80) {
            switch byte {
            case 13: text += "\\r"
            case 10: text += "\\n"
            case 32...126: text.unicodeScalars.append(Unicode.Scalar(byte))
            default: text += "\\x" + String(byte, radix: 16, uppercase: true)
            }
        }
        if bytes.count > 80 { text += "…" }
        return text
    }
}
