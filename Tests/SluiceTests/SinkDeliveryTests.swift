import Foundation
import Sluice
import SluiceSink
import SluiceTestSupport
import Testing

/// What `sluice sink` keeps and prints, read back by tools nobody here wrote: Python's
/// `mailbox` and `email` parse the Maildir and mbox files, and the trace fields in them.
@Suite("Sink delivery: trace headers, files and --print")
struct SinkDeliveryTests {
    /// A STARTTLS, AUTH session to a sink storing in `store`; two recipients.
    static func deliverOverTLSWithAUTH(_ store: SinkStore, wireBytes: Bool = false, body: String = "Hello\r\n") async throws {
        let sink = try await startSink(ClientSecurityTests.tlsSink {
            $0.store = store
            $0.storesWireBytes = wireBytes
            $0.server.hostname = "sink.test"
        })
        let client = try makeClient(for: sink) {
            ClientSecurityTests.verifying()(&$0)
            $0.credentials = .password(username: "app", password: "s3cret pass")
        }
        let message = try EncodedMessage(bytes: Array(("From: Ann <ann@example.com>\r\nTo: b@example.org\r\n"
            + "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nMessage-ID: <trace.1@example.com>\r\n\r\n" + body).utf8))
        _ = try await client.send(message, envelope: envelope("b@example.org", "c@example.org"))
        await client.shutdown()
        await sink.shutdown()
    }

    /// Runs a Python script with `arguments`; returns its stdout parsed as a JSON object.
    static func python(_ script: String, _ arguments: [String]) async throws -> [String: Any]? {
        guard let python = requirePeer("python3", install: "apt-get install python3") else { return nil }
        let run = try await runInBackground(python, ["-c", script] + arguments)
        #expect(run.status == 0, "python: \(run.error)")
        return try JSONSerialization.jsonObject(with: Data(run.output.utf8)) as? [String: Any]
    }

    /// Reads the one message of a Maildir or an mbox with Python's `mailbox`, and its trace
    /// fields with `email.utils`.
    static let readBack = """
        import sys, json, mailbox, email.utils
        kind, path = sys.argv[1], sys.argv[2]
        box = mailbox.Maildir(path, create=False) if kind == "maildir" else mailbox.mbox(path, create=False)
        keys = list(box.keys())
        message = box[keys[0]]
        raw = box.get_bytes(keys[0])
        received = message["Received"]
        date = email.utils.parsedate_to_datetime(received.rsplit(";", 1)[1].strip())
        print(json.dumps({
            "count": len(keys), "returnPath": message["Return-Path"],
            "deliveredTo": message.get_all("Delivered-To"), "originalTo": message.get_all("X-Original-To"),
            "received": " ".join(received.split()), "receivedYear": date.year, "utcOffset": date.utcoffset().total_seconds(),
            "subject": str(email.header.make_header(email.header.decode_header(message["Subject"]))),
            "messageId": message["Message-ID"], "hasCR": b"\\r" in raw, "body": message.get_payload(),
            "firstField": raw.split(b"\\n", 1)[0].decode(),
        }))
        """

    static func expectTraceFields(_ result: [String: Any]) {
        #expect(result["count"] as? Int == 1)
        #expect(result["returnPath"] as? String == "<sender@example.com>")
        #expect(result["deliveredTo"] as? [String] == ["b@example.org", "c@example.org"])
        #expect(result["originalTo"] as? [String] == ["b@example.org", "c@example.org"])
        let received = result["received"] as? String ?? ""
        #expect(received.hasPrefix("from client.test ([127.0.0.1]) (using TLSv1.3 with cipher TLS_"), "\(received)")
        #expect(received.contains("(Authenticated sender: app) by sink.test (Sluice sink) with ESMTPSA id "), "\(received)")
        #expect(result["receivedYear"] as? Int ?? 0 >= 2026 && result["utcOffset"] as? Double == 0)
        #expect(result["subject"] as? String == "Grüße")
        #expect(result["messageId"] as? String == "<trace.1@example.com>")
        #expect(result["hasCR"] as? Bool == false, "LF line endings, as Unix mail tools expect")
    }

    @Test(.needsPeers(executables: ["python3"])) func aMaildirMessageCarriesTheEnvelopeAndTheSession() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-trace-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try await Self.deliverOverTLSWithAUTH(.maildir(directory))
        guard let result = try await Self.python(Self.readBack, ["maildir", directory]) else { return }
        Self.expectTraceFields(result)
        #expect(result["firstField"] as? String == "Return-Path: <sender@example.com>")
        #expect(result["body"] as? String == "Hello\n")
    }

    @Test(.needsPeers(executables: ["python3"])) func anMboxMessageCarriesTheEnvelopeAndQuotesFromLines() async throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-trace-\(UUID()).mbox").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        try await Self.deliverOverTLSWithAUTH(.mbox(file), body: "Hello\r\nFrom the start of a line\r\n")
        guard let result = try await Self.python(Self.readBack, ["mbox", file]) else { return }
        Self.expectTraceFields(result)
        #expect(result["body"] as? String == "Hello\n>From the start of a line\n",
                "a body line starting 'From ' is quoted (mboxrd), so the reader does not split the message there")
    }

    @Test func wireBytesKeepTheMessageExactlyAsItCame() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-wire-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try await Self.deliverOverTLSWithAUTH(.maildir(directory), wireBytes: true)
        let files = try FileManager.default.contentsOfDirectory(atPath: directory + "/new")
        let stored = try Data(contentsOf: URL(fileURLWithPath: "\(directory)/new/\(files[0])"))
        #expect(String(decoding: stored, as: UTF8.self) == "From: Ann <ann@example.com>\r\nTo: b@example.org\r\n"
            + "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\nMessage-ID: <trace.1@example.com>\r\n\r\nHello\r\n")
    }

    @Test func printShowsOneLinePerMessageAndFullShowsTheMessageWithControlsEscaped() async throws {
        guard let sluice = sluiceCommand() else { return }
        for mode in ["--print", "--print=full"] {
            let process = try ChildProcess(sluice, ["sink", "--listen", "127.0.0.1:0", "--loops", "1", "--hostname", "sink.test",
                                                    "--stats-interval", "0", mode])
            defer { process.stop() }
            let banner = try await process.firstOutputLine(within: .seconds(20))
            let port = try #require(banner.split(separator: ":").last.flatMap { Int($0) })
            var configuration = SMTPClient.Configuration(host: "127.0.0.1", port: port, security: .none)
            configuration.ehloName = "client.test"
            let client = try SMTPClient(configuration: configuration)
            let message = try EncodedMessage(bytes: Array(("From: a@example.com\r\nSubject: red \u{1B}[31malert\r\n"
                + "Message-ID: <print.1@example.com>\r\n\r\nbody \u{1B}]0;title\u{07}\r\n").utf8))
            _ = try await client.send(message, envelope: envelope("b@example.org", "c@example.org"))
            await client.shutdown()
            let line = await offThread { process.readOutputLine() } ?? ""
            let fields = line.split(separator: " ").map(String.init)
            #expect(fields.count >= 8, "\(line)")
            #expect(fields.first?.hasSuffix("Z") == true && fields.first?.contains("T") == true, "an ISO 8601 time: \(line)")
            #expect(fields.dropFirst().first?.hasPrefix("127.0.0.1:") == true)
            #expect(fields.contains("plain") && fields.contains("from=<sender@example.com>"), "\(line)")
            #expect(fields.contains("to=<b@example.org>,<c@example.org>") && fields.contains("id=<print.1@example.com>"), "\(line)")
            #expect(line.contains("subject=\"red \\x1b[31malert\""), "\(line)")
            #expect(!line.contains("\u{1B}"))
            if mode == "--print=full" {
                var rest: [String] = []
                while let next = await offThread({ process.readOutputLine() }) {
                    rest.append(next)
                    if next.hasPrefix("body") { break }
                }
                #expect(rest.first == "Return-Path: <sender@example.com>", "\(rest)")
                #expect(rest.contains("Subject: red \\x1b[31malert") && rest.last == "body \\x1b]0;title\\x07", "\(rest)")
                #expect(rest.contains { $0.hasPrefix("Received: from client.test ([127.0.0.1])") }, "\(rest)")
                #expect(rest.contains("\tby sink.test (Sluice sink) with ESMTP id 1; " + (rest.first { $0.hasPrefix("\tby") }?.split(separator: ";").last.map { String($0.dropFirst()) } ?? "")), "a tab stays a tab: \(rest)")
            }
        }
    }
}
