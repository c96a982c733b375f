import PropertyBased
import Testing
@testable import SluiceCore

/// Decodes everything `DataEncoder.dotStuffed` produced, as a server would.
func decodeAsServer(_ wire: [UInt8]) -> (content: [UInt8], progress: DataDecoder.Progress) {
    var decoder = DataDecoder(maximumSize: .max)
    var content: [UInt8] = []
    let progress = decoder.decode(wire, into: &content)
    return (content, progress)
}

@Suite("DATA content")
struct ContentTests {
    private func stuffed(_ text: String) throws -> String {
        String(decoding: try DataEncoder.dotStuffed(Array(text.utf8)), as: UTF8.self)
    }

    @Test func normalisesLineEndingsBeforeStuffing() throws {
        #expect(try stuffed("a\r\nb") == "a\r\nb\r\n.\r\n")
        #expect(try stuffed("a\nb\n") == "a\r\nb\r\n.\r\n")
        #expect(try stuffed("a\rb\r") == "a\r\nb\r\n.\r\n")
        #expect(try stuffed(".start\r\n..two\r\nmid.dle\r\n.") == "..start\r\n...two\r\nmid.dle\r\n..\r\n.\r\n")
        #expect(try stuffed("") == ".\r\n")
        #expect(try stuffed("\r\n") == "\r\n.\r\n")
    }

    @Test(arguments: [
        // The SMTP smuggling sequences: each would end the data early at a lenient server.
        "a\n.\nMAIL FROM:<evil@example.com>\n", "a\r.\rMAIL FROM:<x@y>\r", "a\r\n.\nRCPT TO:<x@y>\r\n",
        "a\n.\r\nDATA\r\n", "a\r.\r\nQUIT", ".\r\n", "\n.\n", "x\r\n.\r\n",
    ])
    func smugglingSequencesNeverEndTheDataEarly(_ attack: String) throws {
        let wire = try DataEncoder.dotStuffed(Array(attack.utf8))
        let (content, progress) = decodeAsServer(wire)
        #expect(progress == .complete(consumed: wire.count), "the only terminator is the last one")
        #expect(content == (try DataEncoder.normalized(Array(attack.utf8))))
    }

    @Test func refusesNULAndOverlongLines() throws {
        #expect { try DataEncoder.dotStuffed(Array("a\u{0}b".utf8)) } throws: { ($0 as? DataEncoder.ContentError)?.kind == .nulByte }
        let longLine = [UInt8](repeating: UInt8(ascii: "x"), count: 999)
        #expect { try DataEncoder.dotStuffed(longLine) } throws: { ($0 as? DataEncoder.ContentError)?.kind == .lineTooLong }
        // 998 octets plus CRLF is exactly the limit, and a stuffed dot does not count.
        #expect(throws: Never.self) { try DataEncoder.dotStuffed([UInt8](repeating: UInt8(ascii: "x"), count: 998)) }
        #expect(throws: Never.self) { try DataEncoder.dotStuffed([UInt8(ascii: ".")] + [UInt8](repeating: 120, count: 997)) }
        #expect(throws: Never.self) { try DataEncoder.dotStuffed(longLine, maximumLineLength: nil) }
    }

    @Test func serverRefusesBareLineEndingsInsideData() {
        for attack in ["a\n.\n", "a\r.\r", "line\nmore\r\n.\r\n", "x\ry\r\n.\r\n"] {
            let (_, progress) = decodeAsServer(Array(attack.utf8))
            guard case .bareLineEnding = progress else {
                Issue.record("\(attack.debugDescription) gave \(progress)")
                continue
            }
        }
    }

    @Test func serverDecodesWhateverTheSplitAndLeavesWhatFollows() throws {
        let wire = try DataEncoder.dotStuffed(Array("Subject: x\r\n\r\n.hidden\r\nbody".utf8)) + Array("QUIT\r\n".utf8)
        for cut in 0...wire.count {
            var decoder = DataDecoder(maximumSize: .max)
            var content: [UInt8] = []
            var total = 0
            var done = false
            for piece in [wire[..<cut], wire[cut...]] where !done {
                switch decoder.decode(piece, into: &content) {
                case .needsMoreData: total += piece.count
                case .complete(let consumed):
                    total += consumed
                    done = true
                case .bareLineEnding: Issue.record("bare line ending at split \(cut)")
                }
            }
            #expect(done)
            #expect(total == wire.count - 6, "QUIT\\r\\n is left for the command reader")
            #expect(content == Array("Subject: x\r\n\r\n.hidden\r\nbody\r\n".utf8))
        }
    }

    @Test func serverKeepsNoMoreThanItsLimit() {
        var decoder = DataDecoder(maximumSize: 10)
        var content: [UInt8] = []
        let line = Array("0123456789012345678901234567890123456789\r\n".utf8)
        for _ in 0..<1000 { _ = decoder.decode(line, into: &content) }
        #expect(content.count == 10)
        #expect(decoder.exceededMaximumSize)
        #expect(decoder.size == 1000 * 42)
    }

    /// Bytes drawn mostly from the characters that matter to framing.
    static let framingBytes = Gen<UInt8?>.element(of: Array(".\r\n\r\nab .".utf8)).map { $0 ?? 0x61 }.array(of: 0...64)

    @Test func stuffingThenUnstuffingGivesTheNormalisedContentForAnyInput() async {
        await propertyCheck(count: 2000, input: Self.framingBytes) { bytes in
            let wire = try DataEncoder.dotStuffed(bytes)
            let (content, progress) = decodeAsServer(wire)
            #expect(progress == .complete(consumed: wire.count), "no premature terminator")
            #expect(content == (try DataEncoder.normalized(bytes)))
            #expect(!content.contains(0))
        }
    }

    @Test func normalisedContentHasNoBareCROrLFForAnyInput() async {
        await propertyCheck(count: 2000, input: Self.framingBytes) { bytes in
            let normalized = try DataEncoder.normalized(bytes)
            for (index, byte) in normalized.enumerated() {
                if byte == 13 { #expect(index + 1 < normalized.count && normalized[index + 1] == 10) }
                if byte == 10 { #expect(index > 0 && normalized[index - 1] == 13) }
            }
        }
    }
}

@Suite("DATA content: what the normalising pass notes")
struct ContentTraitsTests {
    @Test func theTraitsAgreeWithReadingTheNormalisedContentAgain() throws {
        var generator = SystemRandomNumberGenerator()
        let alphabet: [UInt8] = [UInt8(ascii: "."), 13, 10, UInt8(ascii: "a"), UInt8(ascii: " "), 0x80, 0xC3, 0x7F]
        var dotted = 0
        var eightBit = 0
        for _ in 0..<3000 {
            let content = (0..<Int.random(in: 0...40, using: &generator)).map { _ in
                alphabet.randomElement(using: &generator)!
            }
            guard let (bytes, traits) = try? DataEncoder.normalizedWithTraits(content) else {
                Issue.record("no NUL and short lines: \(content)")
                continue
            }
            #expect(bytes == (try? DataEncoder.normalized(content)))
            let startsLineWithDot = bytes.first == UInt8(ascii: ".")
                || zip(bytes, bytes.dropFirst()).contains { $0 == 10 && $1 == UInt8(ascii: ".") }
            #expect(traits.hasLineStartingWithDot == startsLineWithDot, "\(content)")
            #expect(traits.has8BitBytes == bytes.contains { $0 >= 0x80 }, "\(content)")
            if startsLineWithDot { dotted += 1 }
            if traits.has8BitBytes { eightBit += 1 }
        }
        #expect(dotted > 100 && eightBit > 100, "both traits were seen both ways")
        #expect(!(try DataEncoder.normalizedWithTraits(Array("a\r\nb.c\r\n".utf8))).traits.hasLineStartingWithDot)
        #expect((try DataEncoder.normalizedWithTraits(Array("a\n.b".utf8))).traits.hasLineStartingWithDot)
    }
}

/// The DATA decoder against the rule applied a byte at a time, on wires where CR, LF and dots
/// fall at every offset of the eight-byte steps the decoder scans in.
@Suite("DATA decoding against a byte-at-a-time reference")
struct DataDecoderReferenceTests {
    /// RFC 5321 §4.5.2 with only CRLF ending a line, one byte at a time.
    static func reference(_ wire: [UInt8]) -> (content: [UInt8], progress: DataDecoder.Progress) {
        enum State { case lineStart, middle, carriageReturn, dot, dotCarriageReturn }
        var state = State.lineStart
        var content: [UInt8] = []
        for (index, byte) in wire.enumerated() {
            switch (state, byte) {
            case (.lineStart, UInt8(ascii: ".")): state = .dot
            case (.lineStart, 13), (.middle, 13): state = .carriageReturn
            case (.carriageReturn, 10):
                content += [13, 10]
                state = .lineStart
            case (.dot, 13): state = .dotCarriageReturn
            case (.dotCarriageReturn, 10): return (content, .complete(consumed: index + 1))
            case (_, 10), (.carriageReturn, _), (.dotCarriageReturn, _): return (content, .bareLineEnding(consumed: index + 1))
            case (.dot, _), (.lineStart, _), (.middle, _):
                content.append(byte)
                state = .middle
            }
        }
        return (content, .needsMoreData)
    }

    @Test func agreesWithTheByteAtATimeRule() {
        var generator = SystemRandomNumberGenerator()
        // 0x8A and 0x8D share CR's and LF's low bits; 0x0B and 0x0C are what a word-wide test
        // with a borrow would also mark after an LF or a CR.
        let rare: [UInt8] = [13, 10, UInt8(ascii: "."), 0x8A, 0x8D, 0x0B, 0x0C]
        var endings = 0
        for trial in 0..<3000 {
            // Mostly plain bytes, so that runs are long enough for several steps.
            let length = Int.random(in: 0...300, using: &generator)
            let rareShare = trial % 3 == 0 ? 2 : 30
            var wire = (0..<length).map { _ in
                Int.random(in: 0..<rareShare, using: &generator) == 0
                    ? rare.randomElement(using: &generator)! : UInt8(ascii: "x")
            }
            if trial % 2 == 0 {
                // Well-formed lines of every length, then maybe a terminator.
                wire = []
                for _ in 0..<Int.random(in: 0...6, using: &generator) {
                    if Bool.random(using: &generator) { wire.append(UInt8(ascii: ".")) }
                    wire += (0..<Int.random(in: 0...40, using: &generator)).map { _ in UInt8(ascii: "y") }
                    wire += [13, 10]
                }
                if Bool.random(using: &generator) { wire += Array(".\r\nMAIL".utf8) }
            }
            var decoder = DataDecoder(maximumSize: .max)
            var content: [UInt8] = []
            let progress = decoder.decode(wire, into: &content)
            let expected = Self.reference(wire)
            #expect(content == expected.content && progress == expected.progress, "\(wire)")
            if case .needsMoreData = progress {} else { endings += 1 }
        }
        #expect(endings > 500, "terminators and bare line endings were both exercised")
    }
}
