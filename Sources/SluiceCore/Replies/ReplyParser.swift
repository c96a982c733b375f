/// Turns the bytes a server sends into complete replies, incrementally: bytes may be split
/// anywhere across reads, and one read may hold several replies (RFC 5321 §4.2, RFC 2920).
///
/// Lines end only with CRLF. Memory is bounded: a line longer than
/// ``Limits/maximumLineLength`` or a reply larger than ``Limits/maximumReplyLength`` is a
/// protocol error, not an allocation. A malformed line (a code that is not three digits from
/// 200 to 599, a separator other than space or hyphen, a bare CR or LF) or mixed codes in
/// one multiline reply are protocol errors too; after one, the parser stays failed.
///
/// ```swift
/// var parser = ReplyParser()
/// parser.append(bytesFromTheSocket)
/// while let reply = try parser.nextReply() { … }
/// ```
public struct ReplyParser: Sendable {
    /// Bounds on what one reply may hold.
    public struct Limits: Sendable, Hashable {
        /// The longest line, CRLF included. RFC 5321 §4.5.3.1.5 says 512; servers exceed it.
        public var maximumLineLength: Int = 4096
        /// The most bytes in one (multiline) reply.
        public var maximumReplyLength: Int = 256 * 1024
        /// The defaults.
        public init() {}
    }

    /// The bounds in force.
    public let limits: Limits
    private var buffer: [UInt8] = []
    private var readIndex = 0
    private var pendingCode: Int?
    /// The text of each line of the reply being read, as indices into `buffer`: slices would
    /// retain the buffer's storage, several times a reply. The buffer keeps them: it is
    /// compacted only up to the first of them.
    private var pendingLines: [Range<Int>] = []
    private var pendingBytes = 0
    private var failure: SMTPProtocolError?

    /// A parser with the given bounds.
    public init(limits: Limits = Limits()) {
        self.limits = limits
    }

    /// Bytes read but not yet part of a complete reply.
    public var bufferedByteCount: Int { buffer.count - readIndex + pendingBytes }

    /// Whether any bytes of an incomplete reply are waiting.
    public var hasPartialReply: Bool { buffer.count > readIndex || pendingCode != nil }

    /// Adds bytes read from the server.
    public mutating func append(_ bytes: some Collection<UInt8>) {
        let keep = pendingLines.first?.lowerBound ?? readIndex
        if keep > 0, keep == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            readIndex = 0
            pendingLines.removeAll(keepingCapacity: true)  // none: a pending line ends before readIndex
        } else if keep > 4096, keep * 2 > buffer.count {
            buffer.removeFirst(keep)
            readIndex -= keep
            for index in pendingLines.indices { pendingLines[index] = pendingLines[index].lowerBound - keep ..< pendingLines[index].upperBound - keep }
        }
        buffer.append(contentsOf: bytes)
    }

    /// Adds bytes read from the server.
    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        append(bytes.bindMemory(to: UInt8.self))
    }

    /// Returns the next complete reply, nil if more bytes are needed, or throws if the bytes
    /// break the protocol.
    public mutating func nextReply() throws(SMTPProtocolError) -> SMTPReply? {
        if let failure { throw failure }
        do {
            return try parseNext()
        } catch {
            failure = error
            throw error
        }
    }

    /// Takes whatever bytes are buffered and not yet part of a reply (the client uses this to
    /// detect bytes after the 220 to STARTTLS), leaving the parser empty.
    public mutating func takeUnparsedBytes() -> [UInt8] {
        var taken: [UInt8] = []
        for line in pendingLines { taken.append(contentsOf: buffer[line]) }
        taken.append(contentsOf: buffer[readIndex...])
        buffer.removeAll(keepingCapacity: true)
        readIndex = 0
        pendingLines = []
        pendingCode = nil
        pendingBytes = 0
        return taken
    }

    private mutating func parseNext() throws(SMTPProtocolError) -> SMTPReply? {
        while true {
            guard let lineEnd = try findLineEnd() else {
                let partial = buffer.count - readIndex
                if partial >= limits.maximumLineLength {
                    throw SMTPProtocolError(.lineTooLong, "a reply line of more than \(limits.maximumLineLength) bytes")
                }
                if pendingBytes + partial > limits.maximumReplyLength {
                    throw SMTPProtocolError(.replyTooLong, "a reply of more than \(limits.maximumReplyLength) bytes")
                }
                return nil
            }
            let line = readIndex..<lineEnd  // without CRLF
            readIndex = lineEnd + 2
            if line.count + 2 > limits.maximumLineLength {
                throw SMTPProtocolError(.lineTooLong, "a reply line of \(line.count + 2) bytes")
            }
            pendingBytes += line.count + 2
            if pendingBytes > limits.maximumReplyLength {
                throw SMTPProtocolError(.replyTooLong, "a reply of more than \(limits.maximumReplyLength) bytes")
            }
            let (code, isLast, text) = try buffer.withUnsafeBufferPointer { bytes throws(SMTPProtocolError) in
                try Self.split(line, of: bytes)
            }
            if let pendingCode, pendingCode != code {
                throw SMTPProtocolError(.mixedReplyCodes, "\(pendingCode) then \(code) in one reply")
            }
            pendingCode = code
            pendingLines.append(text)
            if isLast {
                let reply = buffer.withUnsafeBufferPointer { Self.makeReply(code: code, lines: pendingLines, of: $0) }
                pendingCode = nil
                pendingLines.removeAllKeepingCapacity()
                pendingBytes = 0
                return reply
            }
        }
    }

    /// The index of the CR of the next CRLF, nil if no complete line is buffered yet; throws
    /// on a bare CR or LF, since only CRLF ends a line.
    private func findLineEnd() throws(SMTPProtocolError) -> Int? {
        var index = readIndex
        while index < buffer.count {
            let byte = buffer[index]
            if byte == 13 {
                guard index + 1 < buffer.count else { return nil }  // CR last: wait for its LF
                guard buffer[index + 1] == 10 else {
                    throw SMTPProtocolError(.malformedReply, "bare CR in a reply: \(Self.excerpt(buffer[readIndex...index]))")
                }
                return index
            }
            if byte == 10 {
                throw SMTPProtocolError(.malformedReply, "bare LF in a reply: \(Self.excerpt(buffer[readIndex...index]))")
            }
            index += 1
        }
        return nil
    }

    /// Splits `250-text`, the bytes `range` of `bytes`, into its code, whether it is the last
    /// line, and where the text is.
    private static func split(_ range: Range<Int>, of bytes: UnsafeBufferPointer<UInt8>)
        throws(SMTPProtocolError) -> (Int, Bool, Range<Int>)
    {
        let line = bytes[range]
        let start = line.startIndex
        guard line.count >= 3 else {
            throw SMTPProtocolError(.malformedReply, excerpt(line))
        }
        var code = 0
        for index in start..<start + 3 {
            let byte = line[index]
            guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else {
                throw SMTPProtocolError(.malformedReply, excerpt(line))
            }
            code = code * 10 + Int(byte - UInt8(ascii: "0"))
        }
        guard (200...599).contains(code) else {
            throw SMTPProtocolError(.malformedReply, "reply code \(code) is outside 200–599: \(excerpt(line))")
        }
        if line.count == 3 { return (code, true, line.endIndex..<line.endIndex) }  // a bare code is valid
        let separator = line[start + 3]
        let text = (start + 4)..<line.endIndex
        if bytes[text].contains(0) {
            throw SMTPProtocolError(.malformedReply, "NUL in a reply line: \(excerpt(line))")
        }
        switch separator {
        case UInt8(ascii: " "): return (code, true, text)
        case UInt8(ascii: "-"): return (code, false, text)
        default: throw SMTPProtocolError(.malformedReply, excerpt(line))
        }
    }

    private static func excerpt(_ line: some Collection<UInt8>) -> String {
        SMTPProtocolError.excerpt(line)
    }

    private static func makeReply(code: Int, lines ranges: [Range<Int>], of bytes: UnsafeBufferPointer<UInt8>) -> SMTPReply {
        let lines = ranges.lazy.map { bytes[$0] }
        // Safe: split() checked 200...599.
        let status = SMTPStatusCode(rawValue: code)!
        var enhanced: EnhancedStatusCode?
        var firstLength = 0  // of the first line's enhanced code, read once
        if let first = lines.first, let (candidate, length) = EnhancedStatusCode.prefix(of: first),
           candidate.statusClass == code / 100 {
            enhanced = candidate
            firstLength = length
        }
        /// The line without its first `codeLength` bytes (the enhanced code) and the space after them.
        func text(_ line: Slice<UnsafeBufferPointer<UInt8>>, codeLength: Int) -> String {
            var text = line.dropFirst(codeLength)
            if codeLength > 0, text.first == UInt8(ascii: " ") { text = text.dropFirst() }
            return String(decoding: text, as: UTF8.self)
        }
        /// A later line loses the enhanced code only where it repeats the first line's.
        func laterLineText(_ line: Slice<UnsafeBufferPointer<UInt8>>) -> String {
            guard let enhanced, let (code, length) = EnhancedStatusCode.prefix(of: line), code == enhanced else {
                return text(line, codeLength: 0)
            }
            return text(line, codeLength: length)
        }
        let firstLine = lines.first.map { text($0, codeLength: firstLength) } ?? ""
        return SMTPReply(code: status, enhancedCode: enhanced, firstLine: firstLine,
                         moreLines: lines.count > 1 ? lines.dropFirst().map(laterLineText) : [])
    }
}
