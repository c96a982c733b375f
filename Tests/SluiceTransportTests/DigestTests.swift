import SluiceTransport
import Testing

/// HMAC against RFC 2202 and RFC 4231's published vectors, one-shot and with a key made once.
@Suite("Digest")
struct DigestTests {
    static let vectors: [(Digest.Algorithm, key: [UInt8], data: String, mac: String)] = [
        // RFC 2202 test case 2 (MD5 and SHA-1), RFC 4231 test case 2 (SHA-256): key "Jefe".
        (.md5, Array("Jefe".utf8), "what do ya want for nothing?", "750c783e6ab0b503eaa86e310a5db738"),
        (.sha1, Array("Jefe".utf8), "what do ya want for nothing?", "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"),
        (.sha256, Array("Jefe".utf8), "what do ya want for nothing?",
         "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"),
        // RFC 4231 test case 6: a key longer than the block, hashed first.
        (.sha256, [UInt8](repeating: 0xaa, count: 131), "Test Using Larger Than Block-Size Key - Hash Key First",
         "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"),
    ]

    static func hex(_ bytes: [UInt8]) -> String {
        bytes.map { String($0, radix: 16).count == 1 ? "0" + String($0, radix: 16) : String($0, radix: 16) }.joined()
    }

    @Test func theOneShotAndTheKeyMadeOnceGiveThePublishedMACs() {
        for (algorithm, key, data, mac) in Self.vectors {
            #expect(Self.hex(Digest.hmac(algorithm, key: key, data: Array(data.utf8))) == mac)
            let made = Digest.HMACKey(algorithm, key: key)
            #expect(Self.hex(made.mac(data.utf8)) == mac)
            #expect(Self.hex(made.mac(Array(data.utf8))) == mac, "used again, it starts afresh")
            #expect(Self.hex(made.mac(Array(data.utf8).lazy.map { $0 })) == mac, "from a collection without contiguous storage")
        }
    }

    @Test func oneKeyServesManyThreadsAtOnce() async {
        let key = Digest.HMACKey(.sha256, key: Array("Jefe".utf8))
        let expected = (0..<64).map { Digest.hmac(.sha256, key: Array("Jefe".utf8), data: Array("message \($0)".utf8)) }
        await withTaskGroup(of: Bool.self) { tasks in
            for worker in 0..<4 {
                tasks.addTask {
                    var right = true
                    for round in 0..<200 {
                        let index = (worker * 17 + round) % 64
                        right = right && key.mac("message \(index)".utf8) == expected[index]
                    }
                    return right
                }
            }
            for await right in tasks { #expect(right) }
        }
    }
}
