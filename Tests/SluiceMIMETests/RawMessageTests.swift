import Foundation
import SluiceMIME
import Testing

@Suite("RawMessage")
struct RawMessageTests {
    @Test func lineEndingsAreNormalisedToCRLFAndAFinalCRLFAdded() throws {
        let message = try RawMessage(Array("From: a@b.c\nSubject: x\r\n\r\nline one\rline two\nlast".utf8))
        #expect(message.bytes == Array("From: a@b.c\r\nSubject: x\r\n\r\nline one\r\nline two\r\nlast\r\n".utf8))
        #expect(message.headerLength == "From: a@b.c\r\nSubject: x\r\n\r\n".utf8.count)
        #expect(!message.has8BitBytes)
    }

    @Test func headersAreReadUnfoldedAndCaseInsensitively() throws {
        let message = try RawMessage(Array("From: a@b.c\r\nSubject: a long\r\n\tfolded subject\r\nmessage-id: <1@b.c>\r\n\r\nbody: not a header\r\n".utf8))
        #expect(message.headerValues("subject") == ["a long\tfolded subject"])
        #expect(message.messageID == "<1@b.c>")
        #expect(message.headerValues("body").isEmpty, "the body is not the header section")
        let several = try RawMessage(Array(("From: a@b.c\r\nReceived: one \r\nTo: a@b.c,\r\n  d@e.f\r\n\t, g@h.i\t\r\n"
            + "received:\ttwo\r\nX: Grüße\r\n\r\nReceived: body\r\n").utf8))
        #expect(several.headerValues("Received") == ["one", "two"])
        #expect(several.headerValues("TO") == ["a@b.c,  d@e.f\t, g@h.i"], "folds joined, the ends trimmed")
        #expect(several.headerValues("x") == ["Grüße"])
        #expect(several.headerValues("Receive").isEmpty)
    }

    @Test(arguments: [
        ("", MessageError.Kind.noHeaders),
        ("\r\nbody\r\n", .noHeaders),
        ("Subject: no sender\r\n\r\nbody\r\n", .missingFrom),
        ("From: a@b.c\r\nnot a header line\r\n\r\n", .malformedHeader),
        (" From: a@b.c\r\n\r\n", .malformedHeader),
        ("From: a@b.c\r\nBad Name: x\r\n\r\n", .malformedHeader),
        ("From: a@b.c\r\n\r\nNUL \u{0} here\r\n", .nulByte),
        ("From: a@b.c\r\n\r\n" + String(repeating: "x", count: 999) + "\r\n", .lineTooLong),
    ])
    func malformedMessagesAreTypedErrorsNeverRepaired(text: String, kind: MessageError.Kind) {
        #expect { try RawMessage(Array(text.utf8)) } throws: { ($0 as? MessageError)?.kind == kind }
    }

    @Test func aLineOf998OctetsIsAllowedAndEightBitIsNoted() throws {
        let message = try RawMessage(Array(("From: a@b.c\r\n\r\n" + String(repeating: "x", count: 998) + "\r\nGrüße\r\n").utf8))
        #expect(message.has8BitBytes)
    }

    @Test func aBareLFCannotSmuggleAnEndOfData() throws {
        // "\n.\n" would end the data for a lenient server; normalised, it is an ordinary line.
        let message = try RawMessage(Array("From: a@b.c\r\n\r\nfirst\n.\nMAIL FROM:<x@y>\n".utf8))
        #expect(message.bytes == Array("From: a@b.c\r\n\r\nfirst\r\n.\r\nMAIL FROM:<x@y>\r\n".utf8))
    }

    @Test func aFileIsReadWholeAndAnEmptyOneIsJudgedLikeNoBytes() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-raw-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // Several of the reader's 64 KiB chunks and a short last one.
        let text = "From: a@b.c\r\nSubject: big\r\n\r\n" + (0..<4_000).map { "line \($0) of the body\r\n" }.joined()
        let path = directory + "/big.eml"
        try #require(FileManager.default.createFile(atPath: path, contents: Data(text.utf8)))
        #expect(try RawMessage(contentsOfFile: path).bytes == Array(text.utf8))

        // Empty is the content's problem, not the file's: the same error as no bytes at all
        // (and, under the address sanitizer, no leak: Foundation's readers leak 4 KiB here).
        let empty = directory + "/empty.eml"
        try #require(FileManager.default.createFile(atPath: empty, contents: nil))
        var fromBytes: MessageError?
        do { _ = try RawMessage([UInt8]()) } catch { fromBytes = error }
        #expect(fromBytes != nil && fromBytes?.kind != .unreadable)
        #expect { try RawMessage(contentsOfFile: empty) } throws: { ($0 as? MessageError)?.kind == fromBytes?.kind }

        #expect { try RawMessage(contentsOfFile: directory) } throws: {
            guard let error = $0 as? MessageError else { return false }
            return error.kind == .unreadable && error.description.contains(directory)
        }
    }

    @Test func anUnreadableFileIsATypedError() {
        #expect { try RawMessage(contentsOfFile: "/nonexistent/message.eml") } throws: {
            ($0 as? MessageError)?.kind == .unreadable
        }
    }

    /// An array already in canonical form is taken without the byte-by-byte pass; anything
    /// else goes through it. Both must judge every input alike: the same bytes, header
    /// length, 8-bit flag, or the same error on the same line. An `ArraySlice` always takes
    /// the byte-by-byte path, so it is the reference.
    @Test func theCanonicalFastPathJudgesEveryInputAsTheByteByBytePathDoes() {
        var generator = SystemRandomNumberGenerator()
        var canonical = 0
        let pieces: [[UInt8]] = [
            Array("x".utf8), Array("ü".utf8), [0], [13], [10], [13, 10], [13, 10], [13, 10], [13, 13, 10],
            Array(": ".utf8), Array(" ".utf8), Array("\t".utf8), Array(String(repeating: "y", count: 400).utf8),
        ]
        for _ in 0..<20_000 {
            var bytes = Array("From: a@b.c\r\n".utf8)
            if Int.random(in: 0..<8, using: &generator) == 0 { bytes = [] }
            for _ in 0..<Int.random(in: 0..<12, using: &generator) {
                bytes += pieces.randomElement(using: &generator)!
            }
            if Int.random(in: 0..<2, using: &generator) == 0 { bytes += [13, 10] }
            let fast = Result { () throws(MessageError) in try RawMessage(bytes) }
            let reference = Result { () throws(MessageError) in try RawMessage(bytes[...]) }
            if case .success(let message) = fast, message.bytes == bytes { canonical += 1 }
            switch (fast, reference) {
            case (.success(let a), .success(let b)):
                #expect(a == b, "\(bytes)")
            case (.failure(let a), .failure(let b)):
                #expect(a.kind == b.kind && a.line == b.line, "\(bytes): \(a) against \(b)")
            default:
                Issue.record("\(bytes): \(fast) against \(reference)")
            }
        }
        #expect(canonical > 1_000, "the inputs reached the fast path often enough: \(canonical)")
    }
}
