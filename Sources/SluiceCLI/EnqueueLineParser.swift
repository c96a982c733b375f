/// A reader for the one shape nearly every line of `sluice outbox enqueue`'s input has: an
/// object whose members are among `from`, `to`, `eml`, `raw`, `idempotencyKey` and
/// `notBefore`, each a string (`to` an array of strings), none twice.
///
/// Foundation's `JSONDecoder` took a quarter of enqueue's time, building a tree of values for
/// each line before reading six fields out of it. This reads the fields directly. It answers
/// only where it is sure: for anything else (another member, a `null`, a number, a lone
/// surrogate, bytes that are not UTF-8, anything malformed) it gives nil, and the caller asks
/// `JSONDecoder`, which then decodes the line or says what is wrong with it. Wherever this
/// answers, it answers as `JSONDecoder` would (a test holds the two to it on random lines).
struct EnqueueLineParser {
    private let bytes: UnsafeBufferPointer<UInt8>
    private var index = 0

    private init(_ bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

    /// The line's fields, or nil when the line is not in the simple shape.
    static func parse(_ line: ArraySlice<UInt8>) -> OutboxCommand.Enqueue.Line? {
        line.withUnsafeBufferPointer { buffer in
            var parser = EnqueueLineParser(buffer)
            return parser.object()
        }
    }

    private mutating func object() -> OutboxCommand.Enqueue.Line? {
        var from: String?, to: [String]?, eml: String?, raw: String?, key: String?, notBefore: String?
        guard take(UInt8(ascii: "{")) else { return nil }
        if !take(UInt8(ascii: "}")) {
            repeat {
                guard let name = string(), take(UInt8(ascii: ":")) else { return nil }
                // Another member, one given twice, or a value that is not a string: nil.
                switch name {
                case "from" where from == nil: guard let value = string() else { return nil }; from = value
                case "to" where to == nil: guard let value = stringArray() else { return nil }; to = value
                case "eml" where eml == nil: guard let value = string() else { return nil }; eml = value
                case "raw" where raw == nil: guard let value = string() else { return nil }; raw = value
                case "idempotencyKey" where key == nil: guard let value = string() else { return nil }; key = value
                case "notBefore" where notBefore == nil: guard let value = string() else { return nil }; notBefore = value
                default: return nil
                }
            } while take(UInt8(ascii: ","))
            guard take(UInt8(ascii: "}")) else { return nil }
        }
        skipWhitespace()
        guard index == bytes.count, let from, let to else { return nil }
        return OutboxCommand.Enqueue.Line(from: from, to: to, eml: eml, raw: raw, idempotencyKey: key, notBefore: notBefore)
    }

    private mutating func stringArray() -> [String]? {
        guard take(UInt8(ascii: "[")) else { return nil }
        var strings: [String] = []
        if take(UInt8(ascii: "]")) { return strings }
        repeat {
            guard let string = string() else { return nil }
            strings.append(string)
        } while take(UInt8(ascii: ","))
        return take(UInt8(ascii: "]")) ? strings : nil
    }

    /// A JSON string, after any whitespace; nil if there is none or it is one this reader
    /// leaves to JSONDecoder.
    private mutating func string() -> String? {
        guard take(UInt8(ascii: "\"")) else { return nil }
        var decoded: [UInt8] = []  // from the first escape on; until then the string is the bytes as they are
        var escaped = false
        var run = index  // where the bytes not yet copied to `decoded` begin
        var high: UInt64 = 0  // the high bits of the bytes passed: none set, all ASCII
        while index < bytes.count {
            skipPlainWords(orInto: &high)
            guard index < bytes.count else { break }
            let byte = bytes[index]
            high |= UInt64(byte)
            guard byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") || byte < 0x20 else {
                index += 1
                continue
            }
            guard byte >= 0x20 else { return nil }  // a control character must be escaped
            let unescaped = UnsafeBufferPointer(rebasing: bytes[run..<index])
            index += 1
            if byte == UInt8(ascii: "\"") {
                guard escaped else { return Self.string(unescaped, ascii: high & 0x8080_8080_8080_8080 == 0) }
                decoded.append(contentsOf: unescaped)
                return decoded.withUnsafeBufferPointer { Self.string($0, ascii: false) }
            }
            escaped = true
            decoded.append(contentsOf: unescaped)
            guard index < bytes.count else { return nil }
            let escape = bytes[index]
            index += 1
            switch escape {
            case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): decoded.append(escape)
            case UInt8(ascii: "b"): decoded.append(0x08)
            case UInt8(ascii: "f"): decoded.append(0x0C)
            case UInt8(ascii: "n"): decoded.append(0x0A)
            case UInt8(ascii: "r"): decoded.append(0x0D)
            case UInt8(ascii: "t"): decoded.append(0x09)
            case UInt8(ascii: "u"):
                guard let scalar = unicodeEscape() else { return nil }
                decoded.append(contentsOf: UTF8.encode(scalar)!)
            default: return nil
            }
            run = index
        }
        return nil  // unterminated
    }

    /// Passes eight bytes at a time while none is a quote, a backslash or a control
    /// character, adding their high bits to `high`.
    private mutating func skipPlainWords(orInto high: inout UInt64) {
        let ones: UInt64 = 0x0101_0101_0101_0101, highs: UInt64 = 0x8080_8080_8080_8080
        func hasZeroByte(_ word: UInt64) -> Bool { (word &- ones) & ~word & highs != 0 }
        while index + 8 <= bytes.count {
            let word = UnsafeRawPointer(bytes.baseAddress! + index).loadUnaligned(as: UInt64.self)
            // A byte below 0x20 (an ASCII one: the subtraction borrows only from those), a
            // quote or a backslash: the byte-at-a-time loop takes it from here.
            guard !hasZeroByte(word ^ (ones &* 0x22)), !hasZeroByte(word ^ (ones &* 0x5C)),
                  (word &- ones &* 0x20) & ~word & highs == 0 else { return }
            high |= word
            index += 8
        }
    }

    /// The bytes as a string; nil if they are not UTF-8. ASCII needs no validating.
    private static func string(_ bytes: UnsafeBufferPointer<UInt8>, ascii: Bool) -> String? {
        ascii ? String(decoding: bytes, as: UTF8.self) : String(validating: bytes, as: UTF8.self)
    }

    /// The scalar of a `\uXXXX` escape whose `\u` has been read, joining a surrogate pair;
    /// nil for a lone surrogate.
    private mutating func unicodeEscape() -> Unicode.Scalar? {
        guard let unit = hexQuad() else { return nil }
        switch unit {
        case 0xD800...0xDBFF:
            guard index + 1 < bytes.count, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u") else {
                return nil
            }
            index += 2
            guard let low = hexQuad(), (0xDC00...0xDFFF).contains(low) else { return nil }
            return Unicode.Scalar(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00))
        case 0xDC00...0xDFFF:
            return nil
        default:
            return Unicode.Scalar(unit)
        }
    }

    private mutating func hexQuad() -> UInt32? {
        guard index + 4 <= bytes.count else { return nil }
        var value: UInt32 = 0
        for _ in 0..<4 {
            let byte = bytes[index]
            index += 1
            let digit: UInt8
            switch byte {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = byte - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = byte - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = byte - UInt8(ascii: "A") + 10
            default: return nil
            }
            value = value << 4 | UInt32(digit)
        }
        return value
    }

    /// Skips whitespace, then takes `byte` if it is next.
    private mutating func take(_ byte: UInt8) -> Bool {
        skipWhitespace()
        guard index < bytes.count, bytes[index] == byte else { return false }
        index += 1
        return true
    }

    private mutating func skipWhitespace() {
        while index < bytes.count {
            switch bytes[index] {
            case 0x20, 0x09, 0x0A, 0x0D: index += 1
            default: return
            }
        }
    }
}
