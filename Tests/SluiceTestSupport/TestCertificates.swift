import Foundation
import SluiceTransport
import Testing

/// Certificates made at run time by the `openssl` command-line tool: a test CA, and server
/// certificates signed by it — good (localhost, 127.0.0.1, ::1), expired, for another host,
/// with a wildcard, with a partial wildcard — plus a self-signed one. Made once per test run.
public struct TestCertificates: Sendable {
    public let directory: String
    public var caFile: String { "\(directory)/ca.pem" }

    /// A certificate and key pair on disk.
    public struct Pair: Sendable {
        public let certificate: String
        public let key: String
    }

    public func pair(_ name: String) -> Pair { Pair(certificate: "\(directory)/\(name).pem", key: "\(directory)/\(name).key") }
    public var good: Pair { pair("good") }
    public var expired: Pair { pair("expired") }
    public var wrongHost: Pair { pair("wronghost") }
    public var selfSigned: Pair { pair("selfsigned") }
    public var wildcard: Pair { pair("wildcard") }
    public var partialWildcard: Pair { pair("partialwildcard") }
    public var client: Pair { pair("client") }

    private static let made = Locked<Result<TestCertificates, any Error>?>(nil)

    /// The certificates, made on first use.
    public static func shared() throws -> TestCertificates {
        try made.withLock { cached in
            if let cached { return try cached.get() }
            let result = Result { try make() }
            cached = result
            return try result.get()
        }
    }

    private static func make() throws -> TestCertificates {
        guard let openssl = findExecutable("openssl") else {
            Issue.record("the openssl command is needed to make test certificates (apt-get install openssl)")
            throw CertificateError(message: "openssl not found")
        }
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("sluice-certs-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let certificates = TestCertificates(directory: directory)

        func sh(_ arguments: [String]) throws {
            let result = try run(openssl, arguments, in: directory)
            guard result.status == 0 else {
                throw CertificateError(message: "openssl \(arguments.joined(separator: " ")) failed: \(result.error)")
            }
        }
        let keyOptions = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]

        // The CA.
        try sh(["req", "-x509"] + keyOptions + ["-keyout", "ca.key", "-out", "ca.pem", "-days", "30",
               "-subj", "/CN=Sluice Test CA", "-addext", "basicConstraints=critical,CA:TRUE",
               "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        try "".write(toFile: "\(directory)/index.txt", atomically: true, encoding: .utf8)
        try "1000\n".write(toFile: "\(directory)/serial", atomically: true, encoding: .utf8)
        try """
            [ ca ]
            default_ca = test_ca
            [ test_ca ]
            database = \(directory)/index.txt
            new_certs_dir = \(directory)
            serial = \(directory)/serial
            default_md = sha256
            policy = policy_any
            unique_subject = no
            [ policy_any ]
            commonName = supplied
            """.write(toFile: "\(directory)/ca.cnf", atomically: true, encoding: .utf8)

        /// A certificate signed by the CA, valid between the given dates.
        func signed(_ name: String, commonName: String, altNames: String,
                    start: String = "20200101000000Z", end: String = "20991231000000Z",
                    usage: String = "serverAuth") throws {
            try sh(["req"] + keyOptions + ["-keyout", "\(name).key", "-out", "\(name).csr", "-subj", "/CN=\(commonName)"])
            try """
                subjectAltName = \(altNames)
                basicConstraints = CA:FALSE
                extendedKeyUsage = \(usage)
                """.write(toFile: "\(directory)/\(name).ext", atomically: true, encoding: .utf8)
            try sh(["ca", "-batch", "-notext", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key",
                    "-in", "\(name).csr", "-out", "\(name).pem", "-startdate", start, "-enddate", end,
                    "-extfile", "\(name).ext"])
        }

        try signed("good", commonName: "localhost", altNames: "DNS:localhost,IP:127.0.0.1,IP:::1")
        try signed("expired", commonName: "localhost", altNames: "DNS:localhost,IP:127.0.0.1",
                   start: "20200101000000Z", end: "20200201000000Z")
        try signed("wronghost", commonName: "mail.example.org", altNames: "DNS:mail.example.org")
        try signed("wildcard", commonName: "*.example.test", altNames: "DNS:*.example.test")
        try signed("partialwildcard", commonName: "m*.example.test", altNames: "DNS:m*.example.test")
        try signed("client", commonName: "sluice-client", altNames: "DNS:sluice-client", usage: "clientAuth")
        try sh(["req", "-x509"] + keyOptions + ["-keyout", "selfsigned.key", "-out", "selfsigned.pem",
               "-days", "30", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        return certificates
    }
}

/// A key or certificate the openssl command could not make.
public struct CertificateError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { message }
    public init(message: String) { self.message = message }
}
