import Foundation
import Sluice
@testable import SluiceOutbox
import SluiceTestSupport
import Testing

/// Bounces and complaints that come back after the relay took a message: matched by the ENVID
/// the worker sent (authenticated) or the returned Message-ID, recorded on the right
/// recipient, suppressing hard bounces and complainers; forged and unknown reports change
/// nothing.
@Suite(.closesOutboxes) struct BounceIngestionTests {
    /// A relay that offers DSN and keeps every command line it was sent.
    final class DSNRelay: Sendable {
        let server: ScriptedSMTPServer
        let lines = Locked<[String]>([])
        var port: Int { server.port }

        init() async throws {
            let lines = self.lines
            server = try await ScriptedSMTPServer.start { line in
                lines.withLock { $0.append(line) }
                switch line.split(separator: " ").first.map({ String($0).uppercased() }) ?? "" {
                case "EHLO": return "250-relay.test\r\n250-PIPELINING\r\n250 DSN\r\n"
                case "MAIL", "RCPT", "RSET", "NOOP": return "250 ok\r\n"
                case "DATA": return "354 go ahead\r\n"
                case "<END": return "250 2.0.0 queued\r\n"
                case "QUIT": return "221 bye\r\n"
                default: return "502 5.5.2 not scripted\r\n"
                }
            }
        }
    }

    /// A DSN as RFC 3464 lays one out; `envelopeID` and `messageID` are left out when nil.
    static func dsn(envelopeID: String?, messageID: String?, _ recipients: [(address: String, action: String, status: String)]) -> [UInt8] {
        var text = """
            From: MAILER-DAEMON@mx.example.org\r
            To: sender@example.com\r
            Subject: Delivery Status Notification\r
            MIME-Version: 1.0\r
            Content-Type: multipart/report; report-type=delivery-status; boundary="b1"\r
            \r
            --b1\r
            Content-Type: text/plain\r
            \r
            Your message could not be delivered.\r
            --b1\r
            Content-Type: message/delivery-status\r
            \r
            Reporting-MTA: dns; mx.example.org\r

            """
        if let envelopeID { text += "Original-Envelope-Id: \(envelopeID)\r\n" }
        for recipient in recipients {
            text += "\r\nOriginal-Recipient: rfc822;\(recipient.address)\r\nFinal-Recipient: rfc822; \(recipient.address)\r\n"
            text += "Action: \(recipient.action)\r\nStatus: \(recipient.status)\r\nRemote-MTA: dns; mail.example.org\r\n"
            let words = ["5.1.1": "Recipient address rejected: User unknown", "5.2.2": "Mailbox is full"][recipient.status]
                ?? "Connection timed out"
            text += "Diagnostic-Code: smtp; 550 \(recipient.status) <\(recipient.address)>: \(words)\r\n"
        }
        text += "\r\n--b1\r\nContent-Type: text/rfc822-headers\r\n\r\nFrom: sender@example.com\r\n"
        if let messageID { text += "Message-ID: \(messageID)\r\n" }
        text += "Subject: x\r\n\r\n--b1--\r\n"
        return Array(text.utf8)
    }

    static func arf(messageID: String, complainer: String, type: String = "abuse") -> [UInt8] {
        Array("""
            From: fbl@provider.example\r
            To: abuse@example.com\r
            MIME-Version: 1.0\r
            Content-Type: multipart/report; report-type=feedback-report; boundary="f1"\r
            \r
            --f1\r
            Content-Type: text/plain\r
            \r
            A complaint.\r
            --f1\r
            Content-Type: message/feedback-report\r
            \r
            Feedback-Type: \(type)\r
            User-Agent: ProviderFBL/1.0\r
            Version: 1\r
            Original-Rcpt-To: <\(complainer)>\r
            \r
            --f1\r
            Content-Type: message/rfc822\r
            \r
            From: sender@example.com\r
            To: \(complainer)\r
            Message-ID: \(messageID)\r
            Subject: x\r
            \r
            body\r
            --f1--\r

            """.utf8)
    }

    /// Sends one message to `recipients` through a DSN relay; returns the outbox, its id and
    /// the ENVID the worker sent.
    static func sent(_ kind: StoreKind, to recipients: [String]) async throws -> (Outbox, Int64, String, [String])? {
        let relay = try await DSNRelay()
        guard let outbox = try await makeOutbox(kind) else { return nil }
        let id = try await outbox.enqueue(outboxMessage("b", to: recipients))
        let client = try relayClient(port: relay.port)
        let (_, task) = OutboxWorkerTests.start(outbox, client) { $0.exitWhenIdle = true }
        try await task.value
        await client.shutdown()
        await relay.server.shutdown()
        let lines = relay.lines.withLock { $0 }
        let mail = try #require(lines.first { $0.hasPrefix("MAIL FROM:") })
        let envelopeID = try #require(mail.split(separator: " ").first { $0.hasPrefix("ENVID=") }).dropFirst(6)
        #expect(mail.contains(" RET=HDRS"), "\(mail)")
        return (outbox, id, String(envelopeID), lines.filter { $0.hasPrefix("RCPT TO:") })
    }

    /// ``sent(_:to:)`` from an SQLite outbox whose path a command can be given.
    static func sentFromSQLite(to recipients: [String]) async throws -> (Outbox, String, Int64, String) {
        let relay = try await DSNRelay()
        let (outbox, path) = try await makeSQLiteOutbox()
        let id = try await outbox.enqueue(outboxMessage("s", to: recipients))
        let client = try relayClient(port: relay.port)
        let (_, task) = OutboxWorkerTests.start(outbox, client) { $0.exitWhenIdle = true }
        try await task.value
        await client.shutdown()
        await relay.server.shutdown()
        let mail = try #require(relay.lines.withLock { $0 }.first { $0.hasPrefix("MAIL FROM:") })
        let envelopeID = String(try #require(mail.split(separator: " ").first { $0.hasPrefix("ENVID=") }).dropFirst(6))
        return (outbox, path, id, envelopeID)
    }

    @Test(arguments: StoreKind.allCases)
    func aBounceIsMatchedByTheWorkersENVIDAndRecordedOnItsRecipient(store kind: StoreKind) async throws {
        guard let (outbox, id, envelopeID, rcpts) = try await Self.sent(kind, to: ["gone@example.org", "ok@example.org"]) else { return }
        #expect(envelopeID.hasPrefix("sluice.\(id)."))
        #expect(rcpts == ["RCPT TO:<gone@example.org> ORCPT=rfc822;gone@example.org",
                          "RCPT TO:<ok@example.org> ORCPT=rfc822;ok@example.org"])
        #expect(try await outbox.message(id)?.recipients.map(\.state) == [.delivered, .delivered])

        let report = Self.dsn(envelopeID: envelopeID, messageID: nil,
                              [("gone@example.org", "failed", "5.1.1"), ("ok@example.org", "delayed", "4.4.1")])
        let result = try await outbox.ingestReport(report)
        #expect(result.bounced.map(\.address) == ["gone@example.org"])
        #expect(result.bounced.first?.bounceClass == .invalidRecipient && result.bounced.first?.suppressed == true)
        #expect(result.unchanged == ["ok@example.org: delayed"])
        let record = try #require(try await outbox.message(id))
        #expect(record.recipients.map(\.state) == [.bounced, .delivered])
        #expect(record.recipients[0].enhancedCode == "5.1.1")
        #expect(record.recipients[0].bounceClass == .invalidRecipient)
        #expect(record.recipients[0].reply?.contains("User unknown") == true && record.recipients[0].reply?.contains("mail.example.org") == true)
        #expect(try await outbox.suppression(for: "gone@example.org")?.reason == "invalid-recipient")

        // The same report again changes nothing more.
        let again = try await outbox.ingestReport(report)
        #expect(again.bounced.isEmpty)

        // A report whose ENVID is Sluice's form with another MAC is forged: refused, nothing changed.
        let forgedID = "sluice.\(id).00000000000000000000"
        let forged = await #expect(throws: OutboxError.self) {
            try await outbox.ingestReport(Self.dsn(envelopeID: forgedID, messageID: nil, [("ok@example.org", "failed", "5.1.1")]))
        }
        #expect(forged?.kind == .invalidInput && forged?.message.contains("forged") == true, "\(String(describing: forged))")
        #expect(try await outbox.message(id)?.recipients[1].state == .delivered)
        #expect(try await outbox.suppression(for: "ok@example.org") == nil)
    }

    @Test(arguments: StoreKind.allCases)
    func withoutAnENVIDTheReturnedMessageIDMatchesAndAnUnknownOneIsRefused(store kind: StoreKind) async throws {
        guard let (outbox, id, _, _) = try await Self.sent(kind, to: ["full@example.org", "other@example.org"]) else { return }
        let messageID = try #require(try await outbox.message(id)?.messageID)
        let result = try await outbox.ingestReport(Self.dsn(envelopeID: nil, messageID: messageID,
                                                            [("full@example.org", "failed", "5.2.2"), ("stranger@example.org", "failed", "5.1.1")]))
        #expect(result.bounced.map(\.address) == ["full@example.org"])
        #expect(result.bounced.first?.bounceClass == .mailboxFull && result.bounced.first?.suppressed == false,
                "a full mailbox is not a hard bounce")
        #expect(result.unchanged == ["stranger@example.org: not a delivered recipient of message \(id)"])
        #expect(try await outbox.suppressions().isEmpty)

        let unknown = await #expect(throws: OutboxError.self) {
            try await outbox.ingestReport(Self.dsn(envelopeID: nil, messageID: "<nobody@example.com>", [("other@example.org", "failed", "5.1.1")]))
        }
        #expect(unknown?.message.contains("no message of this outbox") == true)
        let notAReport = await #expect(throws: OutboxError.self) {
            try await outbox.ingestReport(Array("From: a@example.com\r\nSubject: out of office\r\n\r\nAway.\r\n".utf8))
        }
        #expect(notAReport?.message.hasPrefix("not a report Sluice reads") == true)
        #expect(try await outbox.message(id)?.recipients.map(\.state) == [.bounced, .delivered])
    }

    @Test(arguments: StoreKind.allCases)
    func aComplaintSuppressesOnlyARecipientOfAMessageOfThisOutbox(store kind: StoreKind) async throws {
        guard let (outbox, id, _, _) = try await Self.sent(kind, to: ["angry@example.org"]) else { return }
        let messageID = try #require(try await outbox.message(id)?.messageID)
        let result = try await outbox.ingestReport(Self.arf(messageID: messageID, complainer: "angry@example.org"))
        #expect(result.complaints == ["angry@example.org"])
        #expect(try await outbox.suppression(for: "angry@example.org")?.reason == "complaint")
        // Someone the message was not sent to, another feedback type, another message: nothing.
        let stranger = try await outbox.ingestReport(Self.arf(messageID: messageID, complainer: "bystander@example.org"))
        #expect(stranger.complaints.isEmpty && stranger.unchanged.count == 1)
        let notSpam = try await outbox.ingestReport(Self.arf(messageID: messageID, complainer: "angry@example.org", type: "not-spam"))
        #expect(notSpam.complaints.isEmpty)
        await #expect(throws: OutboxError.self) {
            try await outbox.ingestReport(Self.arf(messageID: "<elsewhere@example.net>", complainer: "angry@example.org"))
        }
        #expect(try await outbox.suppressions().map(\.target) == ["angry@example.org"])
    }

    /// `sluice sink --bounces` as the bounce address's server: a report is recorded before
    /// its 250; an auto-reply is taken and dropped.
    @Test(.needsPeers(executables: ["python3"]))
    func theSinkReceivesBouncesIntoTheOutbox() async throws {
        guard let sluice = sluiceCommand(), let python = requirePeer("python3", install: "apt-get install python3") else { return }
        let (outbox, path, id, envelopeID) = try await Self.sentFromSQLite(to: ["gone@example.org"])

        let sink = try ChildProcess(sluice, ["sink", "--listen", "127.0.0.1:0", "--bounces", "--outbox", "sqlite:\(path)"])
        defer { sink.stop() }
        let port = try await sink.firstOutputLine(within: .seconds(20)).split(separator: ":").last.map(String.init) ?? ""
        let directory = try OutboxCommandTests.temporaryDirectory()
        try Data(Self.dsn(envelopeID: envelopeID, messageID: nil, [("gone@example.org", "failed", "5.1.1")]))
            .write(to: URL(fileURLWithPath: "\(directory)/dsn.eml"))
        try Data("From: someone@example.org\r\nSubject: Out of office\r\n\r\nAway.\r\n".utf8)
            .write(to: URL(fileURLWithPath: "\(directory)/away.eml"))
        let send = """
            import smtplib, sys
            with smtplib.SMTP("127.0.0.1", int(sys.argv[1])) as s:
                for name in sys.argv[2:]:
                    print(s.sendmail("", ["bounces@example.com"], open(name, 'rb').read()))
            """
        let sent = try await runInBackground(python, ["-c", send, port, "\(directory)/dsn.eml", "\(directory)/away.eml"])
        #expect(sent.status == 0, "both taken: \(sent.error)")
        // Recorded before the 250 that smtplib has seen.
        #expect(try await outbox.message(id)?.recipients.map(\.state) == [.bounced])
        #expect(try await outbox.suppression(for: "gone@example.org") != nil)
        #expect(await sink.stopped(grace: scaled(.seconds(10))) == 0, "it drains and exits on SIGTERM")
        let log = String(decoding: await sink.outputAndError(quietLimit: .seconds(1)).error, as: UTF8.self)
        #expect(log.contains("bounced gone@example.org") && log.contains("dropped: not a report Sluice reads"), "\(log)")
    }

    @Test(arguments: StoreKind.allCases)
    func withVERPEachRecipientHasItsOwnReturnPathAndABounceToItNamesTheRecipient(store kind: StoreKind) async throws {
        let relay = try await DSNRelay()
        guard let outbox = try await makeOutbox(kind) else { return }
        let id = try await outbox.enqueue(outboxMessage("v", to: ["first@example.org", "second@example.org"]))
        let client = try relayClient(port: relay.port)
        let verp = try VERP(domain: "bounces.example.com")
        let (_, task) = OutboxWorkerTests.start(outbox, client) {
            $0.exitWhenIdle = true
            $0.verp = verp
        }
        try await task.value
        await client.shutdown()
        await relay.server.shutdown()
        let lines = relay.lines.withLock { $0 }.filter { $0.hasPrefix("MAIL") || $0.hasPrefix("RCPT") }
        let senders = lines.filter { $0.hasPrefix("MAIL") }.compactMap { line in
            line.split(separator: "<").dropFirst().first?.split(separator: ">").first.map(String.init)
        }
        #expect(senders.count == 2, "a transaction a recipient: \(lines)")
        #expect(senders.allSatisfy { $0.hasPrefix("bounces+\(id)-") && $0.hasSuffix("@bounces.example.com") }, "\(senders)")
        #expect(Set(senders).count == 2)
        #expect(try await outbox.message(id)?.recipients.map(\.state) == [.delivered, .delivered])
        let second = try #require(senders.first { $0.hasPrefix("bounces+\(id)-1-") })

        // A report with no ENVID, no Message-ID, about a forwarded address: the return path
        // it was delivered to names the recipient.
        let report = Self.dsn(envelopeID: nil, messageID: nil, [("forwarded@elsewhere.example", "failed", "5.1.1")])
        let result = try await outbox.ingestReport(report, deliveredTo: [second])
        #expect(result.bounced.map(\.address) == ["second@example.org"])
        #expect(try await outbox.message(id)?.recipients.map(\.state) == [.delivered, .bounced])

        // Read from the report's own To when no envelope is known.
        let first = try #require(senders.first { $0.hasPrefix("bounces+\(id)-0-") })
        let addressed = Array(String(decoding: report, as: UTF8.self)
            .replacingOccurrences(of: "To: sender@example.com", with: "To: <\(first)>").utf8)
        #expect(try await outbox.ingestReport(addressed).bounced.map(\.address) == ["first@example.org"])

        // A return path with another MAC is forged: nothing changes.
        let forged = first.replacingOccurrences(of: "-0-", with: "-1-")
        let refused = await #expect(throws: OutboxError.self) { try await outbox.ingestReport(report, deliveredTo: [forged]) }
        #expect(refused?.message.contains("forged") == true)
        #expect(try await outbox.suppressions().map(\.target) == ["first@example.org", "second@example.org"])
    }

    @Test func bouncesIngestReadsAnMboxAndSaysWhatItRefused() async throws {
        let (outbox, path, id, envelopeID) = try await Self.sentFromSQLite(to: ["gone@example.org"])
        let directory = try OutboxCommandTests.temporaryDirectory()
        let report = String(decoding: Self.dsn(envelopeID: envelopeID, messageID: nil, [("gone@example.org", "failed", "5.1.1")]),
                            as: UTF8.self).replacingOccurrences(of: "Your message", with: ">From the start of a line, your message")
        let mbox = "From MAILER-DAEMON Sat Dec  5 08:00:00 2026\n" + report.replacingOccurrences(of: "\r\n", with: "\n")
            + "\nFrom someone@example.org Sat Dec  5 08:01:00 2026\nFrom: someone@example.org\nSubject: away\n\nAway.\n"
        try mbox.write(toFile: "\(directory)/bounces.mbox", atomically: true, encoding: .utf8)
        guard let run = try await OutboxCommandTests.sluice(["bounces", "ingest", "--mbox", "\(directory)/bounces.mbox",
                                                            "--outbox", "sqlite:\(path)"]) else { return }
        #expect(run.status == 65, "one of the two is no report: \(run.output) \(run.error)")
        let lines = run.output.split(separator: "\n")
        #expect(lines.count == 2)
        #expect(lines.first?.hasPrefix("\(directory)/bounces.mbox#1: bounced gone@example.org (message \(id), 5.1.1, invalid-recipient, suppressed)") == true,
                "\(run.output)")
        #expect(lines.last?.contains("#2: refused: not a report Sluice reads") == true, "\(run.output)")
        #expect(try await outbox.message(id)?.recipients.map(\.state) == [.bounced])
        let none = try #require(try await OutboxCommandTests.sluice(["bounces", "ingest", "--outbox", "sqlite:\(path)"]))
        #expect(none.status == 64 && none.error.contains("give --maildir DIR, --mbox FILE or message files"))
    }
}
