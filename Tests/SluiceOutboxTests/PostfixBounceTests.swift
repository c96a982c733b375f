import Foundation
import Sluice
import SluiceMIME
import SluiceOutbox
import SluiceTestSupport
import Testing

/// Bounces nobody here wrote: a private Postfix takes a message from the outbox's worker, the
/// next host refuses one recipient, and Postfix's bounce daemon writes a real delivery status
/// notification back to the outbox's bounce address. `sluice bounces ingest` reads it from
/// where Postfix delivered it, and Python's email package reads the same fields from it.
@Suite(.closesOutboxes) struct PostfixBounceTests {
    @Test(.needsPeers(executables: ["postfix"]))
    func aBounceThatPostfixWritesIsMatchedToItsRecipientAndSuppressesIt() async throws {
        // fail.test's mail host takes the connection and refuses the recipient: after Postfix
        // accepted the message, as a remote host does.
        let remote = try await ScriptedRelay.start { address, _ in
            address == "gone@fail.test" ? "550 5.1.1 <gone@fail.test>: mailbox gone" : "250 2.1.5 ok"
        }
        guard let postfix = try await PostfixInstance.start(mainCF: """
            mydestination = sluice.test
            relay_domains = example.org, fail.test
            transport_maps = inline:{{fail.test=smtp:[127.0.0.1]:\(remote.port)}}
            smtp_tls_security_level = none
            """, masterCF: "smtp unix - - n - - smtp")
        else { return }
        try await withCleanup {
            let directory = try OutboxCommandTests.temporaryDirectory()
            let url = "sqlite:\(directory)/o.db"
            let outbox = try await openOutbox(url)
            try await outbox.initialize()
            let content = "From: news@sluice.test\r\nTo: gone@fail.test, kept@example.org\r\nSubject: weekly\r\n"
                + "Message-ID: <weekly-1@sluice.test>\r\n\r\nhello\r\n"
            let id = try await outbox.enqueue(OutboxMessage(sender: "bounces@sluice.test",
                                                            recipients: ["gone@fail.test", "kept@example.org"],
                                                            content: Array(content.utf8)))
            let client = try relayClient(port: postfix.port)
            let (_, task) = OutboxWorkerTests.start(outbox, client) { $0.exitWhenIdle = true }
            try await withDeadline(.seconds(60), "the worker") { try await task.value }
            await client.shutdown()
            let firstRecord = try await outbox.message(id)
            // Postfix took both; the next host refuses one later.
            #expect(firstRecord?.recipients.map(\.state) == [.delivered, .delivered], "\(String(describing: firstRecord))")

            // Postfix's bounce comes back to bounces@sluice.test, delivered into its mail directory.
            @Sendable func bounce() -> String? {
                let names = (try? FileManager.default.contentsOfDirectory(atPath: postfix.mailDirectory)) ?? []
                return names.filter { !$0.hasPrefix(".") }.map { "\(postfix.mailDirectory)/\($0)" }.first { path in
                    (try? String(contentsOfFile: path, encoding: .utf8))?.contains("report-type=delivery-status") == true
                }
            }
            try await eventually("Postfix writes the bounce", within: .seconds(60)) { bounce() != nil }
            let path = try #require(bounce())
            let text = try String(contentsOfFile: path, encoding: .utf8)
            #expect(text.contains("Original-Envelope-Id: sluice.\(id)."), "Postfix kept the worker's ENVID")

            guard let run = try await OutboxCommandTests.sluice(["bounces", "ingest", path, "--outbox", url, "--json"]) else { return }
            #expect(run.status == 0, "\(run.output) \(run.error)")
            #expect(run.output.contains("\"address\":\"gone@fail.test\"") && run.output.contains("\"bounceClass\":\"invalid-recipient\""),
                    "\(run.output)")
            let record = try #require(try await outbox.message(id))
            #expect(record.recipients.map(\.state) == [.bounced, .delivered])
            #expect(record.recipients[0].enhancedCode == "5.1.1")
            #expect(record.recipients[0].reply?.contains("mailbox gone") == true, "\(String(describing: record.recipients[0].reply))")
            #expect(try await outbox.suppression(for: "gone@fail.test")?.reason == "invalid-recipient")

            // Every file Postfix delivered, read as a Maildir: the relayed copy is no report.
            guard let all = try await OutboxCommandTests.sluice(["bounces", "ingest", "--maildir", postfix.mailDirectory, "--outbox", url])
            else { return }
            #expect(all.status == 65, "one file was not a report: \(all.output)")
            #expect(all.output.contains("refused: not a report Sluice reads"), "\(all.output)")

            // Python's email package reads the same per-recipient fields from Postfix's report.
            if let python = await peerPython(importing: ["email"]) {
                let script = """
                    import email, sys
                    m = email.message_from_binary_file(open(sys.argv[1], 'rb'))
                    status = next(p for p in m.walk() if p.get_content_type() == 'message/delivery-status')
                    for g in status.get_payload()[1:]:
                        print(g['Final-Recipient'].split(';')[-1].strip(), g['Action'].strip(), g['Status'].strip())
                    """
                let seen = try await runInBackground(python, ["-c", script, path])
                guard case .deliveryStatus(let dsn) = try BounceReport(parsing: Array(text.utf8)) else {
                    Issue.record("Postfix's bounce is not read as a DSN")
                    return
                }
                let ours = dsn.recipients.map { "\($0.finalRecipient) \($0.action.rawValue) \($0.status)" }.joined(separator: "\n")
                #expect(seen.output == ours + "\n", "\(seen.output) \(seen.error)")
            }
        } cleanup: {
            await postfix.stop()
            await remote.shutdown()
        }
    }
}
