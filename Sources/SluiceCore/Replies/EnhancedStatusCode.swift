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
        guard [2, 4, 5].contains(statusClass), (0...999).contains(subject), (0...999).contains(detail) else {
            return nil
        }
        self.statusClass = statusClass
        self.subject = subject
        self.detail = detail
    }

    /// Parses `2.1.5`; nil if the text is not exactly an enhanced code.
    public init?(_ text: some StringProtocol) {
        guard let (code, length) = EnhancedStatusCode.prefix(of: Array(text.utf8)), length == text.utf8.count else {
            return nil
        }
        self = code
    }

    public var description: String { "\(statusClass).\(subject).\(detail)" }

    /// Reads an enhanced code at the start of `bytes` when it is followed by a space or the
    /// end; returns it and the number of bytes it took (not counting the space).
    static func prefix(of bytes: some Collection<UInt8>) -> (EnhancedStatusCode, Int)? {
        var parts: [Int] = []
        var current = -1
        var digits = 0
        var consumed = 0
        for byte in bytes {
            if byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") {
                digits += 1
                guard digits <= 3 else { return nil }
                current = max(current, 0) * 10 + Int(byte - UInt8(ascii: "0"))
            } else if byte == UInt8(ascii: "."), digits > 0, parts.count < 2 {
                parts.append(current)
                current = -1
                digits = 0
            } else if byte == UInt8(ascii: " ") {
                break
            } else {
                return nil
            }
            consumed += 1
        }
        guard digits > 0, parts.count == 2 else { return nil }
        // RFC 3463: the class is a single digit.
        guard parts[0] < 10,
              let code = EnhancedStatusCode(statusClass: parts[0], subject: parts[1], detail: current)
        else { return nil }
        return (code, consumed)
    }
}
