import COpenSSL

/// Hashes, HMAC, PBKDF2 and random bytes from OpenSSL's libcrypto, for SASL (and later DKIM)
/// in the layers above, which do not import C.
public enum Digest {
    /// A hash algorithm.
    public enum Algorithm: Sendable, Hashable {
        /// MD5 (only for legacy protocols such as CRAM-MD5).
        case md5
        /// SHA-1.
        case sha1
        /// SHA-256.
        case sha256

        /// OpenSSL's name for it.
        fileprivate var name: String {
            switch self {
            case .md5: "MD5"
            case .sha1: "SHA1"
            case .sha256: "SHA256"
            }
        }

        fileprivate var evp: OpaquePointer {
            switch self {
            case .md5: EVP_md5()
            case .sha1: EVP_sha1()
            case .sha256: EVP_sha256()
            }
        }

        /// The digest length in bytes.
        public var length: Int {
            switch self {
            case .md5: 16
            case .sha1: 20
            case .sha256: 32
            }
        }
    }

    /// The digest of `data`.
    public static func hash(_ algorithm: Algorithm, _ data: [UInt8]) -> [UInt8] {
        var output = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        let ok = EVP_Digest(data, data.count, &output, &length, algorithm.evp, nil)
        precondition(ok == 1, "EVP_Digest failed: \(TLSError.drainErrorQueue())")
        return Array(output.prefix(Int(length)))
    }

    /// HMAC of `data` under `key`.
    public static func hmac(_ algorithm: Algorithm, key: [UInt8], data: [UInt8]) -> [UInt8] {
        var output = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        let result = key.withUnsafeBytes { keyBytes in
            HMAC(algorithm.evp, keyBytes.baseAddress, Int32(key.count), data, data.count, &output, &length)
        }
        precondition(result != nil, "HMAC failed: \(TLSError.drainErrorQueue())")
        return Array(output.prefix(Int(length)))
    }

    /// An HMAC key made once and used for many messages: the digest is looked up and the
    /// key's blocks hashed when it is made, so each ``mac(_:)`` costs about a third of
    /// ``Digest/hmac(_:key:data:)``. Any thread may use it at once.
    public final class HMACKey: @unchecked Sendable {
        // Read only after init: each MAC works on a copy of it (cssl_hmac).
        private let context: OpaquePointer
        private let length: Int

        /// A key for HMAC with `algorithm`.
        public init(_ algorithm: Algorithm, key: [UInt8]) {
            let context = key.withUnsafeBufferPointer { bytes in
                cssl_hmac_key(algorithm.name, bytes.baseAddress, bytes.count)
            }
            guard let context else { preconditionFailure("HMAC key failed: \(TLSError.drainErrorQueue())") }
            self.context = context
            length = algorithm.length
        }

        deinit { EVP_MAC_CTX_free(context) }

        /// The HMAC of `data`.
        public func mac(_ data: some Collection<UInt8>) -> [UInt8] {
            [UInt8](unsafeUninitializedCapacity: length) { output, count in
                let written = data.withContiguousStorageIfAvailable { bytes in
                    cssl_hmac(context, bytes.baseAddress, bytes.count, output.baseAddress, output.count)
                } ?? Array(data).withUnsafeBufferPointer { bytes in
                    cssl_hmac(context, bytes.baseAddress, bytes.count, output.baseAddress, output.count)
                }
                precondition(written == length, "HMAC failed: \(TLSError.drainErrorQueue())")
                count = written
            }
        }
    }

    /// PBKDF2 with HMAC of `algorithm` (RFC 8018).
    public static func pbkdf2(_ algorithm: Algorithm, password: [UInt8], salt: [UInt8], iterations: Int, length: Int) -> [UInt8] {
        var output = [UInt8](repeating: 0, count: length)
        let ok = password.withUnsafeBufferPointer { passwordBytes in
            passwordBytes.withMemoryRebound(to: CChar.self) { passwordChars in
                PKCS5_PBKDF2_HMAC(passwordChars.baseAddress, Int32(password.count), salt, Int32(salt.count),
                                  Int32(iterations), algorithm.evp, Int32(length), &output)
            }
        }
        precondition(ok == 1, "PKCS5_PBKDF2_HMAC failed: \(TLSError.drainErrorQueue())")
        return output
    }

    /// `count` cryptographically random bytes.
    public static func randomBytes(_ count: Int) -> [UInt8] {
        var output = [UInt8](repeating: 0, count: count)
        let ok = RAND_bytes(&output, Int32(count))
        precondition(ok == 1, "RAND_bytes failed: \(TLSError.drainErrorQueue())")
        return output
    }
}
