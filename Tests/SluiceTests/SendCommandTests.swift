import Foundation
@testable import Sluice
import SluiceSink
import SluiceTestSupport
import Testing

/// `sluice send` as a user runs it: a process, its exit status, its JSON report, and what
/// the sink received.
@Suite("sluice send")
struct SendCommandTests {
    struct Report: Decodable {
        struct Recipient: Decodable {
            let address: String
            let status: String
            let code: Int?
            let bounceClass: String?
            let enhancedCode: String?
            let text: String?
        }
        struct Failure: Decodable {
            let kind: String
            let command: String?
            let transient: Bool?
            let code: Int?
            let enhancedCode: String?
            let message: String
        }
        let outcome: String
        let messageId: String?
        let recipients: [Recipient]
        let error: Failure?
    }

    /// Runs `sluice send` against `sink` (no TLS) with `arguments`.
    static func send(_ sink: SMTPSink?, _ arguments: [String], port: Int? = nil) async throws
        -> (status: Int32, output: String, error: String)?
    {
        guard let sluice = sluiceCommand() else { return nil }
        let server = "127.0.0.1:\(port ?? sink!.localAddress.port)"
        return try await withDeadline(.seconds(60), "sluice send") {
            try await runInBackground(sluice, ["send", "--server", server, "--security", "none", "--helo", "client.test"] + arguments)
        }
    }

    static func report(_ output: String) throws -> Report {
        try JSONDecoder().decode(Report.self, from: Data(output.utf8))
    }

    @Test func aBuiltMessageIsAcceptedForEveryRecipientWithExitStatus0() async throws {
        let sink = try await startSink()
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-send-\(UUID().uuidString).csv").path
        try Data("id,value\n1,2\n".utf8).write(to: URL(fileURLWithPath: file))
        defer { try? FileManager.default.removeItem(atPath: file) }
        guard let run = try await Self.send(sink, [
            "--from", "Ada <ada@example.com>", "--to", "bob@example.org", "--to", "Carol <carol@example.org>, dan@example.org",
            "--cc", "erin@example.org", "--bcc", "hidden@example.org", "--subject", "Grüße aus Köln", "--text", "Hallo!",
            "--attach", file, "--header", "X-Campaign: spring", "--json",
        ]) else { return }
        #expect(run.status == 0, "\(run.error)")
        let report = try Self.report(run.output)
        #expect(report.outcome == "accepted")
        #expect(report.recipients.map(\.address) == ["bob@example.org", "carol@example.org", "dan@example.org",
                                                     "erin@example.org", "hidden@example.org"])
        #expect(report.recipients.allSatisfy { $0.status == "accepted" && $0.code == 250 && $0.enhancedCode != nil })
        #expect(report.error == nil)
        let stored = sink.messages
        #expect(stored.count == 1)
        let content = String(decoding: stored.first?.content ?? [], as: UTF8.self)
        #expect(!content.contains("hidden@example.org"))
        #expect(content.contains("X-Campaign: spring\r\n"))
        #expect(content.contains("Subject: =?utf-8?"))
        #expect(report.messageId.map { content.contains("Message-ID: \($0)\r\n") } == true)
        await sink.shutdown()
    }

    @Test func bodiesComeFromFilesAndAnEmptyFileIsAnEmptyBody() async throws {
        let sink = try await startSink()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-send-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let text = directory.appendingPathComponent("body.txt"), html = directory.appendingPathComponent("body.html")
        let empty = directory.appendingPathComponent("empty.txt")
        try Data("Plain words from a file.\n".utf8).write(to: text)
        try Data("<p>Marked-up words from a file.</p>\n".utf8).write(to: html)
        try Data().write(to: empty)
        guard let both = try await Self.send(sink, ["--from", "a@example.com", "--to", "b@example.org",
                                                    "--text-file", text.path, "--html-file", html.path]),
              let blank = try await Self.send(sink, ["--from", "a@example.com", "--to", "b@example.org",
                                                     "--subject", "blank", "--text-file", empty.path])
        else { return }
        #expect(both.status == 0, "\(both.error)")
        #expect(blank.status == 0, "\(blank.error)")
        let stored = try await sink.waitForMessages(count: 2).map { String(decoding: $0.content, as: UTF8.self) }
        #expect(stored[0].contains("multipart/alternative"))
        #expect(stored[0].contains("Plain words from a file.\r\n"))
        #expect(stored[0].contains("<p>Marked-up words from a file.</p>\r\n"))
        #expect(stored[1].contains("Subject: blank\r\n"))
        let body = stored[1].range(of: "\r\n\r\n").map { stored[1][$0.upperBound...] }
        #expect(body.map { $0.allSatisfy { $0 == "\r\n" } } == true, "the body is empty: \(stored[1])")
        await sink.shutdown()
    }

    @Test(arguments: [
        ("rejected", Int32(3), "rejected"), ("deferred", 4, "deferred"), ("partial", 2, "partiallyAccepted"),
    ])
    func outcomesHaveTheirExitStatus(fault: String, status: Int32, outcome: String) async throws {
        let sink = try await startSink {
            switch fault {
            case "rejected": $0.faults.rejectRecipients = .everyNth(1)
            case "deferred": $0.faults.deferRecipients = .everyNth(1)
            default: $0.faults.rejectRecipients = .everyNth(2)
            }
        }
        guard let run = try await Self.send(sink, ["--from", "a@example.com", "--to", "b@example.org", "--to", "c@example.org",
                                                   "--text", "x", "--json"]) else { return }
        #expect(run.status == status, "\(run.output) \(run.error)")
        let report = try Self.report(run.output)
        #expect(report.outcome == outcome)
        #expect(report.recipients.count == 2)
        if fault == "partial" {
            #expect(report.recipients.map(\.status) == ["accepted", "rejected"])
            #expect(report.recipients[1].code == 550)
        } else {
            #expect(report.error?.kind == outcome)
        }
        await sink.shutdown()
    }

    @Test func noReplyAfterTheDataIsOutcomeUnknownWithExitStatus5() async throws {
        let sink = try await startSink {
            $0.faults.disconnect = .everyNth(1)
            $0.faults.disconnectPhase = .afterData
        }
        guard let run = try await Self.send(sink, ["--from", "a@example.com", "--to", "b@example.org", "--text", "x", "--json"])
        else { return }
        #expect(run.status == 5, "\(run.output) \(run.error)")
        #expect(try Self.report(run.output).outcome == "unknown")
        await sink.shutdown()
    }

    @Test(arguments: [
        ["--to", "b@example.org>\r\nRCPT TO:<x@y.z>"],
        ["--to", "not an address"],
        ["--to", "b@example.org", "--header", "X-Note: a\r\nBcc: eve@example.org"],
        ["--to", "b@example.org", "--header", "Bcc: eve@example.org"],
        ["--to", "b@example.org", "--header", "no colon"],
        ["--to", "b@example.org", "--subject", "two\nlines"],
        ["--to", "b@example.org", "--attach", "/nonexistent/sluice/file.pdf"],
        ["--to", "b@example.org", "--text-file", "/nonexistent/sluice/body.txt"],
        ["--to", "b@example.org", "--html-file", "/"],
        ["--to", "b@example.org", "--user", "u", "--password-file", "/nonexistent/sluice/password"],
        ["--to", "b@example.org", "--eml", "/nonexistent/sluice/message.eml"],
        ["--to", "b@example.org", "--eml", "/dev/null", "--subject", "both"],
        ["--to", "δοκιμή@example.gr", "--from", "a@-bad-.example"],
        [],
    ])
    func invalidInputIsRefusedWithExitStatus64BeforeAnyConnection(arguments: [String]) async throws {
        let sink = try await startSink()
        let from = arguments.contains("--from") ? [] : ["--from", "a@example.com"]
        guard let run = try await Self.send(sink, from + arguments) else { return }
        #expect(run.status == 64, "\(arguments): \(run.output) \(run.error)")
        #expect(!run.error.isEmpty, "the error says what is wrong")
        #expect(!run.error.contains("Usage: sluice <subcommand>"), "not the root command's usage: \(run.error)")
        #expect(sink.statistics.sessions == 0, "no connection was made")
        await sink.shutdown()
    }

    @Test func aRefusedConnectionIsDeferredWithExitStatus4AndAConnectionError() async throws {
        let refused = try RefusedPort()
        defer { refused.close() }  // keeps the port refused to the end
        let port = refused.port
        guard let run = try await Self.send(nil, ["--from", "a@example.com", "--to", "b@example.org", "--json"], port: port)
        else { return }
        #expect(run.status == 4, "\(run.output) \(run.error)")
        let report = try Self.report(run.output)
        #expect(report.error?.kind == "connection")
        #expect(report.error?.transient == true)
        #expect(report.outcome == "deferred")
    }

    @Test func anEMLFileIsSentAsItIsToTheGivenEnvelope() async throws {
        let sink = try await startSink()
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-send-\(UUID().uuidString).eml").path
        let eml = "From: Someone <someone@example.com>\nTo: list@example.org\nSubject: as it is\nMessage-ID: <eml.1@example.com>\n\nBody line\n"
        try Data(eml.utf8).write(to: URL(fileURLWithPath: file))
        defer { try? FileManager.default.removeItem(atPath: file) }
        guard let run = try await Self.send(sink, ["--from", "bounces@example.com", "--to", "real@example.org", "--eml", file, "--json"])
        else { return }
        #expect(run.status == 0, "\(run.error)")
        #expect(try Self.report(run.output).messageId == "<eml.1@example.com>")
        let stored = sink.messages
        #expect(stored.first?.content == Array(eml.replacingOccurrences(of: "\n", with: "\r\n").utf8))
        #expect(stored.first?.from?.address == "bounces@example.com")
        #expect(stored.first?.recipients.map(\.address) == ["real@example.org"])
        await sink.shutdown()
    }

    /// Writes `text` to a temporary `.eml` file and returns its path.
    static func emlFile(_ text: String) throws -> String {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-send-\(UUID().uuidString).eml").path
        try Data(text.utf8).write(to: URL(fileURLWithPath: file))
        return file
    }

    static let headerEnvelopeEML = "From: Ann <ann@example.com>\r\n"
        + "To: Bob <bob@example.org>, team: carol@example.org, dave@example.org;\r\n"
        + "Cc: undisclosed-recipients:;, erin@example.org\r\n"
        + "Bcc: secret@example.net,\r\n hidden@example.net\r\n"
        + "Subject: from the headers\r\nMessage-ID: <headers.1@example.com>\r\n\r\n"
        + "Body\r\nBcc: only a body line\r\n"

    @Test func anEMLWithoutEnvelopeFlagsIsSentToItsHeadersWithBccRemoved() async throws {
        let sink = try await startSink()
        let file = try Self.emlFile(Self.headerEnvelopeEML)
        defer { try? FileManager.default.removeItem(atPath: file) }
        guard let sluice = sluiceCommand() else { return }
        let run = try await withDeadline(.seconds(60), "sluice send") {
            try await runInBackground(sluice, ["send", "--server", "127.0.0.1:\(sink.localAddress.port)", "--security", "none",
                                               "--eml", file, "--json"])
        }
        #expect(run.status == 0, "\(run.output) \(run.error)")
        let stored = try #require(sink.messages.first)
        #expect(stored.from?.address == "ann@example.com")
        #expect(stored.recipients.map(\.address) == ["bob@example.org", "carol@example.org", "dave@example.org",
                                                     "erin@example.org", "secret@example.net", "hidden@example.net"])
        let sent = String(decoding: stored.content, as: UTF8.self)
        #expect(!sent.contains("secret@example.net") && !sent.contains("hidden@example.net"), "\(sent)")
        #expect(sent == Self.headerEnvelopeEML.replacingOccurrences(of: "Bcc: secret@example.net,\r\n hidden@example.net\r\n", with: ""),
                "only the Bcc field is gone; the body's 'Bcc:' line stays")
        await sink.shutdown()
    }

    @Test func explicitEnvelopeFlagsWinOverAnEMLsHeadersAndBccIsStillRemoved() async throws {
        let sink = try await startSink()
        let file = try Self.emlFile(Self.headerEnvelopeEML)
        defer { try? FileManager.default.removeItem(atPath: file) }
        guard let run = try await Self.send(sink, ["--from", "bounces@example.com", "--to", "only@example.org", "--eml", file])
        else { return }
        #expect(run.status == 0, "\(run.output) \(run.error)")
        let stored = try #require(sink.messages.first)
        #expect(stored.from?.address == "bounces@example.com")
        #expect(stored.recipients.map(\.address) == ["only@example.org"])
        #expect(!String(decoding: stored.content, as: UTF8.self).contains("secret@example.net"))
        await sink.shutdown()
    }

    @Test func dryRunPrintsTheEnvelopeAndTheSignedMessageAndConnectsToNothing() async throws {
        let sink = try await startSink()
        let file = try Self.emlFile(Self.headerEnvelopeEML)
        defer { try? FileManager.default.removeItem(atPath: file) }
        guard let text = try await Self.send(sink, ["--eml", file, "--dry-run"]),
              let json = try await Self.send(sink, ["--from", "a@example.com", "--to", "b@example.org", "--subject", "Hi",
                                                    "--html", "<p>hello</p>", "--print", "--json"])
        else { return }
        #expect(text.status == 0 && json.status == 0, "\(text.error) \(json.error)")
        #expect(text.output.hasPrefix("MAIL FROM:<ann@example.com>\r\nRCPT TO:<bob@example.org>\r\n"), "\(text.output)")
        #expect(text.output.contains("RCPT TO:<hidden@example.net>\r\n\r\nFrom: Ann <ann@example.com>\r\n"))
        #expect(!text.output.contains("Bcc: secret"), "what is printed is what would be sent")
        struct Printed: Decodable {
            struct Envelope: Decodable {
                let from: String
                let recipients: [String]
            }
            let envelope: Envelope
            let message: String
            let size: Int
        }
        let printed = try JSONDecoder().decode(Printed.self, from: Data(json.output.utf8))
        #expect(printed.envelope.from == "a@example.com" && printed.envelope.recipients == ["b@example.org"])
        #expect(printed.message.contains("Content-Type: text/html; charset=utf-8\r\n"))
        #expect(printed.message.contains("<p>hello</p>"))
        #expect(printed.size == printed.message.utf8.count)
        #expect(sink.statistics.sessions == 0, "a dry run connects to nothing")
        await sink.shutdown()
    }

    @Test func resultsGoToStdoutAndTheErrorToStderr() async throws {
        let sink = try await startSink { $0.faults.rejectRecipients = .everyNth(1) }
        guard let run = try await Self.send(sink, ["--from", "a@example.com", "--to", "b@example.org", "--text", "x"])
        else { return }
        #expect(run.status == 3)
        let lines = run.output.split(separator: "\n")
        #expect(lines.count == 2 && lines[0].hasPrefix("rejected\tb@example.org\t550 ") && lines[1].hasPrefix("outcome: rejected"),
                "\(run.output)")
        #expect(run.error.hasPrefix("sluice send: SMTP rejected (RCPT): the server refused every recipient [550"), "\(run.error)")
        await sink.shutdown()
    }

    @Test func theTranscriptNamesTheTLSVersionCipherAndServerCertificate() async throws {
        let sink = try await startSink(ClientSecurityTests.tlsSink())
        guard let sluice = sluiceCommand() else { return }
        let arguments = ["send", "--server", "localhost:\(sink.localAddress.port)", "--security", "starttls",
                         "--ca-file", try TestCertificates.shared().caFile, "--from", "a@example.com", "--to", "b@example.org",
                         "--text", "x", "--transcript"]
        let run = try await withDeadline(.seconds(60), "sluice send") { try await runInBackground(sluice, arguments) }
        #expect(run.status == 0, "\(run.error)")
        let line = run.error.split(separator: "\n").first { $0.hasPrefix("TLS established: ") }
        #expect(line?.hasPrefix("TLS established: TLSv1.3 TLS_") == true, "\(run.error)")
        #expect(line?.hasSuffix(", peer /CN=localhost") == true, "\(run.error)")
        let startTLS = try #require(run.error.range(of: "C: STARTTLS")).lowerBound
        let established = try #require(run.error.range(of: "TLS established")).lowerBound
        let secondEHLO = try #require(run.error.range(of: "C: EHLO", options: .backwards)).lowerBound
        #expect(startTLS < established && established < secondEHLO)
        await sink.shutdown()
    }

    @Test func theTranscriptGoesToStderrWithAUTHRedacted() async throws {
        let sink = try await startSink {
            $0.server.users = ["ada": "s3cret-password"]
            $0.server.authenticationRequiresTLS = false
            $0.server.requireAuthentication = true
        }
        guard let sluice = sluiceCommand() else { return }
        let arguments = ["send", "--server", "127.0.0.1:\(sink.localAddress.port)", "--security", "none", "--user", "ada",
                         "--password-env", "SLUICE_TEST_PASSWORD", "--allow-plaintext-auth", "--auth", "plain",
                         "--from", "a@example.com", "--to", "b@example.org", "--text", "x", "--transcript"]
        let run = try await withDeadline(.seconds(60), "sluice send") {
            try await runInBackground("/usr/bin/env", ["SLUICE_TEST_PASSWORD=s3cret-password", sluice] + arguments)
        }
        #expect(run.status == 0, "\(run.error)")
        #expect(run.error.contains("C: MAIL FROM:<a@example.com>"))
        #expect(run.error.contains("S: 235"))
        #expect(run.error.contains("C: AUTH PLAIN"))
        let secret = Data("\u{0}ada\u{0}s3cret-password".utf8).base64EncodedString()
        #expect(!run.error.contains(secret) && !run.error.contains("s3cret-password"), "the credentials never appear")
        #expect(run.output.contains("accepted\tb@example.org\t250"))
        await sink.shutdown()
    }

    @Test(.needsPeers(executables: ["openssl"], python: ["dkim", "nacl"])) func dkimFlagsSignWithEveryKeyAndDkimpyVerifies() async throws {
        guard let keys = try await DKIMTestKeys.shared() else { return }
        let sink = try await startSink()
        guard let run = try await Self.send(sink, [
            "--from", "Zoë <zoe@example.com>", "--to", "b@example.org", "--subject", "Signed — twice", "--text", "Grüße",
            "--dkim-domain", "example.com", "--dkim-selector", "rsa", "--dkim-key", keys.rsaPKCS1,
            "--dkim-selector", "ed", "--dkim-key", keys.ed25519,
        ]) else { return }
        #expect(run.status == 0, "\(run.error)")
        let stored = try #require(sink.messages.first)
        #expect(try await keys.verify(stored.content) == [true, true])
        // A key without a selector is a usage error, before anything is sent.
        let bad = try await Self.send(sink, ["--from", "a@example.com", "--to", "b@example.org",
                                             "--dkim-domain", "example.com", "--dkim-key", keys.ed25519])
        #expect(bad?.status == 64)
        #expect(sink.statistics.sessions == 1)
        await sink.shutdown()
    }
}
