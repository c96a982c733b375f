@testable import Sluice
import SluiceCore
import Testing

@Suite("EncodedMessage wire forms")
struct EncodedMessageTests {
    /// Random content over the bytes that matter to DATA: dots, CR, LF and text.
    static func randomContent(_ generator: inout some RandomNumberGenerator) -> [UInt8] {
        let alphabet = Array(".\r\na ".utf8)
        return (0..<Int.random(in: 0...40, using: &generator)).map { _ in alphabet.randomElement(using: &generator)! }
    }

    @Test func dataPiecesAreExactlyTheDotStuffedContentAndTheChunkIsTheNormalisedContent() throws {
        var generator = SystemRandomNumberGenerator()
        var contents: [[UInt8]] = [[], Array(".".utf8), Array("a".utf8), Array(".\r\n".utf8), Array("a\r\n.b".utf8),
                                   Array("a\n..\r\n".utf8), Array("a\r.".utf8), Array("a.\r\nb.".utf8)]
        for _ in 0..<2_000 { contents.append(Self.randomContent(&generator)) }
        for content in contents {
            let message = try EncodedMessage(bytes: content)
            let data = message.dataPieces.flatMap(\.array)
            #expect(data == (try DataEncoder.dotStuffed(content)), "\(content)")
            #expect(message.info.dataLength == data.count, "\(content)")
            #expect(message.chunk.array == (try DataEncoder.normalized(content)), "\(content)")
            #expect(message.info.chunkLength == message.chunk.count, "\(content)")
        }
    }

    @Test func theFastCheckOfNormalisedContentAgreesWithTheNormalisingPass() {
        // Contents that are often already normalised (lines of CRLF) and often not (bare CR
        // or LF, a NUL, no final CRLF, a line over the limit), with dots and 8-bit bytes, at
        // lengths on both sides of the eight-byte and sixteen-byte steps.
        var generator = SystemRandomNumberGenerator()
        let pieces: [[UInt8]] = [Array("\r\n".utf8), Array("\r\n".utf8), Array("\r\n".utf8), [13], [10], [0],
                                 Array(".".utf8), Array("ab".utf8), [0xC3, 0xA9], [0x7F], Array(repeating: 0x61, count: 9)]
        var fast = 0
        var slow = 0
        for round in 0..<4000 {
            var content: [UInt8] = []
            for _ in 0..<Int.random(in: 0...12, using: &generator) {
                content += pieces.randomElement(using: &generator)!
            }
            if round % 2 == 0, content.last != 10 { content += Array("\r\n".utf8) }
            let limit = [8, 12, 1000].randomElement(using: &generator)!
            let traits = content.withUnsafeBufferPointer { EncodedMessage.traitsIfNormalized($0, maximumLineLength: limit) }
            let expected = try? DataEncoder.normalizedWithTraits(content, maximumLineLength: limit)
            if let traits {
                fast += 1
                #expect(expected?.bytes == content, "\(content) is not normalised")
                #expect(expected?.traits.hasLineStartingWithDot == traits.hasLineStartingWithDot, "\(content)")
                #expect(expected?.traits.has8BitBytes == traits.has8BitBytes, "\(content)")
            } else {
                slow += 1
                #expect(expected?.bytes != content, "\(content) is normalised and within \(limit)")
            }
        }
        #expect(fast > 500 && slow > 500, "both ways were seen: \(fast) fast, \(slow) not")
        // Eight-bit and dotted lines past the first word.
        let long = Array("0123456789abcdef\r\n.x\r\n0123456789abcd\u{e9}\r\n".utf8)
        let traits = long.withUnsafeBufferPointer { EncodedMessage.traitsIfNormalized($0) }
        #expect(traits?.hasLineStartingWithDot == true && traits?.has8BitBytes == true)
    }

    @Test func contentWithoutADotAtALineStartIsHeldOnce() throws {
        let message = try EncodedMessage(bytes: Array("Subject: x\r\n\r\nline one\r\nline.two\r\n".utf8))
        #expect(message.dataPieces.count == 2)
        #expect(message.dataPieces.first === message.chunk, "DATA sends the BDAT bytes themselves, not a copy")
        let dotted = try EncodedMessage(bytes: Array("Subject: x\r\n\r\n.hidden\r\n".utf8))
        #expect(dotted.dataPieces.count == 1 && dotted.dataPieces[0] !== dotted.chunk)
    }

    /// A copy with its Message-ID rewritten must be exactly the message a fresh preparation of
    /// the rewritten content gives, or nil: the rewrite skips the preparation's checks, so it
    /// may only make changes those checks cannot see.
    @Test func aCopyWithAnotherMessageIDIsWhatPreparingItsContentGivesOrNothing() throws {
        var generator = SystemRandomNumberGenerator()
        let idAlphabet = Array("<>@.a0\r\n ".utf8) + [0x80, 0xE9]
        var made = 0
        for _ in 0..<5_000 {
            let message = try EncodedMessage(bytes: Self.randomContent(&generator) + Array("<id>".utf8))
            let content = message.chunk.array
            let lower = Int.random(in: 0...content.count, using: &generator)
            let upper = Int.random(in: lower...min(content.count, lower + 6), using: &generator)
            let idLength = Bool.random(using: &generator) ? upper - lower : Int.random(in: 0...6, using: &generator)
            let id = (0..<idLength).map { _ in idAlphabet.randomElement(using: &generator)! }
            guard let copy = message.copy(withMessageID: String(decoding: id, as: UTF8.self), at: lower..<upper) else {
                continue
            }
            made += 1
            let fresh = try EncodedMessage(bytes: Array(content[..<lower]) + id + Array(content[upper...]))
            #expect(copy.chunk.array == fresh.chunk.array, "\(content) \(lower)..<\(upper) \(id)")
            #expect(copy.dataPieces.flatMap(\.array) == fresh.dataPieces.flatMap(\.array), "\(content) \(id)")
            #expect(copy.info == fresh.info, "\(content) \(id)")
            #expect(copy.messageID == String(decoding: id, as: UTF8.self))
            #expect(message.chunk.array == content, "the original is untouched")
        }
        #expect(made > 100, "so few copies could be made that the comparison proves little: \(made)")
    }

    @Test func aMessageIDRewriteThatCouldChangeWhatWasCheckedIsRefused() throws {
        let content = "Message-ID: <0001@x>\r\n.dot\r\n"
        let plain = try EncodedMessage(bytes: Array("Message-ID: <0001@x>\r\nSubject: y\r\n\r\nbody\r\n".utf8))
        let range = 12..<20
        #expect(plain.copy(withMessageID: "<0002@x>", at: range)?.chunk.array
                == Array("Message-ID: <0002@x>\r\nSubject: y\r\n\r\nbody\r\n".utf8))
        #expect(plain.copy(withMessageID: "<002@x>", at: range) == nil, "a shorter id would move every later octet")
        #expect(plain.copy(withMessageID: "<00\r\n@x>", at: range) == nil, "a line break")
        #expect(plain.copy(withMessageID: "<0é2@x>", at: range) == nil, "an 8-bit octet")
        #expect(plain.copy(withMessageID: "<00 2@x>", at: range) == nil, "a space is not in a msg-id")
        #expect(plain.copy(withMessageID: "Subject:", at: 22..<30) == nil, "the range starts a line, so a dot could")
        #expect(plain.copy(withMessageID: "<000002@", at: 16..<24) == nil, "the range holds the line's CRLF")
        let dotted = try EncodedMessage(bytes: Array(content.utf8))
        #expect(dotted.copy(withMessageID: "<0002@x>", at: range) == nil, "the dot-stuffed copy would keep the old id")
    }
}
