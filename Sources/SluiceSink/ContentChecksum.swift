import SluiceTransport

/// A checksum of a message's body in a header field of its own: `sluice bench --checksum`
/// adds it and `sluice sink --verify` checks it, so that content corrupted on the way (by the
/// client, a relay or the sink) shows up as a failure rather than as a fast run. Postal's
/// load tester and its reader work the same way.
///
/// The field is `X-Sluice-Checksum: sha256=` and the SHA-256 of the body in lowercase hex:
/// everything after the blank line that ends the header section, as it is on the wire with
/// dot-stuffing undone. Only the body is covered, since relays add and rewrite header fields.
public enum ContentChecksum {
    /// The field's name.
    public static let fieldName = "X-Sluice-Checksum"
    private static let prefix = Array("\(fieldName): sha256=".utf8)

    /// The whole field for `body`, with its CRLF: always `fieldLength` octets.
    public static func field(forBody body: [UInt8]) -> [UInt8] {
        prefix + hex(Digest.hash(.sha256, body)) + [13, 10]
    }

    /// The length of every field ``field(forBody:)`` makes.
    public static var fieldLength: Int { prefix.count + 64 + 2 }

    /// What a check of one message found.
    public enum Verdict: Hashable, Sendable {
        /// The field is there and matches the body.
        case verified
        /// The message has no such field: nothing to check.
        case unchecked
        /// The field is there and the body does not match it (or the field is malformed);
        /// the text says which.
        case mismatch(String)
    }

    /// Checks `content` (header section, blank line, body; CRLF line endings).
    public static func verify(_ content: [UInt8]) -> Verdict {
        let (headerEnd, bodyStart) = headerSection(of: content)
        guard let value = fieldValue(in: content[..<headerEnd])?.map(lowercased) else { return .unchecked }
        let expected = Array("sha256=".utf8)
        guard value.count == expected.count + 64, value.starts(with: expected) else {
            return .mismatch("\(fieldName) is not sha256= and 64 hex digits")
        }
        let found = Array(value.dropFirst(expected.count))
        let body = Array(content[bodyStart...])  // the digest takes an array
        guard found == hex(Digest.hash(.sha256, body)) else {
            return .mismatch("the body (\(body.count) octets) does not match its \(fieldName)")
        }
        return .verified
    }

    /// The body of `content`: what follows the blank line after the header section (empty
    /// when there is none).
    public static func body(of content: [UInt8]) -> ArraySlice<UInt8> {
        content[headerSection(of: content).1...]
    }

    /// Where the header section ends (before its blank line) and where the body starts; a
    /// message with no blank line is all header.
    private static func headerSection(of content: [UInt8]) -> (Int, Int) {
        if content.starts(with: [13, 10]) { return (0, 2) }
        var index = 0
        while index + 3 < content.count {
            if content[index] == 13, content[index + 1] == 10, content[index + 2] == 13, content[index + 3] == 10 {
                return (index + 2, index + 4)
            }
            index += 1
        }
        return (content.count, content.count)
    }

    /// The unfolded value of the first field named ``fieldName`` (case-insensitively), its
    /// surrounding white space trimmed.
    private static func fieldValue(in header: ArraySlice<UInt8>) -> [UInt8]? {
        let name = Array(fieldName.utf8).map(lowercased) + [UInt8(ascii: ":")]
        var lineStart = header.startIndex
        while lineStart < header.endIndex {
            let lineEnd = header[lineStart...].firstIndex(of: 10) ?? header.endIndex
            if header[lineStart..<lineEnd].prefix(name.count).map(lowercased) == name {
                var value: [UInt8] = []
                var end = lineEnd
                value += header[(lineStart + name.count)..<lineEnd]
                // Continuation lines begin with white space.
                while end < header.endIndex, end + 1 < header.endIndex, header[end + 1] == 32 || header[end + 1] == 9 {
                    let next = header[(end + 1)...].firstIndex(of: 10) ?? header.endIndex
                    value += header[(end + 1)..<next]
                    end = next
                }
                return value.filter { $0 != 13 && $0 != 10 && $0 != 32 && $0 != 9 }
            }
            lineStart = lineEnd + 1
        }
        return nil
    }

    private static func lowercased(_ byte: UInt8) -> UInt8 {
        byte >= 65 && byte <= 90 ? byte + 32 : byte
    }

    private static func hex(_ bytes: [UInt8]) -> [UInt8] {
        let digits = Array("0123456789abcdef".utf8)
        var result: [UInt8] = []
        result.reserveCapacity(bytes.count * 2)
        for byte in bytes {
            result.append(digits[Int(byte >> 4)])
            result.append(digits[Int(byte & 15)])
        }
        return result
    }
}
