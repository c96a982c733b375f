import PropertyBased
import Synchronization
import Testing
@testable import SluiceCore
import SluiceSink  // the server reads an encoded address back

@Suite("Round-trip properties")
struct RoundTripPropertyTests {
    static let text = Gen<UInt8?>.element(of: Array("abcXYZ019 -_:;,.()<>[]=@".utf8)).map { $0 ?? 0x61 }.array(of: 0...40)
        .map { String(decoding: $0, as: UTF8.self) }
    static let lines = text.array(of: 1...5)
    static let code = Gen.int(in: 200...599)
    static let detail = Gen.int(in: 0...999)

    @Test func repliesParseBackToWhatWasEncoded() async {
        await propertyCheck(count: 1000, input: Self.code, Self.detail, Self.lines) { code, detail, lines in
            let status = SMTPStatusCode(rawValue: code)!
            let enhanced = code / 100 == 3 ? nil : EnhancedStatusCode(statusClass: code / 100, subject: detail % 8, detail: detail)
            // A line that itself begins with an enhanced code would be read as one; the
            // generator's text has no digit-dot-digit-dot-digit start, so each line survives.
            let reply = SMTPReply(code: status, enhancedCode: enhanced, lines: lines)
            var parser = ReplyParser()
            let wire = reply.encoded
            for byte in wire { parser.append([byte]) }
            let parsed = try parser.nextReply()
            #expect(parsed?.code == reply.code)
            #expect(parsed?.enhancedCode == reply.enhancedCode)
            #expect(parsed?.lines == reply.lines.map { String($0) })
            #expect(try parser.nextReply() == nil)
        }
    }

    @Test func sizesAreWrittenInDecimal() async {
        // Every digit count and its edges, then sizes spread across the whole range.
        var sizes = [0, 1, 9, 10, 11, 99, 100, 101, 1_000, 65_535, Int.max]
        var power = 1
        while power <= Int.max / 10 {
            power *= 10
            sizes += [power - 1, power, power + 1]
        }
        let parameters = { (size: Int) in var p = MailParameters(); p.size = size; return p }
        for size in sizes {
            #expect(String(decoding: SMTPCommand.bdat(size: size, last: true).encoded, as: UTF8.self) == "BDAT \(size) LAST\r\n")
            let mail = SMTPCommand.mail(from: nil, parameters(size)).encoded
            #expect(String(decoding: mail, as: UTF8.self) == "MAIL FROM:<> SIZE=\(size)\r\n")
        }
        await propertyCheck(count: 2000, input: Gen.int(in: 0...Int.max), Gen.int(in: 0...99_999)) { large, small in
            for size in [large, small] {
                #expect(String(decoding: SMTPCommand.bdat(size: size, last: false).encoded, as: UTF8.self) == "BDAT \(size)\r\n")
            }
        }
    }

    static let anyBytes = Gen<UInt8?>.element(of: Array("ab.@\r\n\0 <>\"\\[]:é".utf8)).map { $0 ?? 0x61 }.array(of: 0...30)

    @Test func anAddressIsRefusedOrEncodesToExactlyOneLine() async {
        let valid = Counter()
        await propertyCheck(count: 3000, input: Self.anyBytes.map { Array("x".utf8) + $0 + Array("@a.b".utf8) }) { bytes in
            let candidate = String(decoding: bytes, as: UTF8.self)
            guard let address = try? EnvelopeAddress(candidate) else { return }
            valid.increment()
            for command: SMTPCommand in [.mail(from: address, MailParameters()), .recipient(address, RecipientParameters())] {
                let wire = command.encoded
                #expect(wire.suffix(2) == [13, 10])
                #expect(!wire.dropLast(2).contains(13) && !wire.dropLast(2).contains(10) && !wire.contains(0),
                        "one line only: \(candidate.debugDescription)")
                // And the server reads back exactly that address.
                var server = ServerStateMachine(configuration: .init())
                _ = server.connected(secure: false)
                _ = server.bytesReceived(Array("EHLO c\r\nMAIL FROM:<s@example.com> SMTPUTF8\r\n".utf8))
                if case .recipient = command {
                    let reply = server.bytesReceived(wire)
                    #expect(reply == [.write(Array("250 2.1.5 Ok\r\n".utf8))], "\(candidate.debugDescription)")
                }
            }
        }
        // About 130 of the 3,000 are valid (σ ≈ 11): a bound of 100 failed once in a few
        // hundred runs (exactly 100, under TSan in CI). 30 is nine σ below the mean and still
        // proves that the property was checked on valid addresses.
        #expect(valid.value > 30, "the generator must produce valid addresses too (\(valid.value))")
    }
}

final class Counter: Sendable {
    private let count = Atomic<Int>(0)
    func increment() { count.add(1, ordering: .relaxed) }
    var value: Int { count.load(ordering: .relaxed) }
}
