import COpenSSL

/// A private key for signatures (DKIM), read from PEM — PKCS#1 (`BEGIN RSA PRIVATE KEY`) or
/// PKCS#8 (`BEGIN PRIVATE KEY`) — by OpenSSL's libcrypto.
///
/// It is immutable once read; OpenSSL allows one key to sign on many threads at once, each
/// signature with a context of its own.
public final class SigningKey: @unchecked Sendable {
    /// The kind of key.
    public enum Kind: Sendable, Hashable {
        /// RSA, with its modulus size in bits; signs SHA-256 with PKCS #1 v1.5.
        case rsa(bits: Int)
        /// Ed25519 (RFC 8032, PureEdDSA).
        case ed25519
    }

    /// Why a key cannot be used.
    public struct KeyError: Error, CustomStringConvertible, Sendable {
        public let description: String
    }

    /// The kind of key.
    public let kind: Kind
    private let key: OpaquePointer

    /// Reads a private key from PEM text.
    public init(pem: [UInt8]) throws(KeyError) {
        let parsed: OpaquePointer? = pem.withUnsafeBytes { buffer in
            guard let bio = BIO_new_mem_buf(buffer.baseAddress, Int32(buffer.count)) else { return nil }
            defer { BIO_free(bio) }
            return PEM_read_bio_PrivateKey(bio, nil, nil, nil)
        }
        guard let parsed else {
            throw KeyError(description: "not a PEM private key (PKCS#1 or PKCS#8): \(TLSError.drainErrorQueue())")
        }
        switch EVP_PKEY_get_base_id(parsed) {
        case EVP_PKEY_RSA:
            kind = .rsa(bits: Int(EVP_PKEY_get_bits(parsed)))
        case EVP_PKEY_ED25519:
            kind = .ed25519
        default:
            EVP_PKEY_free(parsed)
            throw KeyError(description: "the key is neither RSA nor Ed25519")
        }
        key = parsed
    }

    /// Reads a private key from a PEM file.
    public convenience init(pemFile path: String) throws(KeyError) {
        guard let file = fopen(path, "rb") else { throw KeyError(description: "cannot read \(path)") }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4_096)
        while true {
            let count = fread(&buffer, 1, buffer.count, file)
            if count == 0 { break }
            bytes += buffer[0..<count]
            if bytes.count > 1 << 20 { throw KeyError(description: "\(path) is too large to be a key") }
        }
        try self.init(pem: bytes)
    }

    deinit { EVP_PKEY_free(key) }

    /// Signs `data`: RSA signs its SHA-256 digest (RSASSA-PKCS1-v1_5), Ed25519 signs it as it is.
    public func sign(_ data: [UInt8]) throws(KeyError) -> [UInt8] {
        guard let context = EVP_MD_CTX_new() else { throw KeyError(description: "out of memory") }
        defer { EVP_MD_CTX_free(context) }
        let digest: OpaquePointer? = kind == .ed25519 ? nil : EVP_sha256()
        guard EVP_DigestSignInit(context, nil, digest, nil, key) == 1 else {
            throw KeyError(description: "cannot sign: \(TLSError.drainErrorQueue())")
        }
        var length = 0
        guard EVP_DigestSign(context, nil, &length, data, data.count) == 1 else {
            throw KeyError(description: "cannot sign: \(TLSError.drainErrorQueue())")
        }
        var signature = [UInt8](repeating: 0, count: length)
        guard EVP_DigestSign(context, &signature, &length, data, data.count) == 1 else {
            throw KeyError(description: "cannot sign: \(TLSError.drainErrorQueue())")
        }
        return Array(signature.prefix(length))
    }
}
