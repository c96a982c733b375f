package import SluiceCore

/// OpenSSL's primitives for SASL (CRAM-MD5, SCRAM).
package struct OpenSSLCryptography: SASLCryptography {
    package init() {}

    private func map(_ algorithm: SASLHashAlgorithm) -> Digest.Algorithm {
        switch algorithm {
        case .md5: .md5
        case .sha1: .sha1
        case .sha256: .sha256
        }
    }
    package func hash(_ algorithm: SASLHashAlgorithm, _ data: [UInt8]) -> [UInt8] { Digest.hash(map(algorithm), data) }
    package func hmac(_ algorithm: SASLHashAlgorithm, key: [UInt8], data: [UInt8]) -> [UInt8] {
        Digest.hmac(map(algorithm), key: key, data: data)
    }
    package func pbkdf2(_ algorithm: SASLHashAlgorithm, password: [UInt8], salt: [UInt8], iterations: Int, length: Int) -> [UInt8] {
        Digest.pbkdf2(map(algorithm), password: password, salt: salt, iterations: iterations, length: length)
    }
    package func randomBytes(_ count: Int) -> [UInt8] { Digest.randomBytes(count) }
}
