import COpenSSL

/// A TLS failure: a certificate that did not verify, a handshake the peer refused, a bad key
/// or certificate file.
///
/// Each verification failure has its own ``Kind``, and the error keeps OpenSSL's verify result
/// and error queue in words, so a log line says exactly why a peer was not trusted.
public struct TLSError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The kind of TLS failure, in a form that can be matched.
    public struct Kind: Hashable, Sendable, CustomStringConvertible {
        /// The kind in words, as messages say it.
        public let description: String
        private init(_ description: String) { self.description = description }

        /// The peer's certificate (or one in its chain) has expired.
        public static let certificateExpired = Kind("certificate expired")
        /// The peer's certificate is not valid yet.
        public static let certificateNotYetValid = Kind("certificate not yet valid")
        /// The peer's certificate does not chain to a trusted root.
        public static let certificateUntrusted = Kind("certificate untrusted")
        /// The peer presented a self-signed certificate that is not trusted.
        public static let selfSignedCertificate = Kind("self-signed certificate")
        /// The certificate is valid but not for the host name or IP address connected to.
        public static let hostnameMismatch = Kind("host name mismatch")
        /// The certificate failed verification for another reason (revoked, bad signature,
        /// wrong purpose); ``TLSError/verifyMessage`` says which.
        public static let certificateInvalid = Kind("certificate invalid")
        /// The handshake failed (no shared protocol or cipher, the peer sent an alert).
        public static let handshakeFailed = Kind("handshake failed")
        /// A TLS record after the handshake could not be processed.
        public static let protocolError = Kind("TLS protocol error")
        /// A certificate, key or trust file could not be loaded, or they do not match.
        public static let invalidConfiguration = Kind("invalid TLS configuration")

        /// Maps OpenSSL's `X509_V_ERR_*` verify result to a kind.
        static func verification(_ result: Int) -> Kind {
            switch Int32(result) {
            case X509_V_ERR_CERT_HAS_EXPIRED, X509_V_ERR_CRL_HAS_EXPIRED:
                return .certificateExpired
            case X509_V_ERR_CERT_NOT_YET_VALID, X509_V_ERR_CRL_NOT_YET_VALID:
                return .certificateNotYetValid
            case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT, X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
                return .selfSignedCertificate
            case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY, X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT,
                X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE, X509_V_ERR_CERT_UNTRUSTED:
                return .certificateUntrusted
            case X509_V_ERR_HOSTNAME_MISMATCH, X509_V_ERR_IP_ADDRESS_MISMATCH:
                return .hostnameMismatch
            default:
                return .certificateInvalid
            }
        }
    }

    /// What went wrong.
    public let kind: Kind
    /// OpenSSL's verify result (`X509_V_ERR_*`), when certificate verification failed.
    public let verifyResult: Int?
    /// OpenSSL's words for ``verifyResult``, e.g. `certificate has expired`.
    public let verifyMessage: String?
    /// OpenSSL's error queue at the time of the failure, oldest first.
    public let openSSLErrors: [String]
    /// What the TLS layer was doing.
    public let context: String

    init(_ kind: Kind, context: String, verifyResult: Int? = nil, verifyMessage: String? = nil,
         openSSLErrors: [String] = []) {
        self.kind = kind
        self.context = context
        self.verifyResult = verifyResult
        self.verifyMessage = verifyMessage
        self.openSSLErrors = openSSLErrors
    }

    /// Whether the peer's certificate (or our own TLS settings) is at fault, so that trying
    /// again will fail the same way: expired, not yet valid, untrusted, self-signed, for
    /// another host, invalid, or a configuration that cannot be used.
    public var isCertificateFailure: Bool {
        kind == .certificateExpired || kind == .certificateNotYetValid || kind == .certificateUntrusted
            || kind == .selfSignedCertificate || kind == .hostnameMismatch || kind == .certificateInvalid
            || kind == .invalidConfiguration
    }

    public var description: String {
        var text = "\(kind) (\(context))"
        if let verifyResult {
            text += ": verify error \(verifyResult)"
            // OpenSSL's words for it, unless they are the kind's own ("self-signed certificate").
            if let verifyMessage, verifyMessage.lowercased() != kind.description { text += ": \(verifyMessage)" }
        }
        if !openSSLErrors.isEmpty { text += ": " + openSSLErrors.joined(separator: "; ") }
        return text
    }

    /// Drains OpenSSL's thread-local error queue into readable strings, oldest first.
    static func drainErrorQueue() -> [String] {
        var errors: [String] = []
        while true {
            let code = ERR_get_error()
            if code == 0 { break }
            var buffer = [CChar](repeating: 0, count: 256)
            ERR_error_string_n(code, &buffer, buffer.count)
            errors.append(String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self))
        }
        return errors
    }

    /// An error from a failed OpenSSL call, with the error queue drained into it.
    static func openSSL(_ kind: Kind, _ context: String) -> TLSError {
        TLSError(kind, context: context, openSSLErrors: drainErrorQueue())
    }
}
