import Foundation
import Sluice
import SluiceSink
import SluiceTestSupport
import Testing

/// Every cell of the failure table (``SMTPError/status``), end to end: the library's report,
/// every recipient's status and the thrown error agree, and so do `sluice send --json` and its
/// exit status. A failure that will not heal is never `deferred`; one that may is never
/// `failed` or `rejected`.
@Suite("Failure classification")
struct FailureClassificationTests {
    /// One cell: a peer that fails one way, and what each layer must say of it.
    struct Cell: Sendable, CustomTestStringConvertible {
        enum Peer: Sendable {
            /// A scripted server: its greeting and its reply to each verb.
            case scripted(greeting: String, table: [String: String])
            /// A sink with a certificate the client does not trust.
            case untrustedCertificate
            /// A name that does not exist (RFC 6761: `.invalid` never resolves).
            case unknownHost
            /// A port where nothing listens.
            case refusedPort
        }

        let name: String
        let peer: Peer
        var security = "none"
        var authenticates = false
        var timeout: Double = 20
        let outcome: DeliveryReport.Outcome
        let kind: String
        var command: String?
        var code: Int?
        /// Whether each recipient carries the reply too (a reply that broke the protocol is
        /// not trusted to say anything of them).
        var recipientsCarryTheReply = true
        /// The whole error message, where a cell pins it: each thing said once.
        var message: String?
        /// Every recipient's bounce class.
        var bounceClass: BounceClass = .other

        var testDescription: String { name }

        var exitStatus: Int32 {
            switch outcome {
            case .rejected: 3
            case .deferred: 4
            case .unknown: 5
            case .failed: 69
            default: 0
            }
        }
    }

    static let ehlo = "250-scripted.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
    static let ehloAuth = "250-scripted.test\r\n250-PIPELINING\r\n250 AUTH PLAIN\r\n"
    static let ehloStartTLS = "250-scripted.test\r\n250 STARTTLS\r\n"
    static let transaction = ["EHLO": ehlo, "MAIL": "250 ok\r\n", "RCPT": "250 ok\r\n", "DATA": "354 go\r\n",
                              "<end of data>": "250 2.0.0 queued\r\n"]

    static func scripted(_ changes: [String: String], greeting: String = "220 scripted.test ESMTP\r\n") -> Cell.Peer {
        .scripted(greeting: greeting, table: transaction.merging(changes) { $1 })
    }

    static let cells: [Cell] = [
        // Permanent, not the recipients' own: failed.
        Cell(name: "554 greeting", peer: scripted([:], greeting: "554 5.3.2 no service here\r\n"),
             outcome: .failed, kind: "connection", code: 554,
             message: "SMTP connection: the server refused the session [554 5.3.2 no service here]", bounceClass: .other),
        Cell(name: "5xx to EHLO and HELO", peer: scripted(["EHLO": "550 5.7.1 go away\r\n", "HELO": "550 5.7.1 go away\r\n"]),
             outcome: .failed, kind: "connection", command: "HELO", code: 550, bounceClass: .policy),
        Cell(name: "535 to AUTH", peer: scripted(["EHLO": ehloAuth, "AUTH": "535 5.7.8 authentication failed\r\n"]),
             authenticates: true, outcome: .failed, kind: "authentication", command: "AUTH", code: 535,
             message: "SMTP authentication (AUTH): the server refused authentication [535 5.7.8 authentication failed]", bounceClass: .policy),
        Cell(name: "STARTTLS required and not offered", peer: scripted([:]), security: "starttls",
             outcome: .failed, kind: "tls", bounceClass: .tls),
        Cell(name: "a certificate that does not verify", peer: .untrustedCertificate, security: "starttls",
             outcome: .failed, kind: "tls", bounceClass: .tls),
        Cell(name: "a host name that does not exist", peer: .unknownHost, outcome: .failed, kind: "connection", bounceClass: .routing),
        // Permanent, the message's or the recipients': rejected.
        Cell(name: "550 to MAIL", peer: scripted(["MAIL": "550 5.7.1 sender refused\r\n"]),
             outcome: .rejected, kind: "rejected", command: "MAIL", code: 550, bounceClass: .policy),
        Cell(name: "550 to every RCPT", peer: scripted(["RCPT": "550 5.1.1 no such user\r\n"]),
             outcome: .rejected, kind: "rejected", command: "RCPT", code: 550,
             message: "SMTP rejected (RCPT): the server refused every recipient [550 5.1.1 no such user]", bounceClass: .invalidRecipient),
        Cell(name: "554 to the end of data", peer: scripted(["<end of data>": "554 5.7.1 spam\r\n"]),
             outcome: .rejected, kind: "rejected", command: "DATA", code: 554, bounceClass: .content),
        // Transient: deferred.
        Cell(name: "421 greeting", peer: scripted([:], greeting: "421 4.3.2 busy\r\n"),
             outcome: .deferred, kind: "connection", code: 421, bounceClass: .other),
        Cell(name: "454 to AUTH", peer: scripted(["EHLO": ehloAuth, "AUTH": "454 4.7.0 try later\r\n"]),
             authenticates: true, outcome: .deferred, kind: "authentication", command: "AUTH", code: 454, bounceClass: .policy),
        Cell(name: "454 to STARTTLS", peer: scripted(["EHLO": ehloStartTLS, "STARTTLS": "454 4.7.0 TLS not available\r\n"]),
             security: "starttls", outcome: .deferred, kind: "tls", command: "STARTTLS", code: 454, bounceClass: .tls),
        Cell(name: "451 to MAIL", peer: scripted(["MAIL": "451 4.3.0 later\r\n"]),
             outcome: .deferred, kind: "deferred", command: "MAIL", code: 451, bounceClass: .other),
        Cell(name: "450 to every RCPT", peer: scripted(["RCPT": "450 4.2.1 later\r\n"]),
             outcome: .deferred, kind: "deferred", command: "RCPT", code: 450, bounceClass: .inactiveMailbox),
        Cell(name: "421 to RCPT", peer: scripted(["RCPT": "421 4.3.2 closing\r\n"]),
             outcome: .deferred, kind: "connection", command: "RCPT", code: 421, bounceClass: .other),
        Cell(name: "a refused connection", peer: .refusedPort, outcome: .deferred, kind: "connection", bounceClass: .connection),
        Cell(name: "no greeting in time", peer: scripted([:], greeting: ""), timeout: 1,
             outcome: .deferred, kind: "timeout", command: "the greeting",
             message: "SMTP timeout (the greeting): no reply in time", bounceClass: .connection),
        Cell(name: "a protocol violation", peer: scripted(["DATA": "250 2.0.0 taken without content\r\n"]),
             outcome: .deferred, kind: "protocolViolation", command: "DATA", code: 250, recipientsCarryTheReply: false, bounceClass: .protocol),
        Cell(name: "a malformed reply", peer: scripted(["MAIL": "25O ok\r\n"]),
             outcome: .deferred, kind: "protocolViolation", command: "MAIL",
             message: "SMTP protocol (MAIL): malformed reply: 25O ok", bounceClass: .protocol),
    ]

    /// The peer started for `cell`, its port, and how to stop it.
    static func start(_ cell: Cell) async throws -> (host: String, port: Int, stop: @Sendable () async -> Void) {
        switch cell.peer {
        case .scripted(let greeting, let table):
            let server = try await ScriptedSMTPServer.start(greeting: greeting, script: HostilePeerTests.script(table))
            return ("127.0.0.1", server.port, { await server.shutdown() })
        case .untrustedCertificate:
            let sink = try await startSink(ClientSecurityTests.tlsSink())
            return ("localhost", sink.localAddress.port, { await sink.shutdown() })
        case .unknownHost:
            return ("no-such-host.invalid", 25, {})
        case .refusedPort:
            let refused = try RefusedPort()
            return ("127.0.0.1", refused.port, { refused.close() })
        }
    }

    @Test(arguments: cells)
    func theLibraryReportsEachCellOnce(cell: Cell) async throws {
        let peer = try await Self.start(cell)
        var configuration = SMTPClient.Configuration(host: peer.host, port: peer.port,
                                                     security: cell.security == "starttls" ? .startTLS : .none)
        configuration.ehloName = "client.test"
        configuration.retry = .none
        configuration.pool.connectAttempts = 1
        configuration.timeouts.greeting = .milliseconds(Int64(cell.timeout * 1000))
        if cell.authenticates {
            configuration.credentials = .password(username: "u", password: "p")
            configuration.allowPlaintextAuthentication = true
        }
        let client = try SMTPClient(configuration: configuration)
        do {
            let report = try await client.send(testMessage(), envelope: envelope("b@example.org", "c@example.org"))
            Issue.record("\(cell.name): sent, \(report)")
        } catch let error as SMTPError {
            let report = try #require(error.report)
            #expect(report.outcome == cell.outcome, "\(cell.name): \(report)")
            #expect(report.recipients.allSatisfy { $0.status == error.status }, "\(cell.name): \(report)")
            #expect(error.status.outcome == cell.outcome, "\(cell.name): \(error)")
            #expect(error.isTransient == (cell.outcome == .deferred), "\(cell.name): \(error)")
            #expect(error.command == cell.command, "\(cell.name): \(error)")
            #expect(error.code == cell.code, "\(cell.name): \(error)")
            let code = cell.recipientsCarryTheReply ? cell.code : nil
            #expect(report.recipients.allSatisfy { $0.code == code }, "\(cell.name): \(report)")
            // The message says each thing once: the command, the reply.
            let text = error.description
            if let command = cell.command {
                #expect(text.components(separatedBy: "(\(command))").count == 2, "\(cell.name): \(text)")
            }
            if let code = cell.code { #expect(text.components(separatedBy: "\(code) ").count == 2, "\(cell.name): \(text)") }
            if let message = cell.message { #expect(text == message) }
            #expect(report.recipients.allSatisfy { $0.bounceClass == cell.bounceClass }, "\(cell.name): \(report)")
        }
        await client.shutdown()
        await peer.stop()
    }

    @Test(arguments: cells)
    func sendsJSONAndExitStatusAgreeWithTheLibrary(cell: Cell) async throws {
        guard let sluice = sluiceCommand() else { return }
        let peer = try await Self.start(cell)
        var arguments = ["send", "--server", "\(peer.host):\(peer.port)", "--security", cell.security,
                         "--helo", "client.test", "--from", "a@example.com", "--to", "b@example.org,c@example.org",
                         "--text", "hello", "--timeout", "\(cell.timeout)", "--json"]
        if cell.authenticates { arguments += ["--user", "u", "--password-env", "SLUICE_TEST_PASSWORD", "--allow-plaintext-auth"] }
        setenv("SLUICE_TEST_PASSWORD", "p", 1)
        let command = arguments
        let run = try await withDeadline(.seconds(60), "sluice send") { try await runInBackground(sluice, command) }
        await peer.stop()
        #expect(run.status == cell.exitStatus, "\(cell.name): \(run.output) \(run.error)")
        let report = try SendCommandTests.report(run.output)
        #expect(report.outcome == cell.outcome.rawValue, "\(cell.name): \(run.output)")
        #expect(report.recipients.map(\.status) == [String](repeating: "\(cell.outcome)", count: 2), "\(cell.name): \(run.output)")
        #expect(report.error?.kind == cell.kind, "\(cell.name): \(run.output)")
        #expect(report.error?.transient == (cell.outcome == .deferred), "\(cell.name): \(run.output)")
        #expect(report.error?.command == cell.command, "\(cell.name): \(run.output)")
        let code = cell.recipientsCarryTheReply ? cell.code : nil
        #expect(report.recipients.allSatisfy { $0.code == code }, "\(cell.name): \(run.output)")
        #expect(report.recipients.allSatisfy { $0.bounceClass == cell.bounceClass.rawValue }, "\(cell.name): \(run.output)")
    }

    @Test func whenEveryRecipientIsRefusedTheErrorNamesRCPTAndSaysWhatTheServerSaid() async throws {
        let server = try await ScriptedSMTPServer.start(
            script: HostilePeerTests.script(Self.transaction.merging(["RCPT": "550 5.1.1 <b@example.org>: no such user\r\n"]) { $1 }))
        var configuration = SMTPClient.Configuration(host: "127.0.0.1", port: server.port, security: .none)
        configuration.retry = .none
        let client = try SMTPClient(configuration: configuration)
        await #expect {
            _ = try await client.send(testMessage(), envelope: envelope("b@example.org"))
        } throws: { error in
            guard let error = error as? SMTPError else { return false }
            return error.kind == .rejected && error.command == "RCPT" && error.description.contains("no such user")
                && error.description.contains("RCPT") && !error.isTransient
        }
        await client.shutdown()
        await server.shutdown()
    }
}

extension DeliveryStatus {
    /// The message outcome a report whose every recipient has this status has.
    var outcome: DeliveryReport.Outcome {
        switch self {
        case .accepted: .accepted
        case .rejected: .rejected
        case .deferred: .deferred
        case .failed: .failed
        case .unknown: .unknown
        }
    }
}
