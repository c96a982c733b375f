import Foundation
import Logging
import Sluice
import SluiceTestSupport
import Testing

/// The client against servers nobody here wrote.
@Suite("SMTPClient interop", .serialized)
struct ClientInteropTests {
    /// An aiosmtpd server script: STARTTLS required (certificate and key in argv[2] and
    /// argv[3]), AUTH only after TLS, on 127.0.0.1 port argv[1]; argv[4] is `out`, a file for
    /// the handler. `handler` defines `Handler` (and whatever it needs); `controllerArguments`
    /// are more of `Controller`'s keyword arguments. It prints "ready" once it listens.
    static func aiosmtpdScript(_ handler: String, controllerArguments: String) -> String {
        """
        import asyncio, base64, json, ssl, sys, time
        from aiosmtpd.controller import Controller
        from aiosmtpd.smtp import AuthResult, LoginPassword, MISSING
        port, cert, key, out = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
        \(handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        controller = Controller(Handler(), hostname="127.0.0.1", port=port, tls_context=context,
                                require_starttls=True, auth_require_tls=True, ready_timeout=15,
                                \(controllerArguments))
        controller.start()
        print("ready", flush=True)
        try:
            while True: time.sleep(1)
        except KeyboardInterrupt:
            pass
        finally:
            controller.stop()
        """
    }

    /// aiosmtpd with STARTTLS required and AUTH (only after TLS); each message it takes is
    /// written as one JSON line to the file given.
    static let aiosmtpdServer = aiosmtpdScript("""
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
        """, controllerArguments: "authenticator=authenticate")

    @Test(.needsPeers(python: ["aiosmtpd"]), arguments: [SASLMechanism.plain, .login])
    func aiosmtpdWithSTARTTLSAndAUTH(mechanism: SASLMechanism) async throws {
        guard let aiosmtpd = try await Aiosmtpd.start(Self.aiosmtpdServer) else { return }
        try await withCleanup {
            var configuration = try aiosmtpd.clientConfiguration(mechanism: mechanism)
            configuration.credentials = .password(username: "app", password: "pa55 word")
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

            let received = try aiosmtpd.records()
            #expect(received.count == 3)
            for (index, object) in received.enumerated() {
                #expect(object["from"] as? String == "sender@example.com")
                #expect((object["to"] as? [String])?.count == (index == 1 ? 2 : 1))
                #expect(object["user"] as? String == "app")
                #expect(object["tls"] as? Bool == true)
                let content = (object["content"] as? String).map { Array($0.utf8) }
                #expect(content == messages[index].bytes, "aiosmtpd received the message byte for byte")
            }
        } cleanup: {
            await aiosmtpd.stop()
        }
    }

    /// aiosmtpd refusing the way real servers do: 535 for a wrong password, 550 and 450 for
    /// some recipients. Each failure comes out classified as the failure table says.
    static let aiosmtpdRefusingServer = aiosmtpdScript("""
        class Handler:
            async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
                if address.startswith("gone"):
                    return "550 5.1.1 <%s>: no such user" % address
                if address.startswith("later"):
                    return "450 4.2.1 <%s>: mailbox busy" % address
                envelope.rcpt_tos.append(address)
                return "250 2.1.5 OK"
            async def handle_DATA(self, server, session, envelope):
                return "250 2.0.0 OK"
        def authenticate(server, session, envelope, mechanism, auth_data):
            ok = isinstance(auth_data, LoginPassword) and auth_data.login == b"app" and auth_data.password == b"pa55 word"
            # handled=False: aiosmtpd itself answers (235, or 535 for a wrong password)
            return AuthResult(success=ok, handled=False, auth_data=auth_data)
        """, controllerArguments: "authenticator=authenticate")

    @Test(.needsPeers(python: ["aiosmtpd"])) func aiosmtpdsRefusalsAreClassifiedAsTheFailureTableSays() async throws {
        guard let aiosmtpd = try await Aiosmtpd.start(Self.aiosmtpdRefusingServer) else { return }
        try await withCleanup {
            func send(password: String, to recipients: [String]) async throws -> (DeliveryReport, SMTPError?) {
                var configuration = try aiosmtpd.clientConfiguration(mechanism: .plain)
                configuration.credentials = .password(username: "app", password: password)
                configuration.retry = .none
                let client = try SMTPClient(configuration: configuration)
                defer { Task { await client.shutdown() } }
                do {
                    return (try await client.send(testMessage(), envelope: try Envelope(from: "s@example.com", to: recipients)), nil)
                } catch let error as SMTPError {
                    return (try #require(error.report), error)
                }
            }
            let wrongPassword = try await send(password: "wrong", to: ["a@example.org"])
            #expect(wrongPassword.0.outcome == .failed, "\(wrongPassword.0)")
            #expect(wrongPassword.1?.kind == .authentication && wrongPassword.1?.code == 535 && wrongPassword.1?.isTransient == false)
            #expect(wrongPassword.0.recipients.map(\.status) == [.failed])

            let gone = try await send(password: "pa55 word", to: ["gone1@example.org", "gone2@example.org"])
            #expect(gone.0.outcome == .rejected && gone.1?.command == "RCPT", "\(gone.0)")
            #expect(gone.1?.description.contains("no such user") == true)

            let later = try await send(password: "pa55 word", to: ["later@example.org", "gone@example.org"])
            #expect(later.0.outcome == .deferred && later.1?.isTransient == true && later.1?.code == 450, "the 450 makes it deferred: \(later.0)")
            #expect(later.0.recipients.map(\.status) == [.deferred, .rejected])

            let some = try await send(password: "pa55 word", to: ["a@example.org", "gone@example.org"])
            #expect(some.0.outcome == .partiallyAccepted && some.1 == nil, "\(some.0)")
        } cleanup: {
            await aiosmtpd.stop()
        }
    }

    /// Postfix's smtpd refusing recipients by its access table (a 550 and a 450), with
    /// PIPELINING and CHUNKING: each refusal comes out as the failure table says.
    @Test(.needsPeers(executables: ["postfix"])) func postfixsRefusalsAreClassifiedAsTheFailureTableSays() async throws {
        let access = "inline:{{gone@example.org=550 5.1.1 no such user}, {later@example.org=450 4.2.1 mailbox busy}}"
        guard let postfix = try await PostfixInstance.start(
            mainCF: "smtpd_recipient_restrictions = check_recipient_access \(access), permit_mynetworks, reject")
        else { return }
        try await withCleanup {
            var configuration = SMTPClient.Configuration(host: "127.0.0.1", port: postfix.port, security: .none)
            configuration.retry = .none
            let client = try SMTPClient(configuration: configuration)
            @Sendable func send(_ recipients: String...) async throws -> (DeliveryReport, SMTPError?) {
                do {
                    return (try await client.send(testMessage(), envelope: try Envelope(from: "s@example.com", to: recipients)), nil)
                } catch let error as SMTPError {
                    return (try #require(error.report), error)
                }
            }
            try await withDeadline(.seconds(60), "sending to Postfix") {
                let gone = try await send("gone@example.org")
                #expect(gone.0.outcome == .rejected && gone.1?.command == "RCPT" && gone.1?.code == 550, "\(gone.0)")
                #expect(gone.1?.description.contains("no such user") == true, "\(String(describing: gone.1))")
                let later = try await send("later@example.org", "gone@example.org")
                #expect(later.0.outcome == .deferred && later.1?.code == 450 && later.1?.isTransient == true, "\(later.0)")
                #expect(later.0.recipients.map(\.status) == [.deferred, .rejected])
                let some = try await send("a@example.org", "gone@example.org")
                #expect(some.0.outcome == .partiallyAccepted && some.1 == nil, "\(some.0)")
                #expect(some.0.recipients.map(\.status) == [.accepted, .rejected])
            }
            await client.shutdown()
        } cleanup: {
            await postfix.stop()
        }
    }

    /// Postfix's own refusals, in its own words (no access table here): an unknown local user
    /// and a relay it will not do get the bounce classes a sender acts on.
    @Test(.needsPeers(executables: ["postfix"])) func postfixsOwnRefusalsGetTheirBounceClasses() async throws {
        guard let postfix = try await PostfixInstance.start(mainCF: """
            mydestination = sluice.test
            local_recipient_maps = inline:{{known@sluice.test=known}}
            mynetworks = 192.0.2.0/24
            smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
            """)
        else { return }
        try await withCleanup {
            var configuration = SMTPClient.Configuration(host: "127.0.0.1", port: postfix.port, security: .none)
            configuration.retry = .none
            let client = try SMTPClient(configuration: configuration)
            let report = try await withDeadline(.seconds(60), "sending to Postfix") {
                try await client.send(testMessage(), envelope: try Envelope(
                    from: "s@example.com", to: ["known@sluice.test", "nobody@sluice.test", "a@elsewhere.test"]))
            }
            #expect(report.outcome == .partiallyAccepted, "\(report)")
            #expect(report.recipients.map(\.bounceClass) == [nil, .invalidRecipient, .routing], "\(report)")
            #expect(report.recipients[1].text?.contains("User unknown in local recipient table") == true, "\(report)")
            #expect(report.recipients[2].text?.contains("Relay access denied") == true, "\(report)")
            await client.shutdown()
        } cleanup: {
            await postfix.stop()
        }
    }

    /// aiosmtpd over STARTTLS with XOAUTH2 and OAUTHBEARER written here from their specs
    /// (Google's XOAUTH2 document, RFC 7628): `good-token` for user `app` is accepted; any other
    /// token gets the JSON error challenge, and only the answer the spec asks for (an empty
    /// line for XOAUTH2, a lone ^A for OAUTHBEARER) earns the final 535; anything else is
    /// refused with a 501 naming what was wrong. Each AUTH attempt is one JSON line in `out`.
    static let aiosmtpdOAuthServer = aiosmtpdScript("""
        ERROR = json.dumps({"status": "401", "schemes": "bearer", "scope": "https://mail.example.org/"})
        def record(**fields):
            with open(out, "a") as f:
                f.write(json.dumps(fields) + "\\n")
        async def check(server, mechanism, args, user, fields):
            token = fields.get("auth", "")
            if not token.startswith("Bearer "):
                record(mechanism=mechanism, error="no auth=Bearer field")
                return AuthResult(success=False, handled=False, message="501 5.5.2 no auth=Bearer field")
            record(mechanism=mechanism, user=user, token=token[7:], host=fields.get("host"), port=fields.get("port"))
            if user == "app" and token == "Bearer good-token":
                return AuthResult(success=True, auth_data=LoginPassword(user.encode(), token.encode()))
            answer = await server.challenge_auth(ERROR)
            expected = b"" if mechanism == "XOAUTH2" else b"\\x01"
            if answer is MISSING or answer != expected:
                return AuthResult(success=False, handled=False, message="501 5.5.2 wrong answer to the error challenge: %r" % (answer,))
            return AuthResult(success=False, handled=False, message="535 5.7.8 token refused")
        class Handler:
            async def handle_DATA(self, server, session, envelope):
                return "250 2.0.0 OK"
            async def auth_XOAUTH2(self, server, args):
                blob = base64.b64decode(args[1]) if len(args) > 1 else await server.challenge_auth("")
                parts = blob.split(b"\\x01")
                if len(parts) != 4 or parts[2:] != [b"", b""] or not parts[0].startswith(b"user="):
                    return AuthResult(success=False, handled=False, message="501 5.5.2 malformed XOAUTH2 response")
                fields = dict(p.decode().split("=", 1) for p in parts[1:2])
                return await check(server, "XOAUTH2", args, parts[0][5:].decode(), fields)
            async def auth_OAUTHBEARER(self, server, args):
                blob = base64.b64decode(args[1]) if len(args) > 1 else await server.challenge_auth("")
                parts = blob.split(b"\\x01")
                header = parts[0].decode()
                if not header.startswith("n,a=") or not header.endswith(",") or parts[-2:] != [b"", b""]:
                    return AuthResult(success=False, handled=False, message="501 5.5.2 malformed OAUTHBEARER response")
                fields = dict(p.decode().split("=", 1) for p in parts[1:-2])
                return await check(server, "OAUTHBEARER", args, header[4:-1], fields)
        """, controllerArguments: #"auth_exclude_mechanism=["PLAIN", "LOGIN"]"#)

    /// The OAuth 2.0 mechanisms against a server that checks their exact wire format: the
    /// token provider's token is accepted, a refused token fails the send with the server's
    /// 535 after the error challenge was answered as the spec asks, and under the default
    /// retry policy that permanent refusal is not tried again.
    @Test(.needsPeers(python: ["aiosmtpd"]), arguments: [SASLMechanism.xoauth2, .oauthBearer])
    func aiosmtpdWithOAuth2(mechanism: SASLMechanism) async throws {
        guard let aiosmtpd = try await Aiosmtpd.start(Self.aiosmtpdOAuthServer) else { return }
        try await withCleanup {
            func client(token: String) throws -> SMTPClient {
                var configuration = try aiosmtpd.clientConfiguration(mechanism: mechanism)
                configuration.credentials = .oauth2(username: "app", token: { token })
                return try SMTPClient(configuration: configuration)
            }

            let good = try client(token: "good-token")
            try await withDeadline(.seconds(30), "sending to aiosmtpd with \(mechanism)") {
                for index in 0..<2 {
                    let report = try await good.send(testMessage("oauth\(index)"), envelope: envelope("a@example.org"))
                    #expect(report.outcome == .accepted)
                }
            }
            await good.shutdown()

            let bad = try client(token: "expired-token")
            let error = try await withDeadline(.seconds(30), "a refused token with \(mechanism)") {
                do {
                    _ = try await bad.send(testMessage("refused"), envelope: envelope("a@example.org"))
                    return nil as SMTPError?
                } catch let error as SMTPError {
                    return error
                }
            }
            await bad.shutdown()
            #expect(error?.kind == .authentication, "\(String(describing: error))")
            #expect(error?.code == 535, "the server's final 535, after the error challenge was answered as specified: \(String(describing: error))")

            let attempts = try aiosmtpd.records()
            #expect(attempts.count == 2, "one AUTH per connection: one good, one refused: \(attempts)")
            #expect(attempts.allSatisfy { $0["mechanism"] as? String == mechanism.rawValue && $0["user"] as? String == "app" })
            #expect(attempts.map { $0["token"] as? String } == ["good-token", "expired-token"])
            if mechanism == .oauthBearer {
                #expect(attempts.allSatisfy { $0["host"] as? String == "127.0.0.1" && $0["port"] as? String == "\(aiosmtpd.port)" },
                        "OAUTHBEARER names the server's host and port (RFC 7628 §3.1)")
            }
        } cleanup: {
            await aiosmtpd.stop()
        }
    }

    @Test(.needsPeers(executables: ["smtp-sink"])) func postfixSMTPSinkTakesPipelinedMessagesOnSeveralConnections() async throws {
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
        try await withCleanup {
            var configuration = SMTPClient.Configuration(host: "127.0.0.1", port: port, security: .none)
            configuration.pool.maximumConnections = 4
            let transcript = LoggedEvents()
            var logger = Logger(label: "test") { _ in RecordingHandler(events: transcript) }
            logger.logLevel = .trace
            configuration.logger = logger
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
            // Each connection's transcript on its own: several were greeted, and on one at
            // least a MAIL was followed by its RCPT before any reply came (pipelining; without
            // it every command waits for the reply to the one before).
            var byConnection: [String: [String]] = [:]
            for line in transcript.messages(taggedBy: "smtp.connection") {
                let parts = line.split(separator: " ", maxSplits: 1).map(String.init)
                if parts.count == 2 { byConnection[parts[0], default: []].append(parts[1]) }
            }
            let greeted = byConnection.values.filter { $0.contains { $0.hasPrefix("S: 220") } }
            #expect(greeted.count >= 2, "several connections: \(byConnection.count)")
            let pipelined = byConnection.values.contains { lines in
                zip(lines, lines.dropFirst()).contains { $0.hasPrefix("C: MAIL FROM") && $1.hasPrefix("C: RCPT TO") }
            }
            #expect(pipelined, "MAIL and RCPT went out together")
            let dumped = try FileManager.default.contentsOfDirectory(atPath: directory.path)
            #expect(dumped.count == 200, "smtp-sink dumped every message")
            if let first = dumped.first {
                let text = try String(contentsOfFile: directory.appendingPathComponent(first).path, encoding: .utf8)
                #expect(text.contains("Subject: test pf"))
                #expect(text.contains("\n..a line that starts with a dot") || text.contains("\n.a line that starts with a dot"))
            }
            try? FileManager.default.removeItem(at: directory)
        } cleanup: {
            await server.stop()
        }
    }

    /// Postfix's own smtpd (a private instance: master, smtpd, cleanup, qmgr, and a pipe
    /// delivery that writes each message to a file named by its queue ID), over STARTTLS with
    /// the certificate verified, PIPELINING and CHUNKING (BDAT), four pooled connections. Every
    /// report's queue ID ("250 2.0.0 Ok: queued as …") names the file its own bytes arrived in.
    @Test(.needsPeers(executables: ["postfix"])) func postfixSMTPDTakesChunkedMessagesOverSTARTTLS() async throws {
        let certificates = try TestCertificates.shared()
        guard let postfix = try await PostfixInstance.start(tlsCertificate: certificates.good.certificate,
                                                            tlsKey: certificates.good.key) else { return }
        try await withCleanup {
            let lines = LoggedEvents()
            var configuration = SMTPClient.Configuration(host: "127.0.0.1", port: postfix.port, security: .startTLS)
            configuration.tls = .client(trustRoots: .pemFile(certificates.caFile))
            configuration.tlsServerName = "localhost"
            configuration.pool.maximumConnections = 4
            var logger = Logger(label: "test") { _ in RecordingHandler(events: lines) }
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
            #expect(lines.messages.contains { $0.hasPrefix("C: STARTTLS") }, "STARTTLS was used")
            #expect(lines.messages.contains { $0.hasPrefix("C: BDAT") }, "Postfix offers CHUNKING and it was used")
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
        } cleanup: {
            await postfix.stop()
        }
    }
}

/// One of the aiosmtpd scripts above, running on a free port with the test certificate.
private struct Aiosmtpd {
    let server: PeerProcess
    let port: Int
    /// The file the script's handler writes, one JSON object per line.
    let out: String

    /// Starts `script`; nil when aiosmtpd is missing (outside CI; under CI that is a failure).
    static func start(_ script: String) async throws -> Aiosmtpd? {
        guard let python = await peerPython(importing: ["aiosmtpd"]) else { return nil }
        let certificates = try TestCertificates.shared()
        let out = FileManager.default.temporaryDirectory.appendingPathComponent("aiosmtpd-\(UUID().uuidString).jsonl").path
        // A port found free can be taken by another test's socket before the script binds it,
        // so a start that fails is tried again on another port; the last failure is thrown.
        var attempt = 1
        while true {
            let port = try unusedPort()
            do {
                let server = try await PeerProcess(python, ["-c", script, "\(port)", certificates.good.certificate,
                                                            certificates.good.key, out])
                #expect(server.firstLine == "ready")
                return Aiosmtpd(server: server, port: port, out: out)
            } catch let error as PeerStartError where attempt < 3 {
                print("aiosmtpd did not start on port \(port) (attempt \(attempt)); trying another: \(error)")
                attempt += 1
            }
        }
    }

    /// STARTTLS to it, its certificate verified against the test CA as "localhost".
    func clientConfiguration(mechanism: SASLMechanism) throws -> SMTPClient.Configuration {
        var configuration = SMTPClient.Configuration(host: "127.0.0.1", port: port, security: .startTLS)
        configuration.tls = .client(trustRoots: .pemFile(try TestCertificates.shared().caFile))
        configuration.tlsServerName = "localhost"
        configuration.authenticationMechanism = mechanism
        return configuration
    }

    /// What the handler wrote so far.
    func records() throws -> [[String: Any]] {
        try String(contentsOfFile: out, encoding: .utf8).split(separator: "\n").map {
            try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] ?? [:]
        }
    }

    func stop() async {
        await server.stop()
        try? FileManager.default.removeItem(atPath: out)
    }
}
