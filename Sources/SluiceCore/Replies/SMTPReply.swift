/// One complete SMTP reply: a code and one or more text lines (RFC 5321 §4.2).
public struct SMTPReply: Hashable, Sendable, CustomStringConvertible {
    /// The reply code.
    public let code: SMTPStatusCode
    /// The enhanced status code at the start of the first line, when the server sent one
    /// whose class matches the reply code's first digit.
    public let enhancedCode: EnhancedStatusCode?
    /// The text of each line, after the code and its separator (`250-` / `250 `), with the
    /// enhanced code and its space removed from every line that starts with it.
    public let lines: [String]

    /// A reply as a server would send it.
    public init(code: SMTPStatusCode, enhancedCode: EnhancedStatusCode? = nil, lines: [String]) {
        self.code = code
        self.enhancedCode = enhancedCode
        self.lines = lines.isEmpty ? [""] : lines
    }

    /// A one-line reply.
    public init(_ code: SMTPStatusCode, _ enhancedCode: EnhancedStatusCode? = nil, _ text: String) {
        self.init(code: code, enhancedCode: enhancedCode, lines: [text])
    }

    /// The text lines joined by a space, for messages and logs.
    public var text: String { lines.joined(separator: " ") }

    /// The reply as it appears on the wire, each line ending in CRLF.
    public var encoded: [UInt8] {
        var bytes: [UInt8] = []
        for (index, line) in lines.enumerated() {
            bytes.append(contentsOf: String(code.rawValue).utf8)
            bytes.append(index == lines.count - 1 ? UInt8(ascii: " ") : UInt8(ascii: "-"))
            if let enhancedCode {
                bytes.append(contentsOf: enhancedCode.description.utf8)
                if !line.isEmpty { bytes.append(UInt8(ascii: " ")) }
            }
            bytes.append(contentsOf: line.utf8)
            bytes.append(contentsOf: [13, 10])
        }
        return bytes
    }

    public var description: String {
        if let enhancedCode { return "\(code) \(enhancedCode) \(text)" }
        return "\(code) \(text)"
    }
}
