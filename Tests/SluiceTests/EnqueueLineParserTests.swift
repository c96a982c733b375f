import Foundation
@testable import SluiceCLI
import Testing

/// `outbox enqueue` reads its JSON lines with a parser of its own, and asks JSONDecoder only
/// for the lines that parser leaves: the two must agree on every line the parser answers.
@Suite struct EnqueueLineParserTests {
    typealias Line = OutboxCommand.Enqueue.Line

    @Test func theUsualLinesAreReadWithoutJSONDecoder() throws {
        let line = #"{"from": "a@example.com", "to": ["b@example.org", "c@example.org"], "raw": "Subject: Gr\u00fc\u00dfe \ud83d\ude00\r\n\r\n\"hi\"\\", "idempotencyKey": "k/1", "notBefore": "2026-12-24T08:00:00Z"}"#
        let parsed = try #require(EnqueueLineParser.parse(Array(line.utf8)[...]))
        #expect(parsed == Line(from: "a@example.com", to: ["b@example.org", "c@example.org"], eml: nil,
                               raw: "Subject: Grüße 😀\r\n\r\n\"hi\"\\", idempotencyKey: "k/1",
                               notBefore: "2026-12-24T08:00:00Z"))
        #expect(EnqueueLineParser.parse(Array(#" { "to" : [ ] , "from":"" , "eml":"é.eml" } "#.utf8)[...])
                == Line(from: "", to: [], eml: "é.eml"))
    }

    @Test(arguments: [
        #"{"from": "a", "to": ["b"], "x": 1}"#,  // another member: JSONDecoder ignores it
        #"{"from": "a", "to": ["b"], "eml": null}"#,  // null: JSONDecoder reads nil
        #"{"from": "a", "from": "b", "to": []}"#,  // twice
        #"{"from": "\ud800", "to": []}"#,  // a lone surrogate
        #"{"from": "a", "to": "b"}"#,  // not an array
        #"{"from": "a"}"#,  // no "to"
        #"{"from": "a", "to": []} x"#,  // something after the object
        "{\"from\": \"a\u{1}\", \"to\": []}",  // a control character not escaped
    ])
    func anythingElseIsLeftToJSONDecoder(line: String) {
        #expect(EnqueueLineParser.parse(Array(line.utf8)[...]) == nil)
    }

    /// Random lines from the parts JSON lines are made of, well formed and not: wherever the
    /// parser answers, JSONDecoder answers the same.
    @Test func onRandomLinesItAgreesWithJSONDecoderWheneverItAnswers() throws {
        var generator = SystemRandomNumberGenerator()
        let goodParts: [[UInt8]] = [
            Array("a".utf8), Array("@example.org".utf8), Array("é".utf8), Array("😀".utf8), Array(#"\""#.utf8),
            Array(#"\\"#.utf8), Array(#"\/"#.utf8), Array(#"\n"#.utf8), Array(#"\r\t\b\f"#.utf8), Array(#"\u00e9"#.utf8),
            Array(#"\u0000"#.utf8), Array(#"\uD83D\uDE00"#.utf8), [0x7F], Array(" ".utf8),
        ]
        let badParts: [[UInt8]] = [
            Array(#"\ud83d"#.utf8), Array(#"\uDE00"#.utf8), Array(#"\u12"#.utf8), Array(#"\x"#.utf8), [0xFF], [0xC3], [0x01],
        ]
        let names = ["from", "to", "eml", "raw", "idempotencyKey", "notBefore", "other", "fr\\u006fm"]
        func space() -> [UInt8] { [[], [], [0x20], [0x09], [0x0D], [0x20, 0x20]].randomElement(using: &generator)! }
        func string() -> [UInt8] {
            var bytes: [UInt8] = [0x22]
            for _ in 0..<Int.random(in: 0..<4, using: &generator) {
                let bad = Int.random(in: 0..<20, using: &generator) == 0
                bytes += (bad ? badParts : goodParts).randomElement(using: &generator)!
            }
            return bytes + (Int.random(in: 0..<40, using: &generator) == 0 ? [] : [0x22])
        }
        func value(for name: String) -> [UInt8] {
            let roll = Int.random(in: 0..<40, using: &generator)
            switch roll {
            case 0: return Array("null".utf8)
            case 1: return Array("12".utf8)
            case 2: return Array("{}".utf8)
            default:
                guard name == "to" ? roll < 36 : roll == 3 else { return string() }
                let strings = (0..<Int.random(in: 0..<3, using: &generator)).map { _ in space() + string() + space() }
                return [0x5B] + Array(strings.joined(separator: [0x2C])) + [0x5D]
            }
        }
        var answered = 0
        for _ in 0..<20_000 {
            var chosen = ["from", "to"] + names.filter { _ in Int.random(in: 0..<4, using: &generator) == 0 }
            chosen.shuffle(using: &generator)
            if Int.random(in: 0..<10, using: &generator) == 0 { chosen.removeFirst() }
            let members = chosen.map { name in
                space() + Array("\"\(name)\"".utf8) + space() + [0x3A] + space() + value(for: name) + space()
            }
            var line = space() + [0x7B] + Array(members.joined(separator: [0x2C])) + [0x7D] + space()
            switch Int.random(in: 0..<30, using: &generator) {
            case 0: line.removeLast(Int.random(in: 1...line.count, using: &generator))
            case 1: line += Array("x".utf8)
            case 2: line += Array(",".utf8)
            default: break
            }
            let reference = try? JSONDecoder().decode(Line.self, from: Data(line))
            guard let parsed = EnqueueLineParser.parse(line[...]) else { continue }
            answered += 1
            #expect(parsed == reference, "\(String(decoding: line, as: UTF8.self))")
        }
        #expect(answered > 2_000, "the random lines reached the parser's answers often enough: \(answered)")
    }
}
