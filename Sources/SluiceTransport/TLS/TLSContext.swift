import COpenSSL

/// A loaded TLS configuration: an OpenSSL `SSL_CTX` with its roots, certificate and key read
/// once, from which every connection's session is made.
///
/// Loading fails early and clearly: a missing or malformed PEM file, or a key that does not
/// match its certificate, throws ``TLSError/Kind/invalidConfiguration`` here rather than at
/// the first handshake.
public final class TLSContext: @unchecked Sendable {
    // Safe to share: `context` is fully configured in init and afterwards only passed to
    // SSL_new, which OpenSSL allows from any thread; it is freed in deinit.
    let context: OpaquePointer
    /// The configuration this context was loaded from.
    public let configuration: TLSConfiguration

    /// Loads `configuration`.
    public init(_ configuration: TLSConfiguration) throws(TLSError) {
        self.configuration = configuration
        ERR_clear_error()
        let method = configuration.role == .client ? TLS_client_method() : TLS_server_method()
        guard let context = SSL_CTX_new(method) else {
            throw TLSError.openSSL(.invalidConfiguration, "creating an SSL_CTX")
        }
        self.context = context

        let minimum = configuration.minimumVersion == .tls13 ? TLS1_3_VERSION : TLS1_2_VERSION
        guard cssl_CTX_set_min_proto_version(context, minimum) == 1 else {
            throw TLSError.openSSL(.invalidConfiguration, "setting the minimum TLS version")
        }
        cssl_CTX_set_secure_options(context)
        _ = cssl_CTX_set_mode(context, Int(SSL_MODE_RELEASE_BUFFERS))

        switch (configuration.role, configuration.certificateVerification) {
        case (_, .none):
            SSL_CTX_set_verify(context, SSL_VERIFY_NONE, nil)
        case (.client, .fullVerification), (.client, .noHostnameVerification), (.server, .noHostnameVerification):
            SSL_CTX_set_verify(context, SSL_VERIFY_PEER, nil)
        case (.server, .fullVerification):
            SSL_CTX_set_verify(context, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nil)
        }

        if configuration.trustRoots.includesSystemRoots, SSL_CTX_set_default_verify_paths(context) != 1 {
            throw TLSError.openSSL(.invalidConfiguration, "loading the system trust store")
        }
        for path in configuration.trustRoots.pemFiles where SSL_CTX_load_verify_locations(context, path, nil) != 1 {
            throw TLSError.openSSL(.invalidConfiguration, "loading trusted certificates from \(path)")
        }

        switch (configuration.certificateChainFile, configuration.privateKeyFile) {
        case (let chain?, let key?):
            guard SSL_CTX_use_certificate_chain_file(context, chain) == 1 else {
                throw TLSError.openSSL(.invalidConfiguration, "loading the certificate chain from \(chain)")
            }
            guard SSL_CTX_use_PrivateKey_file(context, key, SSL_FILETYPE_PEM) == 1 else {
                throw TLSError.openSSL(.invalidConfiguration, "loading the private key from \(key)")
            }
            guard SSL_CTX_check_private_key(context) == 1 else {
                throw TLSError.openSSL(.invalidConfiguration, "the private key in \(key) does not match the certificate in \(chain)")
            }
        case (nil, nil):
            if configuration.role == .server {
                throw TLSError(.invalidConfiguration, context: "a TLS server needs a certificate chain and a private key")
            }
        case (_?, nil), (nil, _?):
            throw TLSError(.invalidConfiguration, context: "a certificate chain and a private key go together")
        }
    }

    deinit { SSL_CTX_free(context) }
}
