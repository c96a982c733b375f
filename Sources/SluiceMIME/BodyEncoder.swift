internal import SluiceCore

/// A Content-Transfer-Encoding (RFC 2045 §6).
enum TransferEncoding: String, Sendable {
    case sevenBit = "7bit"
    case eightBit = "8bit"
    case quotedPrintable = "quoted-printable"
    case base64 = "base64"
}

/// Body encodings: text normalised to CRLF, the transfer encoding chosen per part, and the
/// quoted-printable and base64 encoders. Every output line ends with CRLF and is at most 76
/// characters for the encoded forms, 998 for 7bit and 8bit.
enum BodyEncoder {
    /// Text with every line ending (CRLF, bare CR, bare LF) as CRLF, ending with CRLF.
    static func normalizedText(_ text: String) -> [UInt8] {
        var output: [UInt8] = []
        output.reserveCapacity(text.utf8.count + 64)
        var previousWasCR = false
        for byte in text.utf8 {
            switch byte {
            case 13:
                output.append(13)
                output.append(10)
                previousWasCR = true
                continue
            case 10:
                if !previousWasCR {
                    output.append(13)
                    output.append(10)
                }
            default:
                output.append(byte)
            }
            previousWasCR = false
        }
        if output.count < 2 || output[output.count - 2] != 13 || output[output.count - 1] != 10 {
            output.append(13)
            output.append(10)
        }
        return output
    }

    /// The transfer encoding for CRLF-normalised text: 7bit when it is ASCII with lines of at
    /// most 998 octets and no NUL; 8bit when the server accepts it and only the 8-bit bytes
    /// are in the way; otherwise quoted-printable or base64, whichever is shorter.
    static func choose(forText text: [UInt8], allow8Bit: Bool) -> TransferEncoding {
        var has8Bit = false
        var hasNUL = false
        var longestLine = 0
        var lineStart = 0
        var qpLength = 0
        for (index, byte) in text.enumerated() {
            if byte == 13 {
                longestLine = max(longestLine, index - lineStart)
                lineStart = index + 2
            }
            if byte >= 0x80 { has8Bit = true } else if byte == 0 { hasNUL = true }
            qpLength += (byte >= 33 && byte <= 126 && byte != UInt8(ascii: "=")) || byte == 32 || byte == 10 || byte == 13 ? 1 : 3
        }
        let shortLines = longestLine <= 998
        if !has8Bit, !hasNUL, shortLines { return .sevenBit }
        if allow8Bit, !hasNUL, shortLines { return .eightBit }
        qpLength += qpLength / 75 * 3  // soft line breaks
        let base64Length = (text.count + 2) / 3 * 4 * 78 / 76
        return qpLength <= base64Length ? .quotedPrintable : .base64
    }

    /// RFC 2045 §6.7 quoted-printable of CRLF-normalised text: CRLFs are hard line breaks,
    /// `=`, controls, 8-bit bytes and whitespace before a line break are escaped, and soft
    /// breaks keep every line at most 76 characters.
    static func quotedPrintable(_ text: [UInt8], into output: inout [UInt8]) {
        output.reserveCapacity(output.count + text.count + text.count / 8)
        var lineLength = 0
        var index = 0
        while index < text.count {
            let byte = text[index]
            if byte == 13, index + 1 < text.count, text[index + 1] == 10 {
                output.append(13)
                output.append(10)
                lineLength = 0
                index += 2
                continue
            }
            let endOfLine = index + 1 == text.count || text[index + 1] == 13
            let literal = (byte >= 33 && byte <= 126 && byte != UInt8(ascii: "="))
                || ((byte == 32 || byte == 9) && !endOfLine)
            let width = literal ? 1 : 3
            // Leave room for the "=" of a soft break unless this is the line's last character.
            let limit = endOfLine ? 76 : 75
            if lineLength + width > limit {
                output.append(UInt8(ascii: "="))
                output.append(13)
                output.append(10)
                lineLength = 0
            }
            if literal {
                output.append(byte)
            } else {
                output.append(UInt8(ascii: "="))
                output.append(EncodedWords.hexDigits[Int(byte >> 4)])
                output.append(EncodedWords.hexDigits[Int(byte & 0x0F)])
            }
            lineLength += width
            index += 1
        }
    }

    /// Base64 in lines of 76 characters, each ending with CRLF (57 input bytes per line).
    static func base64Lines(_ bytes: ArraySlice<UInt8>, into output: inout [UInt8]) {
        let lines = (bytes.count + 56) / 57
        let fullLines = bytes.count / 57
        let tail = bytes.count - fullLines * 57
        let length = fullLines * 78 + (tail > 0 ? (tail + 2) / 3 * 4 + 2 : 0)
        let start = output.count
        output.append(contentsOf: repeatElement(0, count: length))
        bytes.withUnsafeBufferPointer { input in
            output.withUnsafeMutableBufferPointer { buffer in
                alphabet.withUnsafeBufferPointer { alphabet in
                    var out = start
                    var position = 0
                    for line in 0..<lines {
                        let end = line < fullLines ? position + 57 : input.count
                        while position + 3 <= end {
                            let value = UInt32(input[position]) << 16 | UInt32(input[position + 1]) << 8
                                | UInt32(input[position + 2])
                            buffer[out] = alphabet[Int(value >> 18 & 63)]
                            buffer[out + 1] = alphabet[Int(value >> 12 & 63)]
                            buffer[out + 2] = alphabet[Int(value >> 6 & 63)]
                            buffer[out + 3] = alphabet[Int(value & 63)]
                            out += 4
                            position += 3
                        }
                        if position < end {  // the last 1 or 2 bytes, padded
                            let second = position + 1 < end ? UInt32(input[position + 1]) : 0
                            let value = UInt32(input[position]) << 16 | second << 8
                            buffer[out] = alphabet[Int(value >> 18 & 63)]
                            buffer[out + 1] = alphabet[Int(value >> 12 & 63)]
                            buffer[out + 2] = position + 1 < end ? alphabet[Int(value >> 6 & 63)] : UInt8(ascii: "=")
                            buffer[out + 3] = UInt8(ascii: "=")
                            out += 4
                            position = end
                        }
                        buffer[out] = 13
                        buffer[out + 1] = 10
                        out += 2
                    }
                }
            }
        }
    }

    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)
}
