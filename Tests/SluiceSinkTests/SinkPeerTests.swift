import Foundation
import SluiceCore
import SluiceSink
import SluiceTestSupport
import SluiceTransport
import Testing

/// The sink against clients nobody here wrote.
@Suite("Sink: independent clients")
struct SinkPeerTests {
    @Test(.needsPeers(executables: ["smtp-source"]), arguments: [1, 100])
    func postfixSMTPSourceDeliversEveryMessageIntact(_ sessions: Int) async throws {
        guard let source = requirePeer("smtp-source", install: "apt-get install postfix") else { return }
        let sink = try await startSink()
        let messages = sessions * 20
        let port = sink.localAddress.port
        let result = try await runInBackground(source, [
            "-s", "\(sessions)", "-m", "\(messages)", "-l", "1024", "-d", "-f", "sender@example.com",
            "-t", "rcpt@example.com", "127.0.0.1:\(port)",
        ])
        #expect(result.status == 0, "smtp-source said: \(result.error)")
        let stored = try await sink.waitForMessages(count: messages, timeout: .seconds(60))
        #expect(stored.count == messages)
        #expect(sink.statistics.messages == messages)
        // smtp-source sends headers (its Message-Id differs per message) and the same body of
        // 1024 'X'-filled bytes each time: every body must arrive intact, CRLF-terminated.
        func body(_ content: [UInt8]) -> [UInt8] {
            let text = String(decoding: content, as: UTF8.self)
            guard let range = text.range(of: "\r\n\r\n") else { return [] }
            return Array(text[range.upperBound...].utf8)
        }
        let firstBody = body(stored[0].content)
        #expect(firstBody.count >= 1024, "the -l 1024 payload, CRLF-terminated lines")
        #expect(stored.allSatisfy { body($0.content) == firstBody }, "every body arrived byte for byte")
        #expect(stored.allSatisfy { $0.content.suffix(2) == [13, 10] })
        #expect(stored.allSatisfy { $0.from?.address == "sender@example.com" && $0.recipients.map(\.address) == ["rcpt@example.com"] })
        await sink.shutdown()
    }

    @Test(.needsPeers(executables: ["swaks"])) func swaksWithSTARTTLSAuthAndPipelining() async throws {
        guard let swaks = requirePeer("swaks", install: "apt-get install swaks") else { return }
        let certificates = try TestCertificates.shared()
        let sink = try await startSink {
            $0.tls = try? TLSContext(.server(certificateChainFile: certificates.good.certificate, privateKeyFile: certificates.good.key))
            $0.server.users = ["alice": "correct horse"]
            $0.server.requireAuthentication = true
        }
        let result = try await runInBackground(swaks, [
            "--server", "127.0.0.1:\(sink.localAddress.port)", "--tls", "--tls-verify", "--tls-ca-path", certificates.caFile,
            "--tls-sni", "localhost", "--auth", "PLAIN", "--auth-user", "alice", "--auth-password", "correct horse",
            "--pipeline", "--from", "alice@example.com", "--to", "bob@example.com,carol@example.com",
            "--header", "Subject: through swaks", "--body", "Hello from swaks.",
        ])
        #expect(result.status == 0, "swaks said: \(result.output.suffix(800))")
        let stored = try await sink.waitForMessages(count: 1)
        #expect(stored[0].authenticatedUser == "alice")
        #expect(stored[0].wasSecure)
        #expect(stored[0].recipients.map(\.address) == ["bob@example.com", "carol@example.com"])
        let text = String(decoding: stored[0].content, as: UTF8.self)
        #expect(text.contains("Subject: through swaks\r\n") && text.contains("Hello from swaks."))

        // A wrong password is refused, and nothing is stored.
        let refused = try await runInBackground(swaks, [
            "--server", "127.0.0.1:\(sink.localAddress.port)", "--tls", "--tls-ca-path", certificates.caFile,
            "--auth", "LOGIN", "--auth-user", "alice", "--auth-password", "wrong", "--to", "bob@example.com",
        ])
        #expect(refused.status != 0)
        #expect(refused.output.contains("535"))
        #expect(sink.messages.count == 1)
        await sink.shutdown()
    }

    @Test(.needsPeers(executables: ["python3"])) func pythonSmtplibWithSMTPUTF8AndBDAT() async throws {
        guard let python = requirePeer("python3", install: "apt-get install python3") else { return }
        let sink = try await startSink()
        let script = """
            import smtplib, sys
            port = int(sys.argv[1])
            with smtplib.SMTP("127.0.0.1", port) as s:
                s.ehlo("python.example")
                assert s.has_extn("smtputf8") and s.has_extn("chunking"), s.esmtp_features
                body = "Subject: =?utf-8?q?caf=C3=A9?=\\r\\n\\r\\nDéjà vu\\r\\n".encode("utf-8")
                s.sendmail("jöran@example.com", ["用户@例子.example"], body, mail_options=["SMTPUTF8", "BODY=8BITMIME"])
                code, _ = s.docmd("MAIL", "FROM:<bdat@example.com>"); assert code == 250, code
                code, _ = s.docmd("RCPT", "TO:<r@example.com>"); assert code == 250, code
                chunk1, chunk2 = b"Subject: chunked\\r\\n\\r\\n", b"in two chunks\\r\\n"
                s.send(b"BDAT %d\\r\\n" % len(chunk1) + chunk1)
                code, _ = s.getreply(); assert code == 250, code
                s.send(b"BDAT %d LAST\\r\\n" % len(chunk2) + chunk2)
                code, text = s.getreply(); assert code == 250, (code, text)
            print("ok")
            """
        let result = try await runInBackground(python, ["-c", script, "\(sink.localAddress.port)"])
        #expect(result.output.contains("ok"), "python said: \(result.error)")
        let stored = try await sink.waitForMessages(count: 2)
        #expect(stored[0].from?.address == "jöran@example.com")
        #expect(stored[0].recipients.map(\.address) == ["用户@例子.example"])
        #expect(stored[0].content == Array("Subject: =?utf-8?q?caf=C3=A9?=\r\n\r\nDéjà vu\r\n".utf8))
        #expect(stored[1].content == Array("Subject: chunked\r\n\r\nin two chunks\r\n".utf8))
        await sink.shutdown()
    }
}

/// `sluice sink`, as a process.
@Suite("sluice sink command")
struct SinkCommandTests {
    private var sluice: String? { sluiceCommand() }

    @Test(.needsPeers(executables: ["python3"])) func printsWhereItListensFirstAndExitsAfterNMessages() async throws {
        guard let sluice, let python = requirePeer("python3", install: "apt-get install python3") else { return }
        let process = try ChildProcess(sluice, ["sink", "--listen", "127.0.0.1:0", "--exit-after", "2", "--store", "memory",
                                                    "--loops", "2"])
        defer { process.stop() }
        let firstLine = try await process.firstOutputLine(within: .seconds(20))
        #expect(firstLine.hasPrefix("listening on 127.0.0.1:"))
        let port = firstLine.split(separator: ":").last.map(String.init) ?? ""
        let send = """
            import smtplib, sys
            with smtplib.SMTP("127.0.0.1", int(sys.argv[1])) as s:
                for i in range(2):
                    s.sendmail("a@example.com", ["b@example.com"], b"Subject: %d\\r\\n\\r\\nx\\r\\n" % i)
            """
        let sent = try await runInBackground(python, ["-c", send, port])
        #expect(sent.status == 0, "\(sent.error)")
        let deadline = ContinuousClock.now + .seconds(10)
        while process.isRunning, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(20)) }
        #expect(!process.isRunning, "it exits after --exit-after messages")
        #expect(await process.stopped() == 0)
        let summary = String(decoding: await process.outputAndError(quietLimit: .seconds(1)).error, as: UTF8.self)
        #expect(summary.contains("messages 2"), "\(summary)")
    }

    @Test func badFlagsAreRefusedWithUsageStatus() async throws {
        guard let sluice else { return }
        for arguments in [["sink", "--store", "tape"], ["sink", "--reject-rcpt", "2.5"], ["sink", "--listen", "nohost"],
                          ["sink", "--disconnect", "0.1:never"], ["sink", "--tls-cert", "/x.pem"],
                          ["sink", "--drop-after-data", "2"], ["sink", "--drop-after-data", "0.1:close"],
                          ["sink", "--loops", "0"], ["sink", "--tls-cert", "/nonexistent/c.pem", "--tls-key", "/nonexistent/k.pem"]] {
            let result = try await runInBackground(sluice, arguments)
            #expect(result.status == 64, "\(arguments): \(result.status) \(result.error)")
            #expect(!result.error.isEmpty)
            #expect(!result.error.contains("Usage: sluice <subcommand>"), "not the root command's usage: \(result.error)")
        }
    }
}
