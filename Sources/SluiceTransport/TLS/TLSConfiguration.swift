/// How a TLS endpoint is set up: which roots it trusts, how it verifies its peer, which
/// certificate it presents, and the lowest protocol version it accepts.
///
/// The defaults are safe: peers are verified against the system trust store, host names are
/// checked, and nothing below TLS 1.2 is spoken. Turning verification off is an explicit,
/// visible choice (``CertificateVerification/none``).
public struct TLSConfiguration: Sendable, Hashable {
    /// Which end of the handshake this configuration is for.
    public enum Role: Sendable, Hashable {
        /// The side that connects (and sends SNI).
        case client
        /// The side that accepts (and presents a certificate).
        case server
    }

    /// The certificates a peer's chain may end in.
    public struct TrustRoots: Sendable, Hashable {
        /// Whether the system trust store (`/etc/ssl/certs`) is used.
        public var includesSystemRoots: Bool
        /// PEM files of extra trusted certificates.
        public var pemFiles: [String]

        /// The system trust store only.
        public static let system = TrustRoots(includesSystemRoots: true, pemFiles: [])

        /// Only the certificates in a PEM file (for a private CA).
        public static func pemFile(_ path: String) -> TrustRoots {
            TrustRoots(includesSystemRoots: false, pemFiles: [path])
        }

        /// The system trust store plus the certificates in a PEM file.
        public static func systemAnd(pemFile path: String) -> TrustRoots {
            TrustRoots(includesSystemRoots: true, pemFiles: [path])
        }

        /// Any combination.
        public init(includesSystemRoots: Bool, pemFiles: [String]) {
            self.includesSystemRoots = includesSystemRoots
            self.pemFiles = pemFiles
        }
    }

    /// How the peer's certificate is checked.
    public enum CertificateVerification: Sendable, Hashable {
        /// The chain must verify and, for a client, the certificate must name the host or IP
        /// address connected to. A server with this setting requires a client certificate.
        case fullVerification
        /// The chain must verify; the host name is not checked.
        case noHostnameVerification
        /// Nothing is checked. Only for tests and explicit opt-outs.
        case none
    }

    /// A TLS protocol version.
    public enum Version: Sendable, Hashable {
        /// TLS 1.2.
        case tls12
        /// TLS 1.3.
        case tls13
    }

    /// Client or server.
    public var role: Role
    /// Trusted roots for verifying the peer.
    public var trustRoots: TrustRoots
    /// How the peer is verified.
    public var certificateVerification: CertificateVerification
    /// The lowest version spoken; never below TLS 1.2.
    public var minimumVersion: Version
    /// This side's certificate chain (PEM, leaf first): required for a server, optional for
    /// a client that authenticates with a certificate.
    public var certificateChainFile: String?
    /// The private key for ``certificateChainFile`` (PEM).
    public var privateKeyFile: String?

    /// A client configuration. By default it trusts the system roots and verifies fully.
    public static func client(
        trustRoots: TrustRoots = .system,
        certificateVerification: CertificateVerification = .fullVerification,
        minimumVersion: Version = .tls12,
        certificateChainFile: String? = nil,
        privateKeyFile: String? = nil
    ) -> TLSConfiguration {
        TLSConfiguration(
            role: .client, trustRoots: trustRoots, certificateVerification: certificateVerification,
            minimumVersion: minimumVersion, certificateChainFile: certificateChainFile,
            privateKeyFile: privateKeyFile)
    }

    /// A server configuration presenting `certificateChainFile`. Clients are not asked for a
    /// certificate unless `clientVerification` says so.
    public static func server(
        certificateChainFile: String,
        privateKeyFile: String,
        clientVerification: CertificateVerification = .none,
        trustRoots: TrustRoots = .system,
        minimumVersion: Version = .tls12
    ) -> TLSConfiguration {
        TLSConfiguration(
            role: .server, trustRoots: trustRoots, certificateVerification: clientVerification,
            minimumVersion: minimumVersion, certificateChainFile: certificateChainFile,
            privateKeyFile: privateKeyFile)
    }
}
