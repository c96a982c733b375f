import Foundation
import Testing
import SluiceTransport
import SluiceTestSupport

@Suite("TLS")
struct TLSTests {
    let certificates: TestCertificates
    init() throws { certificates = try TestCertificates.shared() }

    private func serverContext(_ pair: TestCertificates.Pair) throws -> TLSContext {
        try TLSContext(.server(certificateChainFile: pair.certificate, privateKeyFile: pair.key))
    }

    private func clientContext(
        trusting roots: TLSConfiguration.TrustRoots? = nil,
        verification: TLSConfiguration.CertificateVerification = .fullVerification,
        certificate: TestCertificates.Pair? = nil
    ) throws -> TLSContext {
        try TLSContext(.client(
            trustRoots: roots ?? .pemFile(certificates.caFile), certificateVerification: verification,
            certificateChainFile: certificate?.certificate, privateKeyFile: certificate?.key))
    }

    /// Connects with implicit TLS to a TLS echo server presenting `pair`; returns the error if
    /// the connect failed, or nil after checking that bytes echo over TLS.
    private func handshake(
        serverPair: TestCertificates.Pair, client: TLSContext, serverName: String,
        host: String = "127.0.0.1", server serverContext: TLSContext? = nil
    ) async throws -> TLSError? {
        let group = EventLoopGroup(numberOfLoops: 1)
        let (server, _) = try await startEchoServer(on: group, tls: serverContext ?? self.serverContext(serverPair))
        let collector = Collector(checksPattern: true)
        var failure: TLSError?
        do {
            let connection = try await Connection.connect(
                to: host, port: server.localAddress.port, on: group.loops[0], timeout: .seconds(10),
                tls: client, serverName: serverName) { _ in collector }
            try await connection.write(pattern(from: 0, count: 100_000))
            try await withDeadline(.seconds(30), "TLS echo") { try await collector.waitForBytes(100_000) }
            #expect(collector.mismatches == 0)
            await connection.close()
        } catch let error as TransportError {
            #expect(error.kind == .tls, "expected a TLS error, got \(error)")
            failure = error.tls
            #expect(failure != nil, "a TLS failure carries its TLSError")
        }
        await server.close()
        await group.shutdown()
        return failure
    }

    @Test func goodCertificateHandshakesAndEchoes() async throws {
        let failure = try await handshake(serverPair: certificates.good, client: clientContext(), serverName: "localhost")
        #expect(failure == nil)
    }

    @Test func hostNameThatResolvesToSeveralAddressesTriesEach() async throws {
        // The name's first address refuses (nothing listens there); the second is the server.
        // Given through the resolver seam: this machine's /etc/hosts may give one address only.
        let group = EventLoopGroup(numberOfLoops: 1)
        let (server, _) = try await startEchoServer(on: group, tls: serverContext(certificates.good))
        let refused = try RefusedPort()
        defer { refused.close() }
        let addresses = [try SocketAddress(ipAddress: "127.0.0.1", port: refused.port), server.localAddress]
        let collector = Collector()
        let connection = try await Connection.connect(
            to: "localhost", resolvedAs: addresses, on: group.loops[0], timeout: .seconds(10), tls: clientContext(),
            serverName: "localhost") { _ in collector }
        #expect(connection.remoteAddress == server.localAddress, "connected to the second address")
        try await connection.write(Array("over TLS".utf8))
        try await withDeadline(.seconds(10), "echo") { try await collector.waitForBytes(8) }
        #expect(collector.kept == Array("over TLS".utf8))
        await connection.close()
        await server.close()
        await group.shutdown()
    }

    @Test func ipLiteralIsCheckedAgainstIPSubjectAltNames() async throws {
        let good = try await handshake(serverPair: certificates.good, client: clientContext(), serverName: "127.0.0.1")
        #expect(good == nil)
        let wrong = try await handshake(serverPair: certificates.wrongHost, client: clientContext(), serverName: "127.0.0.1")
        #expect(wrong?.kind == .hostnameMismatch)
    }

    @Test func aPeerNameOpenSSLRefusesIsAnErrorAndTheSessionIsFreedOnce() async throws {
        // libuv takes an IPv6 literal with a zone (`%lo`) as an address; OpenSSL's
        // X509_VERIFY_PARAM_set1_ip_asc does not, so setting the expected peer name fails after
        // the session was made. It was freed there and again by deinit (a double free that
        // AddressSanitizer reports and glibc may abort on).
        for name in ["fe80::1%lo", "[fe80::1%lo]"] {
            let failure = try await handshake(serverPair: certificates.good, client: clientContext(), serverName: name)
            #expect(failure?.kind == .invalidConfiguration, "\(name): \(String(describing: failure))")
            #expect(failure?.context.contains("expected peer name") == true, "\(String(describing: failure))")
        }
    }

    @Test func expiredCertificateFailsWithItsOwnError() async throws {
        let failure = try await handshake(serverPair: certificates.expired, client: clientContext(), serverName: "localhost")
        #expect(failure?.kind == .certificateExpired)
        #expect(failure?.verifyMessage?.contains("expired") == true, "\(String(describing: failure))")
    }

    @Test func certificateFromUnknownCAIsUntrusted() async throws {
        let failure = try await handshake(
            serverPair: certificates.good, client: clientContext(trusting: .system), serverName: "localhost")
        #expect(failure?.kind == .certificateUntrusted)
    }

    @Test func wrongHostFailsWithItsOwnError() async throws {
        let failure = try await handshake(serverPair: certificates.wrongHost, client: clientContext(), serverName: "localhost")
        #expect(failure?.kind == .hostnameMismatch)
        #expect(failure?.description.contains("localhost") == true)
    }

    @Test func selfSignedCertificateFailsWithItsOwnError() async throws {
        let failure = try await handshake(serverPair: certificates.selfSigned, client: clientContext(), serverName: "localhost")
        #expect(failure?.kind == .selfSignedCertificate)
        // Each thing once: the kind, then the role and name, the verify code, OpenSSL's queue.
        let text = failure?.description ?? ""
        #expect(text.hasPrefix("self-signed certificate (as the client, for localhost): verify error 18"), "\(text)")
        #expect(text.components(separatedBy: "self-signed").count == 2, "\(text)")
        #expect(!text.contains("handshake"), "the transport says it was the handshake: \(text)")
    }

    @Test func wildcardCoversOnlyAWholeLeftmostLabel() async throws {
        let one = try await handshake(serverPair: certificates.wildcard, client: clientContext(), serverName: "mail.example.test")
        #expect(one == nil)
        let two = try await handshake(serverPair: certificates.wildcard, client: clientContext(), serverName: "a.b.example.test")
        #expect(two?.kind == .hostnameMismatch)
        let partial = try await handshake(
            serverPair: certificates.partialWildcard, client: clientContext(), serverName: "mail.example.test")
        #expect(partial?.kind == .hostnameMismatch)
    }

    @Test func explicitOptOutsAcceptWhatTheyWaive() async throws {
        let noHost = try await handshake(
            serverPair: certificates.wrongHost, client: clientContext(verification: .noHostnameVerification),
            serverName: "localhost")
        #expect(noHost == nil)
        let noVerification = try await handshake(
            serverPair: certificates.selfSigned, client: clientContext(trusting: .system, verification: .none),
            serverName: "localhost")
        #expect(noVerification == nil)
    }

    @Test func serverThatRequiresAClientCertificateAcceptsOneAndRejectsNone() async throws {
        let server = try TLSContext(.server(
            certificateChainFile: certificates.good.certificate, privateKeyFile: certificates.good.key,
            clientVerification: .fullVerification, trustRoots: .pemFile(certificates.caFile)))
        let withCertificate = try await handshake(
            serverPair: certificates.good, client: clientContext(certificate: certificates.client),
            serverName: "localhost", server: server)
        #expect(withCertificate == nil)

        // Without one, TLS 1.3 lets the client finish first; the server's alert then closes
        // the connection, so the echo never arrives.
        let group = EventLoopGroup(numberOfLoops: 1)
        let (listener, _) = try await startEchoServer(on: group, tls: server)
        let collector = Collector()
        do {
            let connection = try await Connection.connect(
                to: "127.0.0.1", port: listener.localAddress.port, on: group.loops[0],
                tls: clientContext(), serverName: "localhost") { _ in collector }
            try? await connection.write(Array("hello".utf8))
            try await withDeadline(.seconds(10), "rejected client") { await collector.waitForClose() }
            #expect(collector.count == 0)
            #expect(collector.closeError?.kind == .tls)
        } catch let error as TransportError {
            #expect(error.kind == .tls || error.kind == .connectionReset)
        }
        await listener.close()
        await group.shutdown()
    }

    @Test func startTLSUpgradesALivePlaintextConnection() async throws {
        let group = EventLoopGroup(numberOfLoops: 2)
        let serverTLS = try serverContext(certificates.good)
        let server = try await TCPServer.listen(host: "127.0.0.1", port: 0, group: group) { _ in
            StartTLSServer(context: serverTLS)
        }
        let collector = Collector()
        let connection = try await Connection.connect(
            to: "127.0.0.1", port: server.localAddress.port, on: group.loops[1]) { _ in collector }
        try await connection.write(Array("STARTTLS\r\n".utf8))
        try await collector.waitForBytes(11)
        #expect(collector.kept == Array("220 ready\r\n".utf8))

        try await connection.startTLS(context: clientContext(), serverName: "localhost")
        let secure = try await withLoop(connection.eventLoop) { connection.isSecure }
        #expect(secure)
        try await connection.write(Array("hello over TLS".utf8))
        try await withDeadline(.seconds(10), "echo after STARTTLS") { try await collector.waitForBytes(11 + 14) }
        #expect(Array(collector.kept.dropFirst(11)) == Array("hello over TLS".utf8))

        await connection.close()
        await server.close()
        #expect(await waitForHandles(group, toReturnTo: 0) == 0)
        await group.shutdown()
    }

    @Test(.needsPeers(executables: ["openssl"])) func opensslClientInteroperatesAndCannotGoBelowTLS12() async throws {
        guard let openssl = findExecutable("openssl") else {
            Issue.record("openssl is not installed (apt-get install openssl)")
            return
        }
        let group = EventLoopGroup(numberOfLoops: 1)
        let tls = try serverContext(certificates.good)
        // s_client -quiet ignores the end of its input, so this server closes after a line.
        let server = try await TCPServer.listen(host: "127.0.0.1", port: 0, group: group, tls: tls) { _ in
            LineEchoThenClose()
        }
        let port = server.localAddress.port

        let good = try await runInBackground(
            openssl, ["s_client", "-connect", "127.0.0.1:\(port)", "-CAfile", certificates.caFile,
                      "-verify_return_error", "-verify_hostname", "localhost", "-quiet"],
            input: "ping from s_client\n")
        #expect(good.output.contains("ping from s_client"), "s_client said: \(good.error)")

        let old = try await runInBackground(
            openssl, ["s_client", "-connect", "127.0.0.1:\(port)", "-tls1_1", "-cipher", "DEFAULT@SECLEVEL=0", "-quiet"], input: "x\n")
        #expect(old.status != 0, "a TLS 1.1 client must be refused")
        #expect(!old.output.contains("x"))
        // Refused by our server, with its protocol-version alert (70), not by a local openssl
        // that will not offer TLS 1.1 at all.
        #expect(old.error.contains("alert protocol version") || old.error.contains("alert number 70"),
                "the server's alert: \(old.error)")

        await server.close()
        await group.shutdown()
    }

    @Test func badConfigurationFailsWhenLoadedNotAtHandshake() throws {
        #expect { try TLSContext(.server(certificateChainFile: "/nonexistent.pem", privateKeyFile: "/nonexistent.key")) }
            throws: { ($0 as? TLSError)?.kind == .invalidConfiguration }
        // A key that is not the certificate's.
        #expect {
            try TLSContext(.server(certificateChainFile: certificates.good.certificate, privateKeyFile: certificates.expired.key))
        } throws: { ($0 as? TLSError)?.kind == .invalidConfiguration }
        #expect { try TLSContext(.client(trustRoots: .pemFile("/nonexistent-ca.pem"))) }
            throws: { ($0 as? TLSError)?.kind == .invalidConfiguration }
    }
}

/// Plaintext until "STARTTLS\r\n": answers "220 ready", starts server TLS, then echoes.
final class StartTLSServer: ConnectionHandler {
    let context: TLSContext
    private var secure = false
    init(context: TLSContext) { self.context = context }

    func connection(_ connection: Connection, didReceive bytes: UnsafeRawBufferPointer) {
        if secure {
            connection.enqueueWrite([SharedBytes(copying: bytes)])
        } else if Array(bytes) == Array("STARTTLS\r\n".utf8) {
            connection.enqueueWrite(Array("220 ready\r\n".utf8))
            secure = true
            connection.startTLS(context: context, serverName: nil) { _ in }
        } else {
            connection.close(error: TransportError(.invalidArgument, "expected STARTTLS"))
        }
    }

    func connectionDidClose(_ connection: Connection, error: TransportError?) {}
}

/// Echoes what it reads and closes gracefully after the first newline.
final class LineEchoThenClose: ConnectionHandler {
    func connection(_ connection: Connection, didReceive bytes: UnsafeRawBufferPointer) {
        connection.enqueueWrite([SharedBytes(copying: bytes)])
        if bytes.contains(UInt8(ascii: "\n")) { connection.close() }
    }
    func connectionDidClose(_ connection: Connection, error: TransportError?) {}
}

/// Runs `body` on `loop` and returns its result.
func withLoop<T: Sendable>(_ loop: EventLoop, _ body: @escaping @Sendable () -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        if !loop.execute({ continuation.resume(returning: body()) }) {
            continuation.resume(throwing: TransportError(.eventLoopShutDown, "loop shut down"))
        }
    }
}
