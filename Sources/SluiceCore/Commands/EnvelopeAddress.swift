/// A mailbox as it appears in `MAIL FROM` and `RCPT TO`: an RFC 5321 path, validated before
/// it can reach the wire (RFC 5321 §4.1.2, §4.5.3.1; RFC 6531 for UTF-8).
///
/// The local part is a dot-string or a quoted string; the domain a host name or an address
/// literal (`[192.0.2.1]`, `[IPv6:2001:db8::1]`). The local part is at most 64 octets, the
/// domain at most 255, the whole path (with its angle brackets) at most 256. No control
/// character, CR, LF or NUL, and no stray `<`, `>` or space, can pass: an injection such as
/// `a@b.com>\r\nRCPT TO:<x@y>` is refused here.
public struct EnvelopeAddress: Hashable, Sendable, CustomStringConvertible {
    /// `local@domain`, exactly as given and validated.
    public let address: String
    /// The offset, in UTF-8 octets, of the `@` that ends the local part.
    private let atOffset: Int
    /// Whether the address has non-ASCII characters and so needs SMTPUTF8.
    public let requiresSMTPUTF8: Bool

    /// Parses and validates `address` (`user@example.com`, `"a b"@example.com`,
    /// `postmaster@[192.0.2.1]`). Surrounding angle brackets are not accepted: give the bare
    /// mailbox.
    public init(_ address: String) throws(AddressError) {
        // The checks read the string's own octets: a MAIL and an RCPT per message pass here,
        // on both sides, and nothing is copied unless the address is refused.
        var text = address
        text.makeContiguousUTF8()
        let parsed = text.utf8.withContiguousStorageIfAvailable { bytes in
            Result { () throws(AddressError) in try Self.parse(bytes, text) }
        } ?? .failure(AddressError(.invalidLocalPart, address, "its text is not contiguous UTF-8"))
        (atOffset, requiresSMTPUTF8) = try parsed.get()
        self.address = text
    }

    /// The local part, exactly as it goes on the wire (quotes included, if quoted).
    public var localPart: String { String(Substring(address.utf8.prefix(atOffset))) }

    /// The domain or address literal.
    public var domain: String { String(Substring(address.utf8.dropFirst(atOffset + 1))) }

    /// Appends `local@domain` as UTF-8, with no string built in between (a MAIL and an RCPT
    /// per message).
    func encode(into bytes: inout [UInt8]) {
        bytes.append(contentsOf: address.utf8)
    }
    public var description: String { address }

    /// Validates the octets of `address`; returns the offset of the `@` that ends the local
    /// part, and whether any octet is not ASCII.
    private static func parse(
        _ bytes: UnsafeBufferPointer<UInt8>, _ address: String
    ) throws(AddressError) -> (at: Int, requiresSMTPUTF8: Bool) {
        guard !bytes.isEmpty else { throw AddressError(.empty, address) }
        if let bad = bytes.first(where: { $0 < 0x20 || $0 == 0x7F }) {
            throw AddressError(.controlCharacter, address, "byte 0x\(String(bad, radix: 16))")
        }
        // Find the "@" that ends the local part: after a closing quote if the local part is quoted.
        let at: Int
        if bytes.first == UInt8(ascii: "\"") {
            guard let close = endOfQuotedString(bytes) else {
                throw AddressError(.invalidLocalPart, address, "an unterminated quoted string")
            }
            guard close + 1 < bytes.count, bytes[close + 1] == UInt8(ascii: "@") else {
                throw AddressError(.missingAt, address)
            }
            at = close + 1
        } else {
            guard let index = bytes.firstIndex(of: UInt8(ascii: "@")) else { throw AddressError(.missingAt, address) }
            at = index
        }
        let local = UnsafeBufferPointer(rebasing: bytes[..<at])
        let domain = UnsafeBufferPointer(rebasing: bytes[(at + 1)...])
        guard !local.isEmpty else { throw AddressError(.invalidLocalPart, address, "it is empty") }
        guard local.count <= 64 else {
            throw AddressError(.tooLong, address, "the local part is \(local.count) octets; at most 64")
        }
        guard !domain.isEmpty else { throw AddressError(.invalidDomain, address, "it is empty") }
        guard domain.count <= 255 else {
            throw AddressError(.tooLong, address, "the domain is \(domain.count) octets; at most 255")
        }
        guard bytes.count + 2 <= 256 else {
            throw AddressError(.tooLong, address, "the path is \(bytes.count + 2) octets; at most 256")
        }
        if local.first == UInt8(ascii: "\"") {
            try validateQuotedString(local, address)
        } else {
            try validateDotString(local, address)
        }
        try validateDomain(domain, address)
        return (at, bytes.contains { $0 >= 0x80 })
    }

    // MARK: Grammar (RFC 5321 §4.1.2)

    private static func isAtext(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), 0x80...0xFF,
            UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"),
            UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "/"),
            UInt8(ascii: "="), UInt8(ascii: "?"), UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"),
            UInt8(ascii: "{"), UInt8(ascii: "|"), UInt8(ascii: "}"), UInt8(ascii: "~"):
            return true
        default:
            return false
        }
    }

    private static func validateDotString(_ local: UnsafeBufferPointer<UInt8>, _ address: String) throws(AddressError) {
        var atomLength = 0
        for byte in local {
            if byte == UInt8(ascii: ".") {
                guard atomLength > 0 else {
                    throw AddressError(.invalidLocalPart, address, "an empty atom (leading or double dot)")
                }
                atomLength = 0
            } else if isAtext(byte) {
                atomLength += 1
            } else {
                throw AddressError(.invalidLocalPart, address, "'\(Character(Unicode.Scalar(byte)))' needs quoting")
            }
        }
        guard atomLength > 0 else { throw AddressError(.invalidLocalPart, address, "it ends with a dot") }
    }

    /// The index of the quote that closes the quoted string opening at `start` (quoted pairs
    /// skipped); shared with the message parser.
    package static func endOfQuotedString(_ bytes: [UInt8], from start: Int = 0) -> Int? {
        bytes.withUnsafeBufferPointer { endOfQuotedString($0, from: start) }
    }

    private static func endOfQuotedString(_ bytes: UnsafeBufferPointer<UInt8>, from start: Int = 0) -> Int? {
        var index = start + 1
        while index < bytes.count {
            switch bytes[index] {
            case UInt8(ascii: "\\"): index += 2
            case UInt8(ascii: "\""): return index
            default: index += 1
            }
        }
        return nil
    }

    private static func validateQuotedString(_ local: UnsafeBufferPointer<UInt8>, _ address: String) throws(AddressError) {
        // qtextSMTP = %d32-33 / %d35-91 / %d93-126 (and UTF-8); quoted-pairSMTP = "\" %d32-126
        var index = 1
        while index < local.count - 1 {
            let byte = local[index]
            if byte == UInt8(ascii: "\\") {
                guard index + 1 < local.count - 1, (32...126).contains(local[index + 1]) else {
                    throw AddressError(.invalidLocalPart, address, "a bad quoted pair")
                }
                index += 2
                continue
            }
            guard byte == 32 || byte == 33 || (35...91).contains(byte) || (93...126).contains(byte) || byte >= 0x80 else {
                throw AddressError(.invalidLocalPart, address, "a character not allowed in a quoted string")
            }
            index += 1
        }
    }

    private static func validateDomain(_ domain: UnsafeBufferPointer<UInt8>, _ address: String) throws(AddressError) {
        if domain.first == UInt8(ascii: "[") {
            guard domain.last == UInt8(ascii: "]"), domain.count > 2 else {
                throw AddressError(.invalidDomain, address, "an unterminated address literal")
            }
            let literal = String(decoding: domain.dropFirst().dropLast(), as: UTF8.self)
            guard isAddressLiteral(literal) else {
                throw AddressError(.invalidDomain, address, "'\(literal)' is not an IPv4 or IPv6 address literal")
            }
            return
        }
        try validateHostName(domain) { reason throws(AddressError) in
            throw AddressError(.invalidDomain, address, reason)
        }
    }

    /// Checks a host name: labels of letters, digits and hyphens (or UTF-8 U-labels), 1–63
    /// octets, not starting or ending with a hyphen; at most 255 octets. Calls `fail` with
    /// the reason otherwise.
    static func validateHostName(_ name: [UInt8], fail: (String) throws(AddressError) -> Void) throws(AddressError) {
        try name.withUnsafeBufferPointer { (buffer) throws(AddressError) in try validateHostName(buffer, fail: fail) }
    }

    static func validateHostName(
        _ name: UnsafeBufferPointer<UInt8>, fail: (String) throws(AddressError) -> Void
    ) throws(AddressError) {
        guard !name.isEmpty, name.count <= 255 else { return try fail("a host name has 1 to 255 octets") }
        var start = 0
        while true {
            let end = name[start...].firstIndex(of: UInt8(ascii: ".")) ?? name.count
            let label = name[start..<end]
            guard !label.isEmpty else { return try fail("an empty label") }
            guard label.count <= 63 else { return try fail("a label longer than 63 octets") }
            guard label.first != UInt8(ascii: "-"), label.last != UInt8(ascii: "-") else {
                return try fail("a label starting or ending with a hyphen")
            }
            for byte in label {
                let isLetDig = (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte)
                    || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
                    || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
                guard isLetDig || byte == UInt8(ascii: "-") || byte >= 0x80 else {
                    return try fail("'\(Character(Unicode.Scalar(byte)))' is not allowed in a host name")
                }
            }
            guard end < name.count else { return }
            start = end + 1
        }
    }

    /// IPv4 dotted quad, or `IPv6:` followed by an IPv6 address (RFC 5321 §4.1.3).
    static func isAddressLiteral(_ literal: String) -> Bool {
        if literal.hasPrefix("IPv6:") || literal.hasPrefix("ipv6:") {
            return isIPv6(String(literal.dropFirst(5)))
        }
        return isIPv4(literal)
    }

    static func isIPv4(_ text: String) -> Bool {
        let parts = text.split(separator: ".", omittingEmptySubsequences: false)
        return parts.count == 4 && parts.allSatisfy { part in
            (1...3).contains(part.count) && part.allSatisfy(\.isASCIIDigit) && Int(part)! <= 255
        }
    }

    static func isIPv6(_ text: String) -> Bool {
        guard !text.isEmpty, text.allSatisfy({ $0.isHexDigit && $0.isASCII || $0 == ":" || $0 == "." }) else {
            return false
        }
        var groups = text.split(separator: ":", omittingEmptySubsequences: false).map(String.init)
        var maximum = 8
        if let last = groups.last, last.contains(".") {
            guard isIPv4(last) else { return false }
            groups.removeLast()
            groups.append("0")  // the IPv4 tail counts as two groups
            maximum = 7
        }
        let utf8 = Array(text.utf8)
        var compressed = 0
        var index = 0
        while index + 1 < utf8.count {
            if utf8[index] == UInt8(ascii: ":"), utf8[index + 1] == UInt8(ascii: ":") {
                compressed += 1
                index += 2
            } else {
                index += 1
            }
        }
        guard compressed <= 1, !text.contains(":::") else { return false }
        if text.hasPrefix(":"), !text.hasPrefix("::") { return false }
        if text.hasSuffix(":"), !text.hasSuffix("::") { return false }
        if compressed == 1 {
            let nonEmpty = groups.filter { !$0.isEmpty }
            return nonEmpty.count < maximum && nonEmpty.allSatisfy { $0.count <= 4 }
        }
        return groups.count == maximum && groups.allSatisfy { (1...4).contains($0.count) }
    }
}

extension Character {
    fileprivate var isASCIIDigit: Bool { isASCII && isNumber }
}

/// An address that is not a valid RFC 5321 path, refused before anything is sent.
public struct AddressError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What is wrong, in a form that can be matched.
    public struct Kind: Hashable, Sendable, CustomStringConvertible {
        /// The kind in words, as messages say it.
        public let description: String
        private init(_ description: String) { self.description = description }

        /// The address is empty.
        public static let empty = Kind("empty address")
        /// There is no `@` between a local part and a domain.
        public static let missingAt = Kind("no @ between local part and domain")
        /// The local part is neither a dot-string nor a quoted string.
        public static let invalidLocalPart = Kind("invalid local part")
        /// The domain is neither a host name nor an address literal.
        public static let invalidDomain = Kind("invalid domain")
        /// A part, or the path, is longer than RFC 5321 allows.
        public static let tooLong = Kind("too long")
        /// A control character (CR, LF, NUL, …) is in the address.
        public static let controlCharacter = Kind("control character")
        /// A UTF-8 address, but the server did not offer SMTPUTF8 or it was not requested.
        public static let needsSMTPUTF8 = Kind("needs SMTPUTF8")
        /// A display name (or the text around an address) that is not words and quoted strings.
        public static let invalidDisplayName = Kind("invalid display name")
    }

    /// What is wrong.
    public let kind: Kind
    /// The address as given (control characters escaped).
    public let address: String
    /// Why, in words.
    public let reason: String?

    /// Creates an error.
    public init(_ kind: Kind, _ address: String, _ reason: String? = nil) {
        self.kind = kind
        self.address = SMTPProtocolError.excerpt(Array(address.utf8))
        self.reason = reason
    }

    public var description: String {
        "invalid address '\(address)': \(kind)" + (reason.map { ": \($0)" } ?? "")
    }
}
