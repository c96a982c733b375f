import COpenSSL

/// One TLS session over memory BIOs: ciphertext in, plaintext out, and the reverse. It does
/// no I/O; the connection feeds it what the socket read and writes what it produced.
///
/// Used on one event loop thread only. Each OpenSSL call is preceded by `ERR_clear_error()`
/// and a failure drains the error queue into the thrown ``TLSError``.
final class TLSSession {
    private let context: TLSContext
    private let ssl: OpaquePointer
    /// Ciphertext from the peer, written by the connection, read by OpenSSL.
    private let incoming: OpaquePointer
    /// Ciphertext for the peer, written by OpenSSL, read by the connection.
    private let outgoing: OpaquePointer
    private let peerName: String?

    /// What a read produced.
    enum ReadResult {
        /// This many plaintext bytes were read into the buffer.
        case bytes(Int)
        /// No complete record is buffered; feed more ciphertext.
        case needsMoreData
        /// The peer sent close_notify.
        case closed
    }

    /// Starts a session. For a client, `serverName` is sent as SNI (when it is a DNS name) and
    /// checked against the certificate (DNS names, or IP literals against IP SANs) unless the
    /// context's verification says otherwise.
    init(context: TLSContext, serverName: String?) throws(TLSError) {
        // The `SSL*` has one owner at a time: `makeSession` until it is fully configured (it
        // frees it on any failure), then this object, whose deinit frees it. Nothing can fail
        // after the object owns it, so it is never freed twice.
        let ssl = try Self.makeSession(context: context, serverName: serverName)
        self.context = context
        self.ssl = ssl
        // SSL_set_bio gave the session both BIOs; SSL_free frees them with it.
        incoming = SSL_get_rbio(ssl)
        outgoing = SSL_get_wbio(ssl)
        peerName = serverName
    }

    /// A new `SSL*` with its memory BIOs, in its role, with SNI and the expected peer name
    /// set; freed here if any step fails.
    private static func makeSession(context: TLSContext, serverName: String?) throws(TLSError) -> OpaquePointer {
        ERR_clear_error()
        guard let ssl = SSL_new(context.context) else {
            throw TLSError.openSSL(.handshakeFailed, "creating an SSL session")
        }
        do throws(TLSError) {
            try configure(ssl, context: context, serverName: serverName)
            return ssl
        } catch {
            SSL_free(ssl)
            throw error
        }
    }

    private static func configure(_ ssl: OpaquePointer, context: TLSContext, serverName: String?) throws(TLSError) {
        guard let incoming = BIO_new(BIO_s_mem()) else { throw TLSError.openSSL(.handshakeFailed, "creating memory BIOs") }
        guard let outgoing = BIO_new(BIO_s_mem()) else {
            BIO_free(incoming)
            throw TLSError.openSSL(.handshakeFailed, "creating memory BIOs")
        }
        // An empty input BIO means "wait for more", not end of file.
        _ = cssl_BIO_set_mem_eof_return(incoming, -1)
        // The session owns both BIOs from here on; SSL_free frees them.
        SSL_set_bio(ssl, incoming, outgoing)

        let configuration = context.configuration
        guard configuration.role == .client else {
            SSL_set_accept_state(ssl)
            return
        }
        SSL_set_connect_state(ssl)
        guard let serverName, !serverName.isEmpty else {
            if configuration.certificateVerification == .fullVerification {
                throw TLSError(.invalidConfiguration, context: "host name verification needs a server name")
            }
            return
        }
        let isIPLiteral = SocketAddress.isIPLiteral(serverName)
        if !isIPLiteral {
            // SNI is for DNS names only (RFC 6066 §3).
            _ = cssl_set_tlsext_host_name(ssl, serverName)
        }
        guard configuration.certificateVerification == .fullVerification else { return }
        // A wildcard may only stand for a whole leftmost label.
        SSL_set_hostflags(ssl, UInt32(X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS))
        let accepted: Int32
        if isIPLiteral {
            let literal = serverName.hasPrefix("[") ? String(serverName.dropFirst().dropLast()) : serverName
            accepted = X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), literal)
        } else {
            accepted = SSL_set1_host(ssl, serverName)
        }
        guard accepted == 1 else {
            throw TLSError.openSSL(.invalidConfiguration, "setting the expected peer name \(serverName)")
        }
    }

    deinit { SSL_free(ssl) }

    /// Advances the handshake. Returns true once it is complete.
    func handshake() throws(TLSError) -> Bool {
        ERR_clear_error()
        let result = SSL_do_handshake(ssl)
        if result == 1 { return true }
        switch SSL_get_error(ssl, result) {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
            return false
        default:
            throw handshakeError()
        }
    }

    private func handshakeError() -> TLSError {
        let queue = TLSError.drainErrorQueue()
        let role = context.configuration.role == .client ? "client" : "server"
        // The transport says it was the handshake, and with which address.
        let what = peerName.map { "as the \(role), for \($0)" } ?? "as the \(role)"
        let verify = SSL_get_verify_result(ssl)
        if verify != X509_V_OK {
            let message = String(cString: X509_verify_cert_error_string(verify))
            return TLSError(.verification(verify), context: what, verifyResult: verify,
                            verifyMessage: message, openSSLErrors: queue)
        }
        return TLSError(.handshakeFailed, context: what, openSSLErrors: queue)
    }

    /// Hands the session ciphertext that arrived from the peer.
    func receive(_ ciphertext: UnsafeRawBufferPointer) {
        guard let base = ciphertext.baseAddress, ciphertext.count > 0 else { return }
        // A memory BIO takes everything it is given (it grows).
        _ = BIO_write(incoming, base, Int32(ciphertext.count))
    }

    /// Reads decrypted bytes into `buffer`.
    func read(into buffer: UnsafeMutableRawBufferPointer) throws(TLSError) -> ReadResult {
        ERR_clear_error()
        let count = SSL_read(ssl, buffer.baseAddress, Int32(clamping: buffer.count))
        if count > 0 { return .bytes(Int(count)) }
        switch SSL_get_error(ssl, count) {
        case SSL_ERROR_WANT_READ, SSL_ERROR_WANT_WRITE:
            return .needsMoreData
        case SSL_ERROR_ZERO_RETURN:
            return .closed
        default:
            throw TLSError.openSSL(.protocolError, "reading a TLS record")
        }
    }

    /// Encrypts `plaintext`; the records wait in the session until ``takeCiphertext()``.
    func write(_ plaintext: UnsafeRawBufferPointer) throws(TLSError) {
        var offset = 0
        while offset < plaintext.count {
            ERR_clear_error()
            let chunk = min(plaintext.count - offset, Int(Int32.max))
            let written = SSL_write(ssl, plaintext.baseAddress! + offset, Int32(chunk))
            guard written > 0 else {
                throw TLSError.openSSL(.protocolError, "writing a TLS record")
            }
            offset += Int(written)
        }
    }

    /// Encrypts `pieces` (the `.batched` ones from `batched`) in as few records as they fill.
    /// Pieces smaller than `staging` are gathered in it and sealed a stagingful at a time; a
    /// piece as large is sealed where it lies. Sealed one by one, a flush of eight messages
    /// with CHUNKING was sixteen records, and each record costs the writer a seal and the
    /// reader an `SSL_read`, whatever its size: the per-record work, not AES, was most of
    /// what TLS added to a message.
    func write(_ pieces: [WritePiece], batched: UnsafeRawBufferPointer,
               staging: UnsafeMutableRawBufferPointer) throws(TLSError) {
        var staged = 0
        try WritePiece.forEach(pieces, batched: batched) { bytes throws(TLSError) in
            if bytes.count >= staging.count {
                if staged > 0 { try write(UnsafeRawBufferPointer(rebasing: staging[..<staged])) }
                staged = 0
                try write(bytes)
                return
            }
            var offset = 0
            while offset < bytes.count {
                let count = min(bytes.count - offset, staging.count - staged)
                (staging.baseAddress! + staged).copyMemory(from: bytes.baseAddress! + offset, byteCount: count)
                staged += count
                offset += count
                if staged == staging.count {
                    try write(UnsafeRawBufferPointer(staging))
                    staged = 0
                }
            }
        }
        if staged > 0 { try write(UnsafeRawBufferPointer(rebasing: staging[..<staged])) }
    }

    /// Starts a clean close: queues a close_notify alert for the peer.
    func shutdown() {
        ERR_clear_error()
        _ = SSL_shutdown(ssl)
        ERR_clear_error()
    }

    /// Takes the ciphertext the session has produced for the peer, if any.
    func takeCiphertext() -> SharedBytes? {
        let pending = cssl_BIO_pending(outgoing)
        guard pending > 0 else { return nil }
        return SharedBytes(count: pending) { buffer in
            let read = BIO_read(outgoing, buffer.baseAddress, Int32(pending))
            assert(read == Int32(pending), "a memory BIO returns all it holds")
        }
    }

    /// The negotiated protocol version (`TLSv1.3`).
    var protocolVersion: String { String(cString: SSL_get_version(ssl)) }

    /// What the handshake settled: version, cipher and the peer's certificate subject.
    var details: TLSDetails {
        let cipher = SSL_get_current_cipher(ssl).map { String(cString: SSL_CIPHER_get_name($0)) } ?? "none"
        var subject: String?
        if let certificate = cssl_get_peer_certificate(ssl) {
            defer { X509_free(certificate) }
            if let name = X509_get_subject_name(certificate) {
                var buffer = [CChar](repeating: 0, count: 512)
                if X509_NAME_oneline(name, &buffer, Int32(buffer.count)) != nil {
                    subject = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
                }
            }
        }
        return TLSDetails(version: protocolVersion, cipher: cipher, peerSubject: subject)
    }
}

/// What a TLS handshake settled, for logs, transcripts and `Received:` headers.
public struct TLSDetails: Hashable, Sendable, CustomStringConvertible {
    /// The protocol version: `TLSv1.3`, `TLSv1.2`.
    public let version: String
    /// The cipher suite's OpenSSL name: `TLS_AES_256_GCM_SHA384`.
    public let cipher: String
    /// The peer certificate's subject (`/CN=localhost`), when the peer sent one (a server
    /// always does; a client only when asked).
    public let peerSubject: String?

    /// Details as given.
    public init(version: String, cipher: String, peerSubject: String?) {
        self.version = version
        self.cipher = cipher
        self.peerSubject = peerSubject
    }

    /// `TLSv1.3 TLS_AES_256_GCM_SHA384, peer /CN=localhost`. The subject is the peer's
    /// text: escape it (`controlCharactersEscaped`) before a terminal or a header sees it.
    public var description: String {
        "\(version) \(cipher)" + (peerSubject.map { ", peer \($0)" } ?? "")
    }
}
