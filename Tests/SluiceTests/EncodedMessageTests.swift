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

    @Test func contentWithoutADotAtALineStartIsHeldOnce() throws {
        let message = try EncodedMessage(bytes: Array("Subject: x\r\n\r\nline one\r\nline.two\r\n".utf8))
        #expect(message.dataPieces.count == 2)
        #expect(message.dataPieces.first === message.chunk, "DATA sends the BDAT bytes themselves, not a copy")
        let dotted = try EncodedMessage(bytes: Array("Subject: x\r\n\r\n.hidden\r\n".utf8))
        #expect(dotted.dataPieces.count == 1 && dotted.dataPieces[0] !== dotted.chunk)
    }
}
