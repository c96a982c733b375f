#if canImport(Glibc)
internal import Glibc
#endif
public import SluiceCore
/// An existing RFC 5322 message (an `.eml` file, a message built elsewhere), checked and
/// ready to send as it is.
///
/// Line endings are normalised to CRLF (a bare CR or LF becomes CRLF, so the content can
/// never hold a premature end of data) and the header section is checked: every header line
/// is `Name: value` with a printable-ASCII name, continuation lines start with a space or tab,
/// a `From` header is present, no line is longer than 998 octets and no byte is NUL. Nothing
/// is silently repaired beyond the line endings: a malformed message is a ``MessageError``.
public struct RawMessage: Sendable, Hashable {
    /// The message, CRLF-normalised, ending with CRLF.
    public let bytes: [UInt8]
    /// The length of the header section, up to and including the empty line that ends it
    /// (the whole message when it has no body).
    public let headerLength: Int
    /// Whether any byte is outside ASCII (the message then needs 8BITMIME, or SMTPUTF8 for
    /// UTF-8 in its headers).
    public let has8BitBytes: Bool

    /// Checks and normalises `bytes`.
    public init(_ bytes: some Collection<UInt8>) throws(MessageError) {
        try self.init(checking: bytes)
    }

    /// Checks and normalises `bytes`. The common case, an array, gets code specialised for
    /// it here: a caller in another module would otherwise run the generic code, reaching
    /// each byte through the collection's witness table (a thousand allocations for 1 KB).
    ///
    /// Bytes already in the form checking gives (the usual case for a message read back from
    /// a store or written by a program) are kept as they are, with no copy.
    public init(_ bytes: [UInt8]) throws(MessageError) {
        guard let traits = bytes.withUnsafeBufferPointer({ Self.canonicalTraits($0) }) else {
            try self.init(checking: bytes)
            return
        }
        try self.init(checked: bytes, headerLength: Self.checkHeaderSection(bytes), has8BitBytes: traits.has8BitBytes)
    }

    private init(checked bytes: [UInt8], headerLength: Int, has8BitBytes: Bool) {
        self.bytes = bytes
        self.headerLength = headerLength
        self.has8BitBytes = has8BitBytes
    }

    /// What ``DataEncoder`` notes of `buffer` (an 8-bit octet, a line starting with a dot),
    /// if it is already what the checking initialiser, and DataEncoder's normalising pass,
    /// would make of it: not empty, every line ends in CRLF, no other CR or LF, no line longer
    /// than `maximumLineLength` with its CRLF (998 octets before it), no NUL. nil otherwise:
    /// the byte-by-byte path then normalises it, or says what is wrong and on which line.
    /// Whole lines at a time, with memchr; `EncodedMessage` reads stored content with it too.
    package static func canonicalTraits(
        _ buffer: UnsafeBufferPointer<UInt8>, maximumLineLength: Int = DataEncoder.maximumLineLength
    ) -> DataEncoder.Traits? {
        guard let base = buffer.baseAddress, buffer.count > 0, buffer[buffer.count - 1] == 10,
              memchr(base, 0, buffer.count) == nil else { return nil }
        var traits = DataEncoder.Traits()
        var start = 0
        while start < buffer.count {
            // The last byte is an LF, so there is one.
            let lineFeed = UnsafePointer<UInt8>(memchr(base + start, 10, buffer.count - start)!
                .assumingMemoryBound(to: UInt8.self)) - base
            let end = lineFeed - 1  // where the line's CR must be
            guard end >= start, buffer[end] == 13, end - start <= maximumLineLength - 2,
                  memchr(base + start, 13, end - start) == nil else { return nil }
            if buffer[start] == UInt8(ascii: ".") { traits.hasLineStartingWithDot = true }
            start = lineFeed + 1
        }
        var high: UInt64 = 0
        var index = 0
        while index + 8 <= buffer.count {
            high |= UnsafeRawPointer(base + index).loadUnaligned(as: UInt64.self)
            index += 8
        }
        while index < buffer.count {
            high |= UInt64(buffer[index])
            index += 1
        }
        traits.has8BitBytes = high & 0x8080_8080_8080_8080 != 0
        return traits
    }

    private init(checking bytes: some Collection<UInt8>) throws(MessageError) {
        var normalized: [UInt8] = []
        normalized.reserveCapacity(bytes.count + 2)
        var eightBit = false
        var index = bytes.startIndex
        var line = 1
        var lineStart = 0
        while index != bytes.endIndex {
            let byte = bytes[index]
            bytes.formIndex(after: &index)
            switch byte {
            case 13, 10:
                if byte == 13, index != bytes.endIndex, bytes[index] == 10 { bytes.formIndex(after: &index) }
                try Self.checkLength(normalized.count - lineStart, line: line)
                normalized.append(13)
                normalized.append(10)
                line += 1
                lineStart = normalized.count
            case 0:
                throw MessageError(.nulByte, line: line)
            default:
                if byte >= 0x80 { eightBit = true }
                normalized.append(byte)
            }
        }
        if normalized.count > lineStart {
            try Self.checkLength(normalized.count - lineStart, line: line)
            normalized.append(13)
            normalized.append(10)
        }
        headerLength = try Self.checkHeaderSection(normalized)
        self.bytes = normalized
        has8BitBytes = eightBit
    }

    /// A message this module encoded, which keeps every rule the checking initialiser
    /// enforces (the tests hold the encoder to them).
    package init(encoded bytes: [UInt8], headerLength: Int) {
        self.bytes = bytes
        self.headerLength = headerLength
        has8BitBytes = bytes.contains { $0 >= 0x80 }
    }

    /// Reads and checks the message in the file at `path`.
    public init(contentsOfFile path: String) throws(MessageError) {
        try self.init(try readFile(path))
    }

    /// The unfolded values of every header called `name` (case-insensitive), in order.
    public func headerValues(_ name: String) -> [String] {
        let wanted = Array(name.lowercased().utf8)
        var values: [String] = []
        // Only the fields asked for are made into strings.
        Self.forEachField(bytes[0..<headerLength]) { fieldName, value in
            guard fieldName.count == wanted.count, zip(fieldName, wanted).allSatisfy({ Self.lowercase($0) == $1 }) else { return }
            let unfolded = bytes[value].filter { $0 != 13 && $0 != 10 }
            values.append(String(decoding: unfolded, as: UTF8.self).trimmingWhitespace)
        }
        return values
    }

    /// The `Message-ID` header's value, if there is one.
    public var messageID: String? { headerValues("Message-ID").first }

    /// The envelope sender the headers name, as `sendmail -t` takes it: the `Sender`
    /// mailbox if there is one, else the one `From` mailbox.
    ///
    /// - Throws: ``AddressError`` when that header is not one mailbox (several `From`
    ///   mailboxes need a `Sender`).
    public func headerSender() throws(AddressError) -> Mailbox {
        let field = headerValues("Sender").first ?? headerValues("From").first ?? ""
        return try Mailbox(field)
    }

    /// The recipients the headers name, as `sendmail -t` takes them: every mailbox of every
    /// `To`, `Cc` and `Bcc` field, group members included, each address once, in order.
    ///
    /// - Throws: ``AddressError`` naming the first entry that is not a mailbox.
    public func headerRecipients() throws(AddressError) -> [Mailbox] {
        var seen: Set<String> = []
        var recipients: [Mailbox] = []
        for name in ["To", "Cc", "Bcc"] {
            for value in headerValues(name) {
                for mailbox in try Mailbox.addressList(value) where seen.insert(mailbox.address.address.lowercased()).inserted {
                    recipients.append(mailbox)
                }
            }
        }
        return recipients
    }

    /// The message without any field called `name` (case-insensitive), continuation lines
    /// included; everything else byte for byte. `Bcc` is removed this way before sending,
    /// so blind-copied recipients stay blind.
    public func removingHeaders(named name: String) -> RawMessage {
        let wanted = Array(name.lowercased().utf8)
        var kept: [UInt8] = []
        kept.reserveCapacity(bytes.count)
        var index = 0
        var dropping = false
        while index < headerLength {
            var end = index
            while bytes[end] != 13 { end += 1 }
            let line = bytes[index..<(end + 2)]
            let first = bytes[index]
            if end == index {  // the blank line: the body follows
                kept.append(contentsOf: bytes[index...])
                index = bytes.count
                break
            }
            if first != 32, first != 9 {
                let colon = line.firstIndex(of: UInt8(ascii: ":")) ?? index
                dropping = colon - index == wanted.count
                    && zip(bytes[index..<colon], wanted).allSatisfy { Self.lowercase($0) == $1 }
            }
            if !dropping { kept.append(contentsOf: line) }
            index = end + 2
        }
        if index < bytes.count { kept.append(contentsOf: bytes[index...]) }
        // Removing a field keeps the section valid (From cannot be removed by a Bcc).
        return (try? RawMessage(kept)) ?? self
    }

    // MARK: Checks

    /// RFC 5322 §2.1.1: at most 998 octets before the CRLF.
    private static func checkLength(_ length: Int, line: Int) throws(MessageError) {
        if length > 998 { throw MessageError(.lineTooLong, line: line) }
    }

    /// Checks every header line and returns the header section's length.
    private static func checkHeaderSection(_ bytes: [UInt8]) throws(MessageError) -> Int {
        var start = 0
        var line = 1
        var sawFrom = false
        while start < bytes.count {
            var end = start
            while bytes[end] != 13 { end += 1 }  // every line ends with CRLF here
            if end == start {
                guard line > 1 else { throw MessageError(.noHeaders, line: 1) }
                guard sawFrom else { throw MessageError(.missingFrom, line: line) }
                return end + 2
            }
            let first = bytes[start]
            if first == 32 || first == 9 {
                guard line > 1 else { throw MessageError(.malformedHeader, line: line) }
            } else {
                guard let colon = bytes[start..<end].firstIndex(of: UInt8(ascii: ":")), colon > start,
                      bytes[start..<colon].allSatisfy({ $0 > 32 && $0 < 127 })
                else { throw MessageError(.malformedHeader, line: line) }
                if colon - start == 4, zip(bytes[start..<colon], "from".utf8).allSatisfy({ lowercase($0) == $1 }) {
                    sawFrom = true
                }
            }
            start = end + 2
            line += 1
        }
        guard line > 1 else { throw MessageError(.noHeaders, line: 1) }
        guard sawFrom else { throw MessageError(.missingFrom, line: line) }
        return bytes.count
    }

    private static func lowercase(_ byte: UInt8) -> UInt8 {
        byte >= 65 && byte <= 90 ? byte | 0x20 : byte
    }

    /// Calls `body` with each header field of a checked header section, in order: its name,
    /// and where its value lies (from after the colon to the end of its last continuation
    /// line, CRLFs included).
    private static func forEachField(_ section: ArraySlice<UInt8>,
                                     _ body: (_ name: ArraySlice<UInt8>, _ value: Range<Int>) -> Void) {
        var field: (name: ArraySlice<UInt8>, value: Range<Int>)?
        var index = section.startIndex
        while index < section.endIndex {
            var end = index
            while section[end] != 13 { end += 1 }
            if end == index { break }
            let first = section[index]
            if first == 32 || first == 9, let current = field {
                field = (current.name, current.value.lowerBound..<end)
            } else if let colon = section[index..<end].firstIndex(of: UInt8(ascii: ":")) {
                if let field { body(field.name, field.value) }
                field = (section[index..<colon], (colon + 1)..<end)
            }
            index = end + 2
        }
        if let field { body(field.name, field.value) }
    }
}

/// Why a message cannot be sent as it is.
public struct MessageError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What is wrong.
    public struct Kind: Hashable, Sendable, CustomStringConvertible {
        /// The kind in words, as messages say it.
        public let description: String
        private init(_ description: String) { self.description = description }

        /// A NUL byte, which is never sent.
        public static let nulByte = Kind("NUL byte")
        /// A line longer than 998 octets; the content must be encoded.
        public static let lineTooLong = Kind("line too long")
        /// The message does not start with a header section.
        public static let noHeaders = Kind("no header section")
        /// A header line that is not `Name: value` or a continuation.
        public static let malformedHeader = Kind("malformed header")
        /// No `From` header (RFC 5322 §3.6 requires one).
        public static let missingFrom = Kind("missing From header")
        /// The file could not be read.
        public static let unreadable = Kind("unreadable file")
        /// A header name that is not printable ASCII without `:`, or a value (or file name)
        /// with CR, LF or NUL, which could inject a header.
        public static let invalidHeader = Kind("invalid header")
        /// A custom header that ``Message`` writes from its own properties (From, Bcc, …).
        public static let reservedHeader = Kind("reserved header")
        /// A Message-ID, In-Reply-To, References or Content-ID that is not `id@domain`.
        public static let invalidMessageID = Kind("invalid message ID")
        /// A content type that is not `type/subtype`.
        public static let invalidContentType = Kind("invalid content type")
        /// A mailbox with a UTF-8 local part, in a message not encoded for SMTPUTF8.
        public static let needsSMTPUTF8 = Kind("needs SMTPUTF8")
    }

    /// What is wrong.
    public let kind: Kind
    /// The 1-based line where it was found (0 when no line applies).
    public let line: Int
    /// More detail, when there is some.
    public let detail: String?

    /// An error.
    public init(_ kind: Kind, line: Int, detail: String? = nil) {
        self.kind = kind
        self.line = line
        self.detail = detail
    }

    public var description: String {
        var text: String
        switch kind {
        case .nulByte: text = "the message has a NUL byte on line \(line)"
        case .lineTooLong: text = "line \(line) is longer than 998 octets; encode the content (quoted-printable or base64)"
        case .noHeaders: text = "the message does not start with a header section"
        case .malformedHeader: text = "line \(line) of the header section is not 'Name: value' or a folded continuation"
        case .missingFrom: text = "the message has no From header"
        default: text = "\(kind)"
        }
        if let detail { text += " (\(detail))" }
        return text
    }
}

extension String {
    /// Without leading and trailing spaces and tabs.
    var trimmingWhitespace: String {
        var scalars = Substring(self)
        while let first = scalars.first, first == " " || first == "\t" { scalars.removeFirst() }
        while let last = scalars.last, last == " " || last == "\t" { scalars.removeLast() }
        return String(scalars)
    }
}
