import COpenSSL

/// A certificate made here and now for a server of this machine: a P-256 key and a
/// certificate it signs itself, written as PEM files. For load tests and local sinks that
/// must really speak TLS (a client trusts it by naming ``certificateFile`` as its CA), never
/// for a server others reach.
public struct SelfSignedCertificate: Sendable, Hashable {
    /// The certificate, PEM.
    public let certificateFile: String
    /// Its private key, PEM, readable by the owner only.
    public let privateKeyFile: String

    /// Makes a key and a certificate for `commonName` (also its first DNS name), the other
    /// `dnsNames` and the `ipAddresses`, valid for `days`, in `directory` (which must exist;
    /// the two files must not).
    ///
    /// - Throws: ``TLSError`` when OpenSSL cannot make or write them.
    public init(in directory: String, commonName: String = "localhost", dnsNames: [String] = [],
                ipAddresses: [String] = ["127.0.0.1", "::1"], days: Int = 30) throws(TLSError) {
        certificateFile = directory + "/sluice-self-signed.pem"
        privateKeyFile = directory + "/sluice-self-signed.key"
        let names = ([commonName] + dnsNames).map { "DNS:\($0)" } + ipAddresses.map { "IP:\($0)" }
        guard cssl_write_self_signed(certificateFile, privateKeyFile, commonName, names.joined(separator: ","), days) == 1 else {
            throw TLSError.openSSL(.invalidConfiguration, "making a self-signed certificate in \(directory)")
        }
    }
}
