internal import SluiceCore

/// Writes header fields: folded at whitespace to 78 characters where a fold point allows,
/// never over 998, with non-ASCII text as RFC 2047 encoded-words and non-ASCII parameter
/// values as RFC 2231 extended parameters.
///
/// Every method takes text that was checked for CR, LF and NUL before it got here; the
/// writer never emits a line break except a fold (CRLF followed by whitespace) or the CRLF
/// that ends a field.
struct HeaderWriter {
    /// RFC 5322 §2.1.1: lines SHOULD be at most 78 characters.
    static let preferredLineLength = 78
    /// A word longer than this is split into encoded-words, so that no line reaches 998.
    static let longestPlainWord = 900

    private(set) var bytes: [UInt8] = []
    private var lineLength = 0
    /// No token written yet in this field: the first stays on the name's line, because some
    /// readers (Python's email package among them) keep a fold's space after an empty first line.
    private var atFieldStart = false

    init(capacity: Int = 1_024) {
        bytes.reserveCapacity(capacity)
    }

    /// Writes one field: `Name:`, whatever `body` adds, and the CRLF that ends it.
    mutating func field(_ name: String, _ body: (inout HeaderWriter) -> Void) {
        bytes.append(contentsOf: name.utf8)
        bytes.append(UInt8(ascii: ":"))
        lineLength = name.utf8.count + 1
        atFieldStart = true
        body(&self)
        bytes.append(13)
        bytes.append(10)
        lineLength = 0
    }

    /// A field whose value is ASCII tokens separated by single spaces (already valid).
    mutating func field(_ name: String, tokens: [String]) {
        field(name) { writer in
            for token in tokens { writer.token(token.utf8) }
        }
    }

    /// Writes `token` after `separator` (whitespace), folding before it when the line would
    /// pass 78 characters: the fold is a CRLF inserted before the separator's last space, so
    /// unfolding restores the separator exactly.
    mutating func token(_ token: some Collection<UInt8>, separator: some Collection<UInt8> = CollectionOfOne(32)) {
        let width = separator.count + token.count
        if lineLength + width > Self.preferredLineLength, lineLength > 1, !separator.isEmpty, !atFieldStart {
            bytes.append(contentsOf: separator.dropLast())
            bytes.append(13)
            bytes.append(10)
            bytes.append(separator[separator.index(separator.startIndex, offsetBy: separator.count - 1)])
            lineLength = 1
        } else {
            bytes.append(contentsOf: separator)
            lineLength += separator.count
        }
        bytes.append(contentsOf: token)
        lineLength += token.count
        atFieldStart = false
    }

    /// Folds now unless `width` more characters fit on the line (so that a list folds between
    /// its items rather than inside one).
    mutating func foldUnlessFits(_ width: Int) {
        guard lineLength + width > Self.preferredLineLength, lineLength > 1, !atFieldStart else { return }
        bytes.append(13)
        bytes.append(10)
        lineLength = 0
    }

    /// Appends bytes to the current line with no fold point before them (a `,` or `;`).
    mutating func attach(_ text: StaticString) {
        bytes.append(literal: text)
        lineLength += text.utf8CodeUnitCount
    }

    // MARK: Unstructured text (RFC 5322 §3.2.5, RFC 2047 §5 (1))

    /// Writes free text (a subject, a custom header's value). Words that are plain ASCII stay
    /// as they are, whitespace between them preserved; each run of words that are not (non-
    /// ASCII, controls, text that would read as an encoded-word, leading or trailing space, a
    /// word too long to fold) becomes encoded-words.
    mutating func unstructured(_ text: String) {
        let utf8 = Array(text.utf8)
        // Split into (separator, word) pairs; leading and trailing whitespace are kept inside
        // the first and last words, which then need encoding, so nothing is lost.
        var pieces: [(separator: ArraySlice<UInt8>, word: ArraySlice<UInt8>)] = []
        var index = 0
        var separatorStart = 0
        while index < utf8.count {
            while index < utf8.count, utf8[index] == 32 || utf8[index] == 9 { index += 1 }
            let wordStart = index
            while index < utf8.count, utf8[index] != 32, utf8[index] != 9 { index += 1 }
            if wordStart == index {  // trailing whitespace: the last word carries it
                if pieces.isEmpty {
                    pieces.append((utf8[0..<0], utf8[separatorStart..<index]))
                } else {
                    let last = pieces.removeLast()
                    pieces.append((last.separator, utf8[last.word.startIndex..<index]))
                }
                break
            }
            if pieces.isEmpty {
                pieces.append((utf8[0..<0], utf8[separatorStart..<index]))
            } else {
                pieces.append((utf8[separatorStart..<wordStart], utf8[wordStart..<index]))
            }
            separatorStart = index
        }
        guard !pieces.isEmpty else { return }
        var position = 0
        while position < pieces.count {
            let separator = pieces[position].separator.isEmpty ? [32][...] : pieces[position].separator
            guard Self.needsEncoding(pieces[position].word) else {
                token(pieces[position].word, separator: separator)
                position += 1
                continue
            }
            // A run of words to encode, with the whitespace between them inside the run.
            var end = position + 1
            while end < pieces.count, Self.needsEncoding(pieces[end].word) { end += 1 }
            let run = utf8[pieces[position].word.startIndex..<pieces[end - 1].word.endIndex]
            encodedWords(run, separator: separator)
            position = end
        }
    }

    static func needsEncoding(_ word: ArraySlice<UInt8>) -> Bool {
        if word.count > longestPlainWord { return true }
        var previous: UInt8 = 0
        for byte in word {
            if byte < 0x21 || byte > 0x7E { return true }
            if previous == UInt8(ascii: "="), byte == UInt8(ascii: "?") { return true }
            previous = byte
        }
        return false
    }

    // MARK: Phrases (display names, RFC 5322 §3.2.5, RFC 2047 §5 (3))

    /// Writes a display name: atoms when it is plain words, a quoted string when it has
    /// specials, encoded-words when it is not printable ASCII.
    mutating func phrase(_ name: String) {
        let utf8 = Array(name.utf8)
        let printable = utf8.allSatisfy { $0 >= 0x20 && $0 < 0x7F }
        let looksEncoded = zip(utf8, utf8.dropFirst()).contains { $0 == UInt8(ascii: "=") && $1 == UInt8(ascii: "?") }
        guard printable, !looksEncoded, utf8.count <= Self.longestPlainWord else {
            encodedWords(utf8[...], separator: [32])
            return
        }
        let words = utf8.split(separator: 32, omittingEmptySubsequences: false)
        if words.allSatisfy({ !$0.isEmpty && $0.allSatisfy(Self.isAtext) }) {
            for word in words { token(word) }
            return
        }
        var quoted: [UInt8] = [UInt8(ascii: "\"")]
        for byte in utf8 {
            if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") { quoted.append(UInt8(ascii: "\\")) }
            quoted.append(byte)
        }
        quoted.append(UInt8(ascii: "\""))
        token(quoted)
    }

    static func isAtext(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"):
            return true
        default:
            switch byte {
            case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"),
                UInt8(ascii: "'"), UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "/"),
                UInt8(ascii: "="), UInt8(ascii: "?"), UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"),
                UInt8(ascii: "{"), UInt8(ascii: "|"), UInt8(ascii: "}"), UInt8(ascii: "~"):
                return true
            default:
                return false
            }
        }
    }

    // MARK: Encoded-words (RFC 2047)

    /// Writes `text` as UTF-8 encoded-words of at most 75 characters, each sized to the room
    /// left on the line; B or Q, whichever is shorter for the whole run. Words are split
    /// between grapheme clusters where one fits (so a reader that shows each word on its own
    /// still sees whole characters), otherwise between Unicode scalars. Q uses only the
    /// characters RFC 2047 §5 (3) allows in a phrase, so the same words are valid in any header.
    private mutating func encodedWords(_ text: ArraySlice<UInt8>, separator: ArraySlice<UInt8>) {
        let useB = EncodedWords.bLength(text.count) < EncodedWords.qLength(text)
        let overhead = 12  // "=?utf-8?B?" and "?="
        // The UTF-8 lengths of the pieces a word may not split: graphemes of up to 15 bytes,
        // the scalars of longer ones.
        var units: [Int] = []
        for character in String(decoding: text, as: UTF8.self) {
            let length = character.utf8.count
            if length < 16 { units.append(length) } else { units += character.unicodeScalars.map { $0.utf8.count } }
        }
        var index = text.startIndex
        var unit = 0
        var nextSeparator = separator
        while unit < units.count {
            var room = Self.preferredLineLength - lineLength - nextSeparator.count
            if room < overhead + 12 { room = atFieldStart ? overhead + 12 : Self.preferredLineLength - 1 }
            var limit = min(75, room) - overhead
            // Take whole units while the encoded payload fits.
            var end = index
            var payload = 0
            while unit < units.count {
                let next = end + units[unit]
                let width = useB
                    ? EncodedWords.bLength(next - index)
                    : payload + text[end..<next].reduce(0) { $0 + EncodedWords.qWidth($1) }
                if width > limit {
                    if end > index { break }
                    limit = 75 - overhead  // not even one unit fits here: the word goes on a new line
                }
                payload = width
                end = next
                unit += 1
            }
            var word: [UInt8] = Array("=?utf-8?".utf8)
            word.append(useB ? UInt8(ascii: "B") : UInt8(ascii: "Q"))
            word.append(UInt8(ascii: "?"))
            if useB {
                Base64.encode(text[index..<end], into: &word)
            } else {
                EncodedWords.qEncode(text[index..<end], into: &word)
            }
            word.append(contentsOf: "?=".utf8)
            token(word, separator: nextSeparator)
            nextSeparator = [32]
            index = end
        }
    }

    // MARK: Parameters (RFC 2045 §5.1, RFC 2231)

    /// Writes `; name=value`: a token as it is, printable ASCII as a quoted string, anything
    /// else as an RFC 2231 extended value in UTF-8, split into numbered sections when long.
    ///
    /// A token with `'`, `*` or `%` is valid RFC 2045 but is quoted all the same: readers that
    /// know RFC 2231 (Python's `email` among them) take it for a broken extended value and
    /// lose the parameter.
    mutating func parameter(_ name: String, _ value: String) {
        attach(";")
        let utf8 = Array(value.utf8)
        if !utf8.isEmpty, utf8.count <= 200, utf8.allSatisfy(Self.isAttributeCharacter) {
            token(Array("\(name)=".utf8) + utf8)
            return
        }
        if utf8.count <= 200, utf8.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) {
            var quoted = Array("\(name)=\"".utf8)
            for byte in utf8 {
                if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") { quoted.append(UInt8(ascii: "\\")) }
                quoted.append(byte)
            }
            quoted.append(UInt8(ascii: "\""))
            token(quoted)
            return
        }
        // Percent-encode, then cut into sections of about 60 characters (never inside a %XX).
        var encoded: [UInt8] = []
        for byte in utf8 {
            if Self.isAttributeCharacter(byte) {
                encoded.append(byte)
            } else {
                encoded.append(UInt8(ascii: "%"))
                encoded.append(EncodedWords.hexDigits[Int(byte >> 4)])
                encoded.append(EncodedWords.hexDigits[Int(byte & 0x0F)])
            }
        }
        let prefix = Array("utf-8''".utf8)
        if encoded.count + prefix.count <= 60 {
            token(Array("\(name)*=".utf8) + prefix + encoded)
            return
        }
        var start = 0
        var section = 0
        while start < encoded.count {
            // Each section on a line of its own: " name*N*=" (plus the charset on the first)
            // and the ";" that follows stay within 78 characters.
            let budget = Self.preferredLineLength - "\(name)*\(section)*=".utf8.count - (section == 0 ? prefix.count : 0) - 2
            var end = min(encoded.count, start + max(budget, 12))
            if end < encoded.count {
                // Back off so that a %XX is not cut.
                if encoded[end - 1] == UInt8(ascii: "%") { end -= 1 } else if end >= 2, encoded[end - 2] == UInt8(ascii: "%") { end -= 2 }
            }
            if section > 0 { attach(";") }
            var piece = Array("\(name)*\(section)*=".utf8)
            if section == 0 { piece += prefix }
            piece += encoded[start..<end]
            token(piece)
            start = end
            section += 1
        }
    }

    /// RFC 2045 token characters: printable ASCII but space and tspecials.
    static func isTokenCharacter(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "("), UInt8(ascii: ")"), UInt8(ascii: "<"), UInt8(ascii: ">"), UInt8(ascii: "@"),
            UInt8(ascii: ","), UInt8(ascii: ";"), UInt8(ascii: ":"), UInt8(ascii: "\\"), UInt8(ascii: "\""),
            UInt8(ascii: "/"), UInt8(ascii: "["), UInt8(ascii: "]"), UInt8(ascii: "?"), UInt8(ascii: "="):
            return false
        default:
            return byte > 0x20 && byte < 0x7F
        }
    }

    /// RFC 2231 attribute-char: a token character other than `*`, `'` and `%`.
    static func isAttributeCharacter(_ byte: UInt8) -> Bool {
        isTokenCharacter(byte) && byte != UInt8(ascii: "*") && byte != UInt8(ascii: "'") && byte != UInt8(ascii: "%")
    }
}

/// RFC 2047 encoded-words: sizes, the Q encoding, and a decoder for header text read back
/// (display names, a `Subject` to show).
public enum EncodedWords {
    static let hexDigits = Array("0123456789ABCDEF".utf8)

    static func bLength(_ count: Int) -> Int { (count + 2) / 3 * 4 }

    static func qLength(_ bytes: some Collection<UInt8>) -> Int {
        bytes.reduce(0) { $0 + qWidth($1) }
    }

    /// Characters Q may leave as they are in any header (RFC 2047 §5 (3)); space is `_`.
    static func isQLiteral(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"),
            UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "!"), UInt8(ascii: "*"), UInt8(ascii: "+"),
            UInt8(ascii: "-"), UInt8(ascii: "/"), 32:
            return true
        default:
            return false
        }
    }

    static func qWidth(_ byte: UInt8) -> Int { isQLiteral(byte) ? 1 : 3 }

    static func qEncode(_ bytes: some Collection<UInt8>, into output: inout [UInt8]) {
        for byte in bytes {
            if byte == 32 {
                output.append(UInt8(ascii: "_"))
            } else if isQLiteral(byte) {
                output.append(byte)
            } else {
                output.append(UInt8(ascii: "="))
                output.append(hexDigits[Int(byte >> 4)])
                output.append(hexDigits[Int(byte & 0x0F)])
            }
        }
    }

    /// Whether `word` is one whole encoded-word.
    static func isEncodedWord(_ word: String) -> Bool {
        parse(Substring(word)) != nil
    }

    /// Decodes the encoded-words in `text` (UTF-8, US-ASCII and ISO-8859-1 charsets; other
    /// words stay as written). Whitespace between adjacent encoded-words is dropped.
    public static func decode(_ text: String) -> String {
        var result = ""
        var pendingSpace = ""
        var lastWasEncoded = false
        var index = text.startIndex
        while index < text.endIndex {
            if text[index] == " " || text[index] == "\t" {
                let start = index
                while index < text.endIndex, text[index] == " " || text[index] == "\t" { index = text.index(after: index) }
                pendingSpace = String(text[start..<index])
                continue
            }
            var end = index
            while end < text.endIndex, text[end] != " ", text[end] != "\t" { end = text.index(after: end) }
            let word = text[index..<end]
            if let decoded = parse(word) {
                if !lastWasEncoded { result += pendingSpace }
                result += decoded
                lastWasEncoded = true
            } else {
                result += pendingSpace + word
                lastWasEncoded = false
            }
            pendingSpace = ""
            index = end
        }
        return result + pendingSpace
    }

    /// One encoded-word's text, or nil when `word` is not one this decoder reads.
    private static func parse(_ word: Substring) -> String? {
        guard word.hasPrefix("=?"), word.hasSuffix("?="), word.count >= 8 else { return nil }
        let parts = word.dropFirst(2).dropLast(2).split(separator: "?", omittingEmptySubsequences: false)
        guard parts.count == 3 else { return nil }
        let charset = parts[0].split(separator: "*").first.map { $0.lowercased() } ?? ""
        var bytes: [UInt8]
        switch parts[1] {
        case "B", "b":
            guard let decoded = Base64.decode(String(parts[2])) else { return nil }
            bytes = decoded
        case "Q", "q":
            bytes = []
            var utf8 = Array(parts[2].utf8)[...]
            while let byte = utf8.popFirst() {
                if byte == UInt8(ascii: "_") {
                    bytes.append(32)
                } else if byte == UInt8(ascii: "="), utf8.count >= 2,
                          let value = UInt8(String(decoding: utf8.prefix(2), as: UTF8.self), radix: 16) {
                    bytes.append(value)
                    utf8 = utf8.dropFirst(2)
                } else {
                    bytes.append(byte)
                }
            }
        default:
            return nil
        }
        switch charset {
        case "utf-8", "utf8", "us-ascii": return String(decoding: bytes, as: UTF8.self)
        case "iso-8859-1", "latin1": return String(String.UnicodeScalarView(bytes.map { Unicode.Scalar($0) }))
        default: return nil
        }
    }
}
