/// An enhanced mail system status code, `class.subject.detail` (RFC 3463, RFC 2034), such as
/// `5.1.1` (bad destination mailbox address).
public struct EnhancedStatusCode: Hashable, Sendable, CustomStringConvertible {
    /// 2 (success), 4 (persistent transient failure) or 5 (permanent failure).
    public let statusClass: Int
    /// The subject, 0 through 999 (1: addressing, 2: mailbox, 3: mail system, 4: network,
    /// 5: protocol, 6: content, 7: security).
    public let subject: Int
    /// The detail, 0 through 999.
    public let detail: Int

    /// A code from its parts; nil if a part is out of range.
    public init?(statusClass: Int, subject: Int, detail: Int) {
        guard statusClass == 2 || statusClass == 4 || statusClass == 5, (0...999).contains(subject),
              (0...999).contains(detail)
        else { return nil }
        self.statusClass = statusClass
        self.subject = subject
        self.detail = detail
    }

    /// A code written in this package's own source, `EnhancedStatusCode(5, 5, 1)`: checked
    /// only in debug builds, and made without parsing (the sink answers every command with
    /// one).
    package init(_ statusClass: Int, _ subject: Int, _ detail: Int) {
        assert(EnhancedStatusCode(statusClass: statusClass, subject: subject, detail: detail) != nil, "not a code")
        self.statusClass = statusClass
        self.subject = subject
        self.detail = detail
    }

    /// Parses `2.1.5`; nil if the text is not exactly an enhanced code.
    ///
    /// For a `String` (every literal), this concrete overload is taken: it runs the parser
    /// specialized here, where the generic one called from another module would run
    /// unspecialized, with a metadata lookup per character.
    public init?(_ text: String) {
        self.init(parsing: text)
    }

    /// Parses `2.1.5`; nil if the text is not exactly an enhanced code.
    public init?(_ text: some StringProtocol) {
        self.init(parsing: text)
    }

    private init?(parsing text: some StringProtocol) {
        let utf8 = text.utf8
        guard let (code, length) = EnhancedStatusCode.prefix(of: utf8), length == utf8.count else { return nil }
        self = code
    }

    public var description: String { "\(statusClass).\(subject).\(detail)" }

    /// Reads an enhanced code at the start of `bytes` when it is followed by a space or the
    /// end; returns it and the number of bytes it took (not counting the space).
    static func prefix(of bytes: some Collection<UInt8>) -> (EnhancedStatusCode, Int)? {
        // Every reply a client reads goes through here: no arrays, just the three parts.
        var parts = (0, 0, 0)
        var part = 0
        var digits = 0
        var consumed = 0
        for byte in bytes {
            if byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") {
                digits += 1
                guard digits <= 3 else { return nil }
                let value = Int(byte - UInt8(ascii: "0"))
                switch part {
                case 0: parts.0 = parts.0 * 10 + value
                case 1: parts.1 = parts.1 * 10 + value
                default: parts.2 = parts.2 * 10 + value
                }
            } else if byte == UInt8(ascii: "."), digits > 0, part < 2 {
                part += 1
                digits = 0
            } else if byte == UInt8(ascii: " ") {
                break
            } else {
                return nil
            }
            consumed += 1
        }
        guard digits > 0, part == 2 else { return nil }
        // RFC 3463: the class is a single digit.
        guard parts.0 < 10,
              let code = EnhancedStatusCode(statusClass: parts.0, subject: parts.1, detail: parts.2)
        else { return nil }
        return (code, consumed)
    }
}
