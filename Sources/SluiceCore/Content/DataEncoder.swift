/// Prepares message content for the wire, in one pass over its bytes.
///
/// For `DATA` (RFC 5321 §4.5.2): every bare CR and bare LF becomes CRLF *before* dot-stuffing
/// (so content can never hold a premature `<CRLF>.<CRLF>`: the SMTP smuggling defence), a
/// dot that starts a line is doubled, the content is made to end with CRLF (empty content stays empty), and the
/// terminator `.<CRLF>` is appended. For `BDAT` (RFC 3030) only the line endings are
/// normalised. NUL bytes are refused, and so is a line longer than the limit (1000 octets
/// with its CRLF, RFC 5321 §4.5.3.1.6) unless the limit is lifted for BINARYMIME.
public enum DataEncoder {
    /// Content that cannot be sent as it is.
    public struct ContentError: Error, Hashable, Sendable, CustomStringConvertible {
        /// What is wrong.
        public enum Kind: Hashable, Sendable {
            /// A NUL byte; never sent.
            case nulByte
            /// A line longer than the limit; it must be encoded (quoted-printable, base64).
            case lineTooLong
        }
        /// What is wrong.
        public let kind: Kind
        /// The 1-based line where it was found.
        public let line: Int

        public var description: String {
            switch kind {
            case .nulByte: "the content has a NUL byte on line \(line); NUL is never sent"
            case .lineTooLong: "line \(line) is longer than SMTP allows; encode the content (quoted-printable or base64)"
            }
        }
    }

    /// The default line limit: 1000 octets including CRLF.
    public static let maximumLineLength = 1000

    /// The content for `DATA`: normalised, dot-stuffed, ending in CRLF, with the terminator.
    public static func dotStuffed(
        _ content: some Collection<UInt8>, maximumLineLength: Int? = DataEncoder.maximumLineLength
    ) throws(ContentError) -> [UInt8] {
        var output: [UInt8] = []
        output.reserveCapacity(content.count + content.count / 32 + 8)
        try transform(content, stuffing: true, maximumLineLength: maximumLineLength, into: &output)
        output.append(contentsOf: [UInt8(ascii: "."), 13, 10])
        return output
    }

    /// The content for `BDAT`: line endings normalised to CRLF, ending in CRLF (unless empty).
    public static func normalized(
        _ content: some Collection<UInt8>, maximumLineLength: Int? = DataEncoder.maximumLineLength
    ) throws(ContentError) -> [UInt8] {
        try normalizedWithTraits(content, maximumLineLength: maximumLineLength).bytes
    }

    /// What the normalising pass saw on its way, so that a caller need not read the content
    /// again for it.
    package struct Traits: Sendable {
        /// A line starts with a dot: `DATA` must stuff it.
        package var hasLineStartingWithDot = false
        /// A byte is 0x80 or above: the server must offer 8BITMIME (or BINARYMIME).
        package var has8BitBytes = false

        package init(hasLineStartingWithDot: Bool = false, has8BitBytes: Bool = false) {
            self.hasLineStartingWithDot = hasLineStartingWithDot
            self.has8BitBytes = has8BitBytes
        }
    }

    /// ``normalized(_:maximumLineLength:)``, with what the pass saw of the content.
    package static func normalizedWithTraits(
        _ content: some Collection<UInt8>, maximumLineLength: Int? = DataEncoder.maximumLineLength
    ) throws(ContentError) -> (bytes: [UInt8], traits: Traits) {
        var output: [UInt8] = []
        output.reserveCapacity(content.count + content.count / 32 + 2)
        let traits = try transform(content, stuffing: false, maximumLineLength: maximumLineLength, into: &output)
        return (output, traits)
    }

    /// Runs the transform over contiguous bytes: callers from other modules would otherwise
    /// run an unspecialised generic loop (an allocation per byte, measured).
    @discardableResult
    private static func transform(
        _ content: some Collection<UInt8>, stuffing: Bool, maximumLineLength: Int?, into output: inout [UInt8]
    ) throws(ContentError) -> Traits {
        let result: Result<Traits, ContentError>? = content.withContiguousStorageIfAvailable { buffer in
            Result { () throws(ContentError) in
                try transformContiguous(buffer, stuffing: stuffing, maximumLineLength: maximumLineLength, into: &output)
            }
        }
        if let result { return try result.get() }
        let copy = Array(content)
        return try copy.withUnsafeBufferPointer { buffer throws(ContentError) in
            try transformContiguous(buffer, stuffing: stuffing, maximumLineLength: maximumLineLength, into: &output)
        }
    }

    private static func transformContiguous(
        _ content: UnsafeBufferPointer<UInt8>, stuffing: Bool, maximumLineLength: Int?, into output: inout [UInt8]
    ) throws(ContentError) -> Traits {
        let limit = (maximumLineLength ?? Int.max) - 2  // octets before CRLF
        let count = content.count
        var index = 0
        var line = 1
        var lineLength = 0
        var atLineStart = true
        var traits = Traits()
        /// Every byte of the content OR-ed together: its top bit says whether one is 8-bit.
        var bits: UInt8 = 0
        while index < count {
            let byte = content[index]
            if byte == 13 || byte == 10 {
                // CRLF stays; a bare CR or bare LF becomes CRLF.
                output.append(13)
                output.append(10)
                index += byte == 13 && index + 1 < count && content[index + 1] == 10 ? 2 : 1
                atLineStart = true
                lineLength = 0
                line += 1
                continue
            }
            if byte == 0 { throw ContentError(kind: .nulByte, line: line) }
            if atLineStart, byte == UInt8(ascii: ".") {
                traits.hasLineStartingWithDot = true
                if stuffing { output.append(byte) }  // the transparency dot does not count toward the limit
            }
            atLineStart = false
            bits |= byte
            // Copy the run up to the next CR, LF or NUL in one go.
            var end = index + 1
            while end < count {
                let next = content[end]
                if next == 13 || next == 10 || next == 0 { break }
                bits |= next
                end += 1
            }
            lineLength += end - index
            if lineLength > limit { throw ContentError(kind: .lineTooLong, line: line) }
            output.append(contentsOf: UnsafeBufferPointer(rebasing: content[index..<end]))
            index = end
        }
        if !atLineStart {
            output.append(13)
            output.append(10)
        }
        traits.has8BitBytes = bits >= 0x80
        return traits
    }
}
