/// One complete SMTP reply: a code and one or more text lines (RFC 5321 §4.2).
public struct SMTPReply: Hashable, Sendable, CustomStringConvertible {
    /// The reply code.
    public let code: SMTPStatusCode
    /// The enhanced status code at the start of the first line, when the server sent one
    /// whose class matches the reply code's first digit.
    public let enhancedCode: EnhancedStatusCode?
    /// The text of the first line, after the code and its separator (`250-` / `250 `), with
    /// the enhanced code and its space removed when it starts with it.
    public let firstLine: String
    /// The text of the lines after the first, nil when there are none (most replies): then no
    /// array is allocated, and a copy of the reply (the client makes several a message)
    /// retains its first line's text alone, not an empty array as well.
    private let laterLines: [String]?

    /// The text of the lines after the first.
    private var moreLines: [String] { laterLines ?? [] }

    /// The text of each line, after the code and its separator (`250-` / `250 `), with the
    /// enhanced code and its space removed from every line that starts with it.
    public var lines: [String] { [firstLine] + moreLines }

    /// A reply as a server would send it.
    public init(code: SMTPStatusCode, enhancedCode: EnhancedStatusCode? = nil, lines: [String]) {
        self.init(code: code, enhancedCode: enhancedCode, firstLine: lines.first ?? "", moreLines: Array(lines.dropFirst()))
    }

    init(code: SMTPStatusCode, enhancedCode: EnhancedStatusCode?, firstLine: String, moreLines: [String]) {
        self.code = code
        self.enhancedCode = enhancedCode
        self.firstLine = firstLine
        // Nil, never empty, so that equal replies compare and hash equal.
        laterLines = moreLines.isEmpty ? nil : moreLines
    }

    /// A one-line reply.
    public init(_ code: SMTPStatusCode, _ enhancedCode: EnhancedStatusCode? = nil, _ text: String) {
        self.init(code: code, enhancedCode: enhancedCode, firstLine: text, moreLines: [])
    }

    /// The text lines joined by a space, for messages and logs.
    public var text: String { laterLines == nil ? firstLine : lines.joined(separator: " ") }

    /// The reply as it appears on the wire, each line ending in CRLF.
    public var encoded: [UInt8] {
        var bytes: [UInt8] = []
        encode(into: &bytes)
        return bytes
    }

    /// Appends the reply as it appears on the wire.
    public func encode(into bytes: inout [UInt8]) {
        Self.encodeLine(code: code, enhancedCode: enhancedCode, text: firstLine, isLast: laterLines == nil, into: &bytes)
        for (index, line) in moreLines.enumerated() {
            Self.encodeLine(code: code, enhancedCode: enhancedCode, text: line, isLast: index == moreLines.count - 1, into: &bytes)
        }
    }

    /// Appends one reply line — `250-text` or `250 2.1.0 text`, then CRLF — without building
    /// a reply value or any intermediate string (the server's hot path).
    package static func encodeLine(
        code: SMTPStatusCode, enhancedCode: EnhancedStatusCode?, text: String, isLast: Bool, into bytes: inout [UInt8]
    ) {
        bytes.appendDecimal(code.rawValue)
        bytes.append(isLast ? UInt8(ascii: " ") : UInt8(ascii: "-"))
        if let enhancedCode {
            bytes.appendDecimal(enhancedCode.statusClass)
            bytes.append(UInt8(ascii: "."))
            bytes.appendDecimal(enhancedCode.subject)
            bytes.append(UInt8(ascii: "."))
            bytes.appendDecimal(enhancedCode.detail)
            if !text.isEmpty { bytes.append(UInt8(ascii: " ")) }
        }
        bytes.append(contentsOf: text.utf8)
        bytes.append(13)
        bytes.append(10)
    }

    /// The reply for people: code, enhanced code and text, with the server's control
    /// characters made visible (see ``Swift/StringProtocol/controlCharactersEscaped``).
    public var description: String {
        if let enhancedCode { return "\(code) \(enhancedCode) \(text.controlCharactersEscaped)" }
        return "\(code) \(text.controlCharactersEscaped)"
    }
}
