import Foundation
import Logging
import Sluice
import SluiceSink
import SluiceTestSupport
import Testing

@Suite("SMTPClient TLS and AUTH")
struct ClientSecurityTests {
    static func tlsSink(_ pair: KeyPath<TestCertificates, TestCertificates.Pair> = \.good,
                        _ configure: @escaping (inout SinkConfiguration) -> Void = { _ in }) -> (inout SinkConfiguration) -> Void {
        { configuration in
            let certificates = try! TestCertificates.shared()
            let chosen = certificates[keyPath: pair]
            configuration.tls = try! TLSContext(.server(certificateChainFile: chosen.certificate, privateKeyFile: chosen.key))
            configuration.server.users = ["app": "s3cret pass"]
            configure(&configuration)
        }
    }

    static func verifying(_ security: SMTPClient.Security = .startTLS) -> (inout SMTPClient.Configuration) -> Void {
        { configuration in
            configuration.security = security
            configuration.tls = .client(trustRoots: .pemFile(try! TestCertificates.shared().caFile))
            configuration.tlsServerName = "localhost"
        }
    }

    @Test func startTLSWithAVerifiedCertificateThenAUTH() async throws {
        try await withSinkAndClient(sink: Self.tlsSink { $0.server.requireAuthentication = true }, client: {
            Self.verifying()(&$0)
            $0.credentials = .password(username: "app", password: "s3cret pass")
        }) { sink, client in
            let report = try await client.send(testMessage(), envelope: envelope())
            #expect(report.outcome == .accepted)
            let stored = try await sink.waitForMessages(count: 1)
            #expect(stored[0].authenticatedUser == "app")
            #expect(stored[0].wasSecure)
        }
    }

    @Test func implicitTLSNeverSpeaksPlaintext() async throws {
        let sink = try await startSink(Self.tlsSink { $0.implicitTLSListen = ("127.0.0.1", 0) })
        var configuration = SMTPClient.Configuration(host: "127.0.0.1", port: sink.implicitTLSAddress!.port, security: .implicitTLS)
        Self.verifying(.implicitTLS)(&configuration)
        let client = try SMTPClient(configuration: configuration)
        let report = try await client.send(testMessage(), envelope: envelope())
        #expect(report.outcome == .accepted)
        #expect(try await sink.waitForMessages(count: 1)[0].wasSecure)
        await client.shutdown()
        await sink.shutdown()
    }

    @Test func aCertificateForAnotherHostFailsWithATLSErrorAndSendsNothing() async throws {
        try await withSinkAndClient(sink: Self.tlsSink(\.wrongHost), client: Self.verifying()) { sink, client in
            let error = await smtpError { try await client.send(testMessage(), envelope: envelope()) }
            #expect(error?.kind == .tls)
            #expect(error?.isTransient == false)
            #expect(sink.statistics.messages == 0)
            #expect(sink.statistics.sessions == 1, "a certificate failure is permanent: no reconnect loop")
        }
    }

    @Test func requiredSTARTTLSNeverFallsBackToPlaintext() async throws {
        try await withSinkAndClient(client: { $0.security = .startTLS }) { sink, client in
            let error = await smtpError { try await client.send(testMessage(), envelope: envelope()) }
            #expect(error?.kind == .tls)
            #expect(sink.statistics.messages == 0)
        }
    }

    @Test func credentialsNeverGoOverPlaintextUnlessAllowed() async throws {
        try await withSinkAndClient(sink: { $0.server.users = ["app": "pw"]; $0.server.authenticationRequiresTLS = false }, client: {
            $0.credentials = .password(username: "app", password: "pw")
        }) { sink, client in
            let error = await smtpError { try await client.send(testMessage(), envelope: envelope()) }
            #expect(error?.kind == .authentication)
            #expect(sink.statistics.messages == 0)
        }
        try await withSinkAndClient(sink: { $0.server.users = ["app": "pw"]; $0.server.authenticationRequiresTLS = false }, client: {
            $0.credentials = .password(username: "app", password: "pw")
            $0.allowPlaintextAuthentication = true
        }) { sink, client in
            let report = try await client.send(testMessage(), envelope: envelope())
            #expect(report.outcome == .accepted)
            let stored = try await sink.waitForMessages(count: 1)
            #expect(stored[0].authenticatedUser == "app")
        }
    }

    @Test func aRefusedPasswordFailsOnceWithoutARetryLoop() async throws {
        try await withSinkAndClient(sink: Self.tlsSink(), client: {
            Self.verifying()(&$0)
            $0.credentials = .password(username: "app", password: "wrong")
        }) { sink, client in
            let error = await smtpError { try await client.send(testMessage(), envelope: envelope()) }
            #expect(error?.kind == .authentication)
            #expect(error?.code == 535)
            #expect(error?.isTransient == false)
            #expect(sink.statistics.sessions == 1)
        }
    }

    @Test func theTranscriptIsLoggedAtTraceWithAUTHRedacted() async throws {
        let lines = LoggedEvents()
        try await withSinkAndClient(sink: Self.tlsSink(), client: {
            Self.verifying()(&$0)
            $0.credentials = .password(username: "app", password: "s3cret pass")
            $0.authenticationMechanism = .plain
            var logger = Logger(label: "test") { _ in RecordingHandler(events: lines) }
            logger.logLevel = .trace
            $0.logger = logger
        }) { _, client in
            _ = try await client.send(testMessage(), envelope: envelope())
        }
        let transcript = lines.messages
        #expect(transcript.contains("C: MAIL FROM:<sender@example.com> SIZE=\(testMessage().size)")
                || transcript.contains { $0.hasPrefix("C: MAIL FROM:<sender@example.com>") })
        #expect(transcript.contains("C: AUTH PLAIN [redacted]") || transcript.contains("C: AUTH PLAIN"))
        let secret = Data("\u{0}app\u{0}s3cret pass".utf8).base64EncodedString()
        #expect(!transcript.contains { $0.contains("s3cret") || $0.contains(secret) }, "no secret in the log")
        #expect(transcript.contains { $0.hasPrefix("S: 235") })
    }
}
