internal import CIDN2
public import SluiceCore

/// A person's address as it appears in a message's `From`, `To`, `Cc` and `Reply-To`
/// headers: an optional display name and an address (RFC 5322 §3.4).
///
/// The address is checked to RFC 5321 path syntax when the mailbox is made, so every
/// mailbox can also be an envelope address. A domain with non-ASCII characters is converted
/// to its A-labels (IDNA2008 with UTS #46 processing, by GNU libidn2) once, here; a message
/// that does not go out with SMTPUTF8 uses them. A UTF-8 local part has no ASCII form and
/// needs SMTPUTF8. A display name may hold any Unicode (it is RFC 2047 encoded when written)
/// but never CR, LF or NUL.
public struct Mailbox: Hashable, Sendable, CustomStringConvertible {
    /// The display name (`Ada Lovelace` in `Ada Lovelace <ada@example.com>`), if any.
    public let name: String?
    /// The address as given, which may hold UTF-8.
    public let address: EnvelopeAddress
    /// The address with its domain in A-labels; nil when the local part is UTF-8 (the mailbox
    /// then needs SMTPUTF8).
    public let asciiAddress: EnvelopeAddress?
    /// The domain in A-labels (for generated Message-IDs).
    let asciiDomain: String

    /// A mailbox from a display name and an address (`user@example.com`, no angle brackets).
    ///
    /// - Throws: ``AddressError`` for an address that is not a valid RFC 5321 path, a domain
    ///   that IDNA rejects, or a name with a control character other than tab.
    public init(name: String? = nil, address: String) throws(AddressError) {
        let parsed = try EnvelopeAddress(address)
        if let name, let bad = name.utf8.first(where: { $0 == 0 || $0 == 10 || $0 == 13 }) {
            throw AddressError(.controlCharacter, address, "the display name has byte 0x\(String(bad, radix: 16))")
        }
        self.name = name.flatMap { $0.isEmpty ? nil : $0 }
        self.address = parsed
        asciiDomain = parsed.domain.utf8.allSatisfy({ $0 < 0x80 })
            ? parsed.domain : try Self.toALabels(parsed.domain, address: address)
        asciiAddress = parsed.localPart.utf8.allSatisfy({ $0 < 0x80 })
            ? try EnvelopeAddress("\(parsed.localPart)@\(asciiDomain)") : nil
    }

    /// Parses one mailbox as people write it: `user@example.com`, `<user@example.com>`,
    /// `Ada Lovelace <ada@example.com>`, `"Lovelace, Ada" <ada@example.com>`,
    /// `=?utf-8?q?Ad=C3=A1?= <ada@example.com>` or `ada@example.com (Ada)`.
    ///
    /// Quoted strings are unquoted, encoded-words decoded and runs of whitespace collapsed.
    /// Groups (`team: a@b, c@d;`) are not accepted.
    ///
    /// - Throws: ``AddressError`` when the text is not one mailbox.
    public init(_ text: String) throws(AddressError) {
        let parsed = try MailboxParser.parse(Array(text.utf8), original: text)
        try self.init(name: parsed.name, address: parsed.address)
    }

    /// Parses a comma-separated list of mailboxes (`a@b.com, "Lovelace, Ada" <ada@c.com>`).
    ///
    /// - Throws: ``AddressError`` naming the first entry that is not a mailbox.
    public static func list(_ text: String) throws(AddressError) -> [Mailbox] {
        var mailboxes: [Mailbox] = []
        for entry in MailboxParser.splitList(Array(text.utf8)) {
            let entryText = String(decoding: entry, as: UTF8.self)
            guard !entryText.trimmingWhitespace.isEmpty else { continue }
            mailboxes.append(try Mailbox(entryText))
        }
        guard !mailboxes.isEmpty else { throw AddressError(.empty, text) }
        return mailboxes
    }

    /// Parses an RFC 5322 address list as a header carries it: mailboxes, and groups whose
    /// members count and whose names do not (`team: a@b.example, c@d.example;`,
    /// `undisclosed-recipients:;`). An empty list is an empty array.
    ///
    /// - Throws: ``AddressError`` naming the first entry that is not a mailbox.
    public static func addressList(_ text: String) throws(AddressError) -> [Mailbox] {
        var mailboxes: [Mailbox] = []
        for entry in MailboxParser.splitList(Array(text.utf8), groups: true) {
            let entryText = String(decoding: entry, as: UTF8.self)
            guard !entryText.trimmingWhitespace.isEmpty else { continue }
            mailboxes.append(try Mailbox(entryText))
        }
        return mailboxes
    }

    /// Whether the mailbox can only be written with SMTPUTF8 (its local part is UTF-8).
    public var requiresSMTPUTF8: Bool { asciiAddress == nil }

    /// The address to put in the envelope: as given with SMTPUTF8, in A-labels without it.
    ///
    /// - Throws: ``AddressError`` of kind ``AddressError/Kind/needsSMTPUTF8`` when the local
    ///   part is UTF-8 and `smtpUTF8` is false.
    public func envelopeAddress(smtpUTF8: Bool) throws(AddressError) -> EnvelopeAddress {
        if smtpUTF8 { return address }
        guard let asciiAddress else {
            throw AddressError(.needsSMTPUTF8, address.address, "the local part is not ASCII")
        }
        return asciiAddress
    }

    /// `Name <address>`, or the bare address (unencoded; for display and logs).
    public var description: String {
        guard let name else { return address.address }
        return "\(name) <\(address.address)>"
    }

    // MARK: IDNA

    /// The domain in A-labels (`bücher.example` → `xn--bcher-kva.example`), by libidn2's
    /// UTS #46 non-transitional processing of NFC input.
    static func toALabels(_ domain: String, address: String) throws(AddressError) -> String {
        var output: UnsafeMutablePointer<CChar>?
        let flags = Int32(IDN2_NONTRANSITIONAL.rawValue | IDN2_NFC_INPUT.rawValue)
        let status = idn2_to_ascii_8z(domain, &output, flags)
        defer { idn2_free(output) }
        guard status == Int32(IDN2_OK.rawValue), let output else {
            let reason = String(cString: idn2_strerror(status))
            throw AddressError(.invalidDomain, address, "IDNA: \(reason)")
        }
        return String(cString: output)
    }
}

/// The RFC 5322 mailbox grammar, as far as parsing one written by a person needs it.
enum MailboxParser {
    /// Splits a list at the commas that are outside quotes, angle brackets and comments.
    /// With `groups`, a group's name (up to its `:`) is dropped and its `;` ends an entry.
    static func splitList(_ bytes: [UInt8], groups: Bool = false) -> [ArraySlice<UInt8>] {
        var entries: [ArraySlice<UInt8>] = []
        var start = 0
        var index = 0
        var inQuotes = false
        var inAngle = false
        var commentDepth = 0
        while index < bytes.count {
            let byte = bytes[index]
            if inQuotes {
                if byte == UInt8(ascii: "\\") { index += 1 } else if byte == UInt8(ascii: "\"") { inQuotes = false }
            } else if commentDepth > 0 {
                if byte == UInt8(ascii: "\\") {
                    index += 1
                } else if byte == UInt8(ascii: "(") {
                    commentDepth += 1
                } else if byte == UInt8(ascii: ")") {
                    commentDepth -= 1
                }
            } else {
                switch byte {
                case UInt8(ascii: "\""): inQuotes = true
                case UInt8(ascii: "("): commentDepth = 1
                case UInt8(ascii: "<"): inAngle = true
                case UInt8(ascii: ">"): inAngle = false
                case UInt8(ascii: ",") where !inAngle, UInt8(ascii: ";") where groups && !inAngle:
                    entries.append(bytes[start..<index])
                    start = index + 1
                case UInt8(ascii: ":") where groups && !inAngle:
                    start = index + 1  // the group's display name
                default: break
                }
            }
            index += 1
        }
        entries.append(bytes[min(start, bytes.count)...])
        return entries
    }

    static func parse(_ bytes: [UInt8], original: String) throws(AddressError) -> (name: String?, address: String) {
        if let bad = bytes.first(where: { $0 == 0 || $0 == 10 || $0 == 13 }) {
            throw AddressError(.controlCharacter, original, "byte 0x\(String(bad, radix: 16))")
        }
        // Find a "<" outside quotes and comments: the name-addr form.
        var index = 0
        var angle: Int?
        var phraseEnd = bytes.count
        while index < bytes.count {
            switch bytes[index] {
            case UInt8(ascii: "\""):
                guard let close = EnvelopeAddress.endOfQuotedString(bytes, from: index) else {
                    throw AddressError(.invalidLocalPart, original, "an unterminated quoted string")
                }
                index = close
            case UInt8(ascii: "("):
                guard let close = endOfComment(bytes, from: index) else {
                    throw AddressError(.invalidLocalPart, original, "an unterminated comment")
                }
                index = close
            case UInt8(ascii: "<"):
                angle = index
                phraseEnd = index
                index = bytes.count
                continue
            case UInt8(ascii: ":"):
                throw AddressError(.invalidDisplayName, original, "a group (name: addresses;) is not a mailbox")
            default: break
            }
            index += 1
        }
        if let angle {
            guard let close = bytes[angle...].lastIndex(of: UInt8(ascii: ">")) else {
                throw AddressError(.invalidLocalPart, original, "a '<' without its '>'")
            }
            let trailing = try stripComments(bytes[(close + 1)...], original: original)
            guard trailing.allSatisfy({ $0 == 32 || $0 == 9 }) else {
                throw AddressError(.invalidDisplayName, original, "text after the '>'")
            }
            let address = String(decoding: bytes[(angle + 1)..<close], as: UTF8.self).trimmingWhitespace
            let name = try phrase(bytes[..<phraseEnd], original: original)
            return (name, address)
        }
        // addr-spec, perhaps with a comment that names the person: "ada@example.com (Ada)".
        var comment: String?
        var spec: [UInt8] = []
        index = 0
        while index < bytes.count {
            let byte = bytes[index]
            if byte == UInt8(ascii: "\""), let close = EnvelopeAddress.endOfQuotedString(bytes, from: index) {
                spec += bytes[index...close]
                index = close + 1
            } else if byte == UInt8(ascii: "("), let close = endOfComment(bytes, from: index) {
                let text = unescape(bytes[(index + 1)..<close]).trimmingWhitespace
                if !text.isEmpty { comment = comment.map { "\($0) \(text)" } ?? text }
                index = close + 1
            } else {
                spec.append(byte)
                index += 1
            }
        }
        let address = String(decoding: spec, as: UTF8.self).trimmingWhitespace
        return (comment.map { EncodedWords.decode($0) }, address)
    }

    /// The display name: quoted strings unquoted, comments dropped, encoded-words decoded,
    /// whitespace collapsed.
    private static func phrase(_ bytes: ArraySlice<UInt8>, original: String) throws(AddressError) -> String? {
        var words: [(text: String, encoded: Bool)] = []
        var index = bytes.startIndex
        var atom: [UInt8] = []
        func flushAtom() {
            if !atom.isEmpty {
                let text = String(decoding: atom, as: UTF8.self)
                words.append((text, EncodedWords.isEncodedWord(text)))
                atom.removeAll()
            }
        }
        while index < bytes.endIndex {
            let byte = bytes[index]
            switch byte {
            case UInt8(ascii: "\""):
                flushAtom()
                guard let close = EnvelopeAddress.endOfQuotedString(Array(bytes), from: index - bytes.startIndex) else {
                    throw AddressError(.invalidLocalPart, original, "an unterminated quoted string")
                }
                let end = close + bytes.startIndex
                words.append((unescape(bytes[(index + 1)..<end]), false))
                index = end + 1
            case UInt8(ascii: "("):
                flushAtom()
                guard let close = endOfComment(Array(bytes), from: index - bytes.startIndex) else {
                    throw AddressError(.invalidLocalPart, original, "an unterminated comment")
                }
                index = close + bytes.startIndex + 1
            case 32, 9:
                flushAtom()
                index += 1
            default:
                // obs-phrase allows "."; UTF-8 is taken as people write it (RFC 6532).
                guard HeaderWriter.isAtext(byte) || byte == UInt8(ascii: ".") || byte >= 0x80 else {
                    throw AddressError(.invalidDisplayName, original,
                                       "'\(Character(Unicode.Scalar(byte)))' in a display name needs quoting")
                }
                atom.append(byte)
                index += 1
            }
        }
        flushAtom()
        guard !words.isEmpty else { return nil }
        // Whitespace between two adjacent encoded-words is not part of the text (RFC 2047 §6.2).
        var name = ""
        for (offset, word) in words.enumerated() {
            if offset > 0, !(word.encoded && words[offset - 1].encoded) { name += " " }
            name += word.encoded ? EncodedWords.decode(word.text) : word.text
        }
        return name
    }

    private static func stripComments(_ bytes: ArraySlice<UInt8>, original: String) throws(AddressError) -> [UInt8] {
        var result: [UInt8] = []
        let array = Array(bytes)
        var index = 0
        while index < array.count {
            if array[index] == UInt8(ascii: "(") {
                guard let close = endOfComment(array, from: index) else {
                    throw AddressError(.invalidLocalPart, original, "an unterminated comment")
                }
                index = close + 1
            } else {
                result.append(array[index])
                index += 1
            }
        }
        return result
    }

    /// The index of the parenthesis that closes the comment opening at `start` (comments nest).
    private static func endOfComment(_ bytes: [UInt8], from start: Int) -> Int? {
        var depth = 0
        var index = start
        while index < bytes.count {
            switch bytes[index] {
            case UInt8(ascii: "\\"): index += 1
            case UInt8(ascii: "("): depth += 1
            case UInt8(ascii: ")"):
                depth -= 1
                if depth == 0 { return index }
            default: break
            }
            index += 1
        }
        return nil
    }

    /// The text of a quoted string or comment: quoted pairs resolved.
    private static func unescape(_ bytes: ArraySlice<UInt8>) -> String {
        var result: [UInt8] = []
        var index = bytes.startIndex
        while index < bytes.endIndex {
            if bytes[index] == UInt8(ascii: "\\"), index + 1 < bytes.endIndex {
                index += 1
            }
            result.append(bytes[index])
            index += 1
        }
        return String(decoding: result, as: UTF8.self)
    }
}
