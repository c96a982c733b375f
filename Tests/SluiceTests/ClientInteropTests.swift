import Foundation
import Logging
import Sluice
import SluiceTestSupport
import Testing

/// The client against servers nobody here wrote.
@Suite("SMTPClient interop", .serialized)
struct ClientInteropTests {
    /// aiosmtpd with STARTTLS required and AUTH (only after TLS); each message it takes is
    /// written as one JSON line to the file given.
    static let aiosmtpdServer = """
        import asyncio, json, ssl, sys, time
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword
        port, cert, key, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
        class Handler:
            async def handle_DATA(self, server, session, envelope):
                with open(out, "a") as f:
                    f.write(json.dumps({"from": envelope.mail_from, "to": envelope.rcpt_tos,
                                        "content": envelope.original_content.decode("latin-1"),
                                        "user": session.auth_data.login.decode() if session.auth_data else None,
                                        "tls": session.ssl is not None}) + "\\n")
                return "250 2.0.0 OK"
        def authenticate(server, session, envelope, mechanism, auth_data):
            ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"app" and auth_data.password == b"pa55 word"
            return AuthResult(success=ok, auth_data=auth_data)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        controller = Controller(Handler(), hostname="127.0.0.1", port=port, tls_context=context,
                                require_starttls=True, authenticator=authenticate, auth_require_tls=True)
        controller.start()
        print("ready", flush=True)
        try:
            while True: time.sleep(1)
        except KeyboardInterrupt:
            pass
        finally:
            controller.stop()
        """

    @Test(arguments: [SASLMechanism.plain, .login])
    func aiosmtpdWithSTARTTLSAndAUTH(mechanism: SASLMechanism) async throws {
        guard let python = peerPython(importing: ["aiosmtpd"]) else { return }
        let certificates = try TestCertificates.shared()
        let port = try unusedPort()
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("aiosmtpd-\(UUID().uuidString).jsonl").path
        let server = try await PeerProcess(python, ["-c", Self.aiosmtpdServer, "\(port)", certificates.good.certificate,
                                                    certificates.good.key, out])
        defer { server.stop() }
        #expect(server.firstLine == "ready")

        var configuration = SMTPClient.Configuration(host: "127.0.0.1", port: port, security: .startTLS)
        configuration.tls = .client(trustRoots: .pemFile(certificates.caFile))
        configuration.tlsServerName = "localhost"
        configuration.credentials = .password(username: "app", password: "pa55 word")
        configuration.authenticationMechanism = mechanism
        let client = try SMTPClient(configuration: configuration)
        let messages = (0..<3).map { testMessage("aio\($0)") }
        try await withDeadline(.seconds(30), "sending to aiosmtpd") {
            for (index, message) in messages.enumerated() {
                let recipients = index == 1 ? ["a@example.org", "b@example.org"] : ["a@example.org"]
                let report = try await client.send(message, envelope: try Envelope(from: "sender@example.com", to: recipients))
                #expect(report.outcome == .accepted)
                #expect(report.recipients.allSatisfy { $0.code == 250 })
            }
        }
        await client.shutdown()

        let lines = try String(contentsOfFile: out, encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 3)
        for (index, line) in lines.enumerated() {
            let object = try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] ?? [:]
            #expect(object["from"] as? String == "sender@example.com")
            #expect((object["to"] as? [String])?.count == (index == 1 ? 2 : 1))
            #expect(object["user"] as? String == "app")
            #expect(object["tls"] as? Bool == true)
            let content = (object["content"] as? String).map { Array($0.utf8) }
            #expect(content == messages[index].bytes, "aiosmtpd received the message byte for byte")
        }
        try? FileManager.default.removeItem(atPath: out)
    }

    @Test func postfixSMTPSinkTakesPipelinedMessagesOnSeveralConnections() async throws {
        guard let smtpSink = requirePeer("smtp-sink", install: "apt-get install postfix") else { return }
        let port = try unusedPort()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("smtp-sink-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        try FileManager.default.setAttributes([.posixPermissions: 0o777], ofItemAtPath: directory.path)
        var arguments = ["-d", directory.path + "/%M.", "127.0.0.1:\(port)", "100"]
        if getuid() == 0 { arguments.insert(contentsOf: ["-u", "nobody"], at: 0) }
        // smtp-sink prints nothing when ready; a shell prints the line once it has started it.
        let server = try await PeerProcess("/bin/sh", ["-c", "exec 3>&1; (sleep 0.3; echo ready >&3) & exec \"$0\" \"$@\" >/dev/null",
                                                       smtpSink] + arguments)
        defer { server.stop() }
        var configuration = SMTPClient.Configuration(host: "127.0.0.1", port: port, security: .none)
        configuration.pool.maximumConnections = 4
        let client = try SMTPClient(configuration: configuration)
        let mails = (0..<200).map { OutgoingMail(envelope: envelope("r\($0)@example.org"), message: testMessage("pf\($0)")) }
        let accepted = try await withDeadline(.seconds(60), "sending to smtp-sink") {
            var accepted = 0
            for try await report in client.send(contentsOf: mails, maximumInFlight: 50) {
                #expect(report.outcome == .accepted, "\(report)")
                if report.outcome == .accepted { accepted += 1 }
            }
            return accepted
        }
        await client.shutdown()
        #expect(accepted == 200)
        let dumped = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        #expect(dumped.count == 200, "smtp-sink dumped every message")
        if let first = dumped.first {
            let text = try String(contentsOfFile: directory.appendingPathComponent(first).path, encoding: .utf8)
            #expect(text.contains("Subject: test pf"))
            #expect(text.contains("\n..a line that starts with a dot") || text.contains("\n.a line that starts with a dot"))
        }
        try? FileManager.default.removeItem(at: directory)
    }

    /// Postfix's own smtpd (a private instance: master, smtpd, cleanup, qmgr, and a pipe
    /// delivery that writes each message to a file named by its queue ID), over STARTTLS with
    /// the certificate verified, PIPELINING and CHUNKING (BDAT), four pooled connections. Every
    /// report's queue ID ("250 2.0.0 Ok: queued as …") names the file its own bytes arrived in.
    @Test func postfixSMTPDTakesChunkedMessagesOverSTARTTLS() async throws {
        let certificates = try TestCertificates.shared()
        guard let postfix = try await PostfixInstance.start(tlsCertificate: certificates.good.certificate,
                                                            tlsKey: certificates.good.key) else { return }
        defer { postfix.stop() }
        let lines = LogLines()
        var configuration = SMTPClient.Configuration(host: "127.0.0.1", port: postfix.port, security: .startTLS)
        configuration.tls = .client(trustRoots: .pemFile(certificates.caFile))
        configuration.tlsServerName = "localhost"
        configuration.pool.maximumConnections = 4
        var logger = Logger(label: "test") { _ in CapturingHandler(lines: lines) }
        logger.logLevel = .trace
        configuration.logger = logger
        let client = try SMTPClient(configuration: configuration)
        let mails = (0..<60).map { index in
            OutgoingMail(envelope: index % 3 == 0 ? envelope("a\(index)@example.org", "b\(index)@example.org")
                                                  : envelope("r\(index)@example.org"),
                         message: testMessage("postfix\(index)", bodyLines: index))
        }
        let queueIDs = try await withDeadline(.seconds(60), "sending to Postfix") {
            var queueIDs: [String: Int] = [:]  // queue ID -> message index
            for try await report in client.send(contentsOf: mails, maximumInFlight: 20) {
                #expect(report.outcome == .accepted, "\(report)")
                let text = report.recipients.first?.reply?.text ?? ""
                guard let index = mails.firstIndex(where: { $0.message.messageID == report.messageID }),
                      let range = text.range(of: "queued as ") else {
                    Issue.record("no queue ID in \(text)")
                    continue
                }
                #expect(report.recipients.count == mails[index].envelope.recipients.count)
                queueIDs[String(text[range.upperBound...].prefix { $0.isLetter || $0.isNumber })] = index
            }
            return queueIDs
        }
        await client.shutdown()
        #expect(queueIDs.count == 60, "60 distinct queue IDs")
        #expect(lines.all.contains { $0.hasPrefix("C: STARTTLS") }, "STARTTLS was used")
        #expect(lines.all.contains { $0.hasPrefix("C: BDAT") }, "Postfix offers CHUNKING and it was used")
        // Postfix delivers on its own time: wait for every file, then compare bytes.
        try await waitUntil(within: .seconds(30)) { queueIDs.keys.allSatisfy { postfix.delivered(queueID: $0) != nil } }
        for (queueID, index) in queueIDs {
            guard let delivered = postfix.delivered(queueID: queueID) else { continue }
            // The pipe delivery writes LF line endings under Postfix's Received: header.
            var text = String(decoding: delivered, as: UTF8.self)
            #expect(text.hasPrefix("Received: from "), "\(queueID)")
            while text.hasPrefix("Received:") || text.hasPrefix(" ") || text.hasPrefix("\t") {
                text = String(text[text.index(after: text.firstIndex(of: "\n") ?? text.startIndex)...])
            }
            let sent = String(decoding: mails[index].message.bytes, as: UTF8.self).replacingOccurrences(of: "\r\n", with: "\n")
            #expect(text == sent, "message \(index) arrived byte for byte as \(queueID)")
        }
    }
}
