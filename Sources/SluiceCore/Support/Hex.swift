/// Hexadecimal for the package's tokens and digests.
package enum Hex {
    /// Lower-case hexadecimal, two digits a byte (CRAM-MD5's digest, the outbox's MACs).
    package static func lowercase(_ bytes: some Collection<UInt8>) -> String {
        // Called from other modules, the generic loop is not specialised: a byte at a time
        // through the protocol's witnesses. Contiguous bytes take the concrete loop.
        if let text = bytes.withContiguousStorageIfAvailable(lowercase) { return text }
        return Array(bytes).withUnsafeBufferPointer { lowercase($0) }
    }

    private static func lowercase(_ bytes: UnsafeBufferPointer<UInt8>) -> String {
        String(unsafeUninitializedCapacity: bytes.count * 2) { text in
            for (index, byte) in bytes.enumerated() {
                text[2 * index] = digit(byte >> 4, upper: false)
                text[2 * index + 1] = digit(byte & 0xF, upper: false)
            }
            return bytes.count * 2
        }
    }

    /// The ASCII digit for `value` (0 to 15).
    package static func digit(_ value: UInt8, upper: Bool) -> UInt8 {
        value < 10 ? UInt8(ascii: "0") + value : (upper ? UInt8(ascii: "A") : UInt8(ascii: "a")) + value - 10
    }

    /// Whether two byte strings are equal, in time that depends only on their lengths: for
    /// MACs and tokens a peer sends, which an early exit would let it guess byte by byte.
    package static func constantTimeEqual(_ lhs: some Collection<UInt8>, _ rhs: some Collection<UInt8>) -> Bool {
        guard lhs.count == rhs.count else { return false }
        return zip(lhs, rhs).reduce(UInt8(0)) { $0 | ($1.0 ^ $1.1) } == 0
    }
}
