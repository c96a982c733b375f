import Foundation
import SluiceCore
import SluiceSink
import SluiceTestSupport
import SluiceTransport
import Testing

@Suite("Content checksums: sluice bench --checksum and sluice sink --verify")
struct ContentChecksumTests {
    static func message(headers: String = "Subject: x\r\n", body: String) -> [UInt8] {
        let field = ContentChecksum.field(forBody: Array(body.utf8))
        return Array(headers.utf8) + field + Array("\r\n\(body)".utf8)
    }

    @Test func theFieldIsTheSHA256OfTheBodyInHex() {
        // The SHA-256 test vector for "abc" (FIPS 180-2, appendix B.1).
        let field = String(decoding: ContentChecksum.field(forBody: Array("abc".utf8)), as: UTF8.self)
        #expect(field == "X-Sluice-Checksum: sha256=ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\r\n")
        #expect(field.utf8.count == ContentChecksum.fieldLength)
    }

    @Test func aMatchingBodyIsVerifiedAndAnyChangeToItIsAMismatch() {
        let good = Self.message(body: "line one\r\nline two\r\n")
        #expect(ContentChecksum.verify(good) == .verified)
        var flipped = good
        flipped[flipped.count - 3] ^= 0x20
        guard case .mismatch = ContentChecksum.verify(flipped) else { Issue.record("a changed octet passed"); return }
        guard case .mismatch = ContentChecksum.verify(Array(good.dropLast(2))) else { Issue.record("a cut body passed"); return }
        // A header field added in front (a relay's Received) changes nothing.
        #expect(ContentChecksum.verify(Array("Received: by relay\r\n".utf8) + good) == .verified)
    }

    @Test func theFieldIsFoundFoldedAndInAnyCase() {
        let body = "hello\r\n"
        let value = String(decoding: ContentChecksum.field(forBody: Array(body.utf8)), as: UTF8.self)
            .dropFirst("X-Sluice-Checksum: ".count).dropLast()  // "\r\n" is one Character
        let folded = "From: a@example.com\r\nx-sluice-CHECKSUM:\r\n \(value.uppercased())\r\nSubject: s\r\n\r\n\(body)"
        #expect(ContentChecksum.verify(Array(folded.utf8)) == .verified)
    }

    @Test func aMessageWithoutTheFieldIsUncheckedAndAMalformedOneIsAMismatch() {
        #expect(ContentChecksum.verify(Array("Subject: x\r\n\r\nbody\r\n".utf8)) == .unchecked)
        #expect(ContentChecksum.verify(Array("X-Sluice-Checksum-Other: 1\r\n\r\nbody\r\n".utf8)) == .unchecked)
        guard case .mismatch = ContentChecksum.verify(Array("X-Sluice-Checksum: md5=abc\r\n\r\nbody\r\n".utf8)) else {
            Issue.record("a malformed checksum passed")
            return
        }
        // In the body, it is not a header field.
        #expect(ContentChecksum.verify(Array("Subject: x\r\n\r\nX-Sluice-Checksum: sha256=00\r\n".utf8)) == .unchecked)
    }

    @Test func aVerifyingSinkRefusesACorruptedMessageKeepsTheRestAndCountsEach() async throws {
        let sink = try await startSink { $0.verifiesChecksums = true }
        let group = EventLoopGroup(numberOfLoops: 1)
        let client = try await RawSession.open(to: sink.localAddress, on: group.loops[0])
        await client.replies(atLeast: 1)
        let good = Self.message(body: "intact\r\n")
        var bad = Self.message(body: "intact\r\n")
        bad[bad.count - 4] = UInt8(ascii: "X")
        let plain = Array("Subject: none\r\n\r\nno checksum\r\n".utf8)
        var script = Array("EHLO c.example\r\n".utf8)
        for content in [good, bad, plain] {
            script += Array("MAIL FROM:<s@example.com>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n".utf8)
            script += content + Array(".\r\n".utf8)
        }
        script += Array("QUIT\r\n".utf8)
        try await client.send(script)
        let replies = await client.replies(atLeast: 15)
        let ends = [replies[5], replies[9], replies[13]]
        #expect(ends.map(\.code.rawValue) == [250, 554, 250], "\(replies)")
        #expect(ends[1].enhancedCode == EnhancedStatusCode("5.6.0") && ends[1].text.contains("does not match"), "\(ends[1])")
        let stored = try await sink.waitForMessages(count: 2)
        #expect(stored.map(\.content) == [good, plain])
        let statistics = sink.statistics
        #expect(statistics.messages == 2)
        #expect(statistics.checksumsVerified == 1 && statistics.checksumMismatches == 1 && statistics.checksumsMissing == 1)
        #expect(statistics.summary.contains("checksums verified 1, mismatched 1, missing 1"))
        await client.collector.waitForClose()
        await sink.shutdown()
        await group.shutdown()
    }
}
