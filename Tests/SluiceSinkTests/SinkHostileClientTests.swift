import Foundation
import SluiceCore
import SluiceSink
import SluiceTestSupport
import SluiceTransport
import Testing

/// The sink against clients out to hold it or get into it: slowloris, malformed and huge
/// BDAT sizes, AUTH guessing (ROBUSTNESS.md, The sink server).
@Suite("Sink: hostile clients")
struct SinkHostileClientTests {
    /// Sends `text` one byte at a time, `every` apart, until the connection closes or `limit`
    /// passes.
    private func trickle(_ text: String, to client: RawSession, every gap: Duration, for limit: Duration) async {
        let clock = ContinuousClock()
        let start = clock.now
        for byte in Array(text.utf8) {
            if client.collector.isClosed || clock.now - start > limit { break }
            try? await client.send([byte])
            try? await Task.sleep(for: gap)
        }
    }

    /// The session ended with the deadline's 421, and the sink counted it.
    private func expectClosedForTakingTooLong(_ client: RawSession, _ sink: SMTPSink) async {
        await client.collector.waitForClose()
        let last = client.replies.last
        #expect(last?.code == .serviceNotAvailable && last?.text.contains("took too long") == true, "\(client.replies)")
        #expect(sink.statistics.slowClientsClosed == 1)
    }

    @Test func traceFieldsNeverCarryWhatTheClientSentRaw() async throws {
        let sink = try await startSink { $0.server.hostname = "sink.test" }
        let group = EventLoopGroup(numberOfLoops: 1)
        let client = try await RawSession.open(to: sink.localAddress, on: group.loops[0])
        // The EHLO name is the one thing of the client's that reaches the trace fields unchecked
        // (addresses with controls are refused at MAIL and RCPT).
        try await client.send("EHLO evil\u{1B}[31m\u{9B}.test\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
        try await client.send("Subject: x\r\n\r\nbody\r\n.\r\n")
        let replies = await client.replies(atLeast: 6)
        #expect(replies.last?.code == .ok, "\(replies)")
        let stored = try await sink.waitForMessages(count: 1)
        let fields = stored[0].traceHeaders(by: "sink.test")
        let visible = fields.unicodeScalars.allSatisfy { (32...126).contains($0.value) || $0 == "\r" || $0 == "\n" || $0 == "\t" }
        #expect(visible, "\(fields.debugDescription)")
        #expect(fields.contains("Received: from evil?[31m??.test ([127.0.0.1])"), "\(fields.debugDescription)")
        #expect(fields.split(separator: "\r\n").allSatisfy { !$0.isEmpty }, "one field per line: \(fields.debugDescription)")
        await sink.shutdown()
        await group.shutdown()
    }

    @Test func aCommandLineTrickledAByteAtATimeIsCutOffAtItsDeadline() async throws {
        let sink = try await startSink {
            $0.idleTimeout = .seconds(30)
            $0.commandTimeout = scaled(.milliseconds(400))
        }
        let group = EventLoopGroup(numberOfLoops: 1)
        let client = try await RawSession.open(to: sink.localAddress, on: group.loops[0])
        await client.replies(atLeast: 1)
        // Each byte comes well inside the idle timeout, which restarts on every byte.
        let line = "MAIL FROM:<" + String(repeating: "a", count: 200) + "@example.com>\r\n"
        await trickle(line, to: client, every: .milliseconds(20), for: scaled(.seconds(3)))
        await expectClosedForTakingTooLong(client, sink)
        await sink.shutdown()
        await group.shutdown()
    }

    @Test func contentTrickledAByteAtATimeIsCutOffAtItsDeadlineAndNotStored() async throws {
        let sink = try await startSink {
            $0.idleTimeout = .seconds(30)
            $0.contentTimeout = scaled(.milliseconds(400))
        }
        let group = EventLoopGroup(numberOfLoops: 1)
        let client = try await RawSession.open(to: sink.localAddress, on: group.loops[0])
        try await client.send("EHLO c\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n")
        await client.replies(atLeast: 5)
        await trickle(String(repeating: "x", count: 200) + "\r\n.\r\n", to: client, every: .milliseconds(20),
                      for: scaled(.seconds(3)))
        await expectClosedForTakingTooLong(client, sink)
        #expect(sink.statistics.messages == 0, "a partial message is never stored")
        await sink.shutdown()
        await group.shutdown()
    }

    @Test(.needsPeers(executables: ["python3"])) func aBusyPipeliningClientIsNeverTakenForASlowOne() async throws {
        // Every read ends one line and starts the next, so some line is always half-sent, for
        // longer than the deadline in all: each line gets its own deadline. The client is a
        // process of its own: in the full parallel suite this test's own task was seen to
        // sleep 3 s for a 25 ms pause, starved by the other tests.
        guard let python = requirePeer("python3", install: "apt-get install python3") else { return }
        let sink = try await startSink { $0.commandTimeout = scaled(.seconds(2)) }
        let client = """
            import socket, sys, time
            s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
            s.settimeout(30)
            s.sendall(b"NO")
            end = time.monotonic() + float(sys.argv[2])
            lines = 0
            while time.monotonic() < end:
                time.sleep(0.025)
                s.sendall(b"OP\\r\\nNO")
                lines += 1
            s.sendall(b"OP\\r\\nQUIT\\r\\n")
            lines += 1
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
            codes = [line[:3].decode() for line in data.split(b"\\r\\n") if len(line) >= 3]
            print(lines, " ".join(codes))
            """
        let seconds = 4.5 * testTimeScale
        let run = try await runInBackground(python, ["-c", client, "\(sink.localAddress.port)", "\(seconds)"])
        #expect(run.status == 0, "\(run.error)")
        let words = run.output.split(whereSeparator: \.isWhitespace).map(String.init)
        let lines = Int(words.first ?? "") ?? -1
        let codes = Array(words.dropFirst())
        #expect(lines > 20, "the client kept a line half-sent for several seconds")
        #expect(codes == ["220"] + Array(repeating: "250", count: max(0, lines)) + ["221"],
                "every NOOP answered, then QUIT; no 421: \(codes.suffix(3)) after \(lines) lines")
        #expect(sink.statistics.slowClientsClosed == 0)
        await sink.shutdown()
    }

    // "laſt" upper-cases to LAST under Unicode rules; the keyword is ASCII (RFC 3030).
    @Test(arguments: ["+5", "-0", "5x", "0x5", " 5", "５", "5 laſt", "5  LAST", "5 LAST LAST", "5 ", "5 LAS"])
    func aBDATWhoseSizeIsNotASCIIDigitsOrWhoseLASTIsNotLASTIsRefusedAndTheStreamStaysInStep(size: String) async throws {
        let sink = try await startSink()
        let group = EventLoopGroup(numberOfLoops: 1)
        let client = try await RawSession.open(to: sink.localAddress, on: group.loops[0])
        try await client.send("EHLO c\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<a@example.com>\r\nBDAT \(size)\r\nNOOP\r\n")
        let replies = await client.replies(atLeast: 6)
        #expect(replies.map(\.code.rawValue) == [220, 250, 250, 250, 501, 250], "BDAT \(size): \(replies)")
        #expect(!client.collector.isClosed)
        await sink.shutdown()
        await group.shutdown()
    }

    @Test(arguments: ["1000000000000000", "99999999999999999999999999", "1048577"])
    func aChunkDeclaredLargerThanTheLimitIsRefusedFromItsSize(size: String) async throws {
        let sink = try await startSink {
            $0.server.maximumMessageSize = 1 << 20
            $0.idleTimeout = .seconds(60)
        }
        let group = EventLoopGroup(numberOfLoops: 1)
        let client = try await RawSession.open(to: sink.localAddress, on: group.loops[0])
        try await client.send("EHLO c\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<a@example.com>\r\nBDAT \(size) LAST\r\n")
        // Not one byte of the chunk is sent: the refusal comes from the declared size alone.
        let replies = await client.replies(atLeast: 5)
        #expect(replies.map(\.code.rawValue) == [220, 250, 250, 250, 552], "\(replies)")
        await client.collector.waitForClose()
        #expect(sink.statistics.messages == 0)
        await sink.shutdown()
        await group.shutdown()
    }

    @Test func chunksThatAddUpPastTheLimitAreRefusedAtTheOneThatCrossesIt() async throws {
        let sink = try await startSink { $0.server.maximumMessageSize = 100 }
        let group = EventLoopGroup(numberOfLoops: 1)
        let client = try await RawSession.open(to: sink.localAddress, on: group.loops[0])
        let sixty = String(repeating: "x", count: 58) + "\r\n"
        try await client.send("EHLO c\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<a@example.com>\r\nBDAT 60\r\n\(sixty)BDAT 60 LAST\r\n")
        let replies = await client.replies(atLeast: 6)
        #expect(replies.map(\.code.rawValue) == [220, 250, 250, 250, 250, 552], "\(replies)")
        await sink.shutdown()
        await group.shutdown()
    }

    private func authenticationSink(perAddress: Int = 100) async throws -> SMTPSink {
        try await startSink {
            $0.server.users = ["ada": "right"]
            $0.server.authenticationRequiresTLS = false
            $0.server.maximumAuthenticationFailures = 5
            $0.maximumAuthenticationFailuresPerAddress = perAddress
            $0.authenticationFailureDelay = .milliseconds(40)
            $0.idleTimeout = .seconds(60)
        }
    }

    private static func plain(_ password: String) -> String {
        "AUTH PLAIN " + Base64.encode(Array("\u{0}ada\u{0}\(password)".utf8)) + "\r\n"
    }

    @Test func guessingPasswordsIsSlowedAndEndsIn421() async throws {
        let sink = try await authenticationSink()
        let group = EventLoopGroup(numberOfLoops: 1)
        let client = try await RawSession.open(to: sink.localAddress, on: group.loops[0])
        try await client.send("EHLO c\r\n")
        await client.replies(atLeast: 2)
        let clock = ContinuousClock()
        let start = clock.now
        try await client.send((1...200).map { Self.plain("guess\($0)") }.joined())
        await client.collector.waitForClose()
        let elapsed = clock.now - start
        let codes = client.codes.dropFirst(2)
        #expect(Array(codes) == [535, 535, 535, 535, 421], "five tries, the fifth answered 421: \(client.replies)")
        // After each failure nothing more is read for 40 ms times the failures so far: the
        // fifth guess is read 40 + 80 + 120 + 160 ms after the first.
        #expect(elapsed >= .milliseconds(400), "the guesses were slowed down: \(elapsed)")
        #expect(sink.statistics.authenticationFailures == 5)
        await sink.shutdown()
        await group.shutdown()
    }

    @Test func anAddressThatKeepsGuessingIsRefusedOnNewConnections() async throws {
        let sink = try await authenticationSink(perAddress: 3)
        let group = EventLoopGroup(numberOfLoops: 1)
        let first = try await RawSession.open(to: sink.localAddress, on: group.loops[0])
        try await first.send("EHLO c\r\n" + (1...3).map { Self.plain("guess\($0)") }.joined())
        let replies = await first.replies(atLeast: 6)
        #expect(replies.map(\.code.rawValue) == [220, 250, 535, 535, 535, 421], "\(replies)")
        #expect(replies.last?.text.contains("failed authentications from") == true, "closed for the address: \(replies)")
        let second = try await RawSession.open(to: sink.localAddress, on: group.loops[0])
        await second.collector.waitForClose()
        #expect(second.codes == [421], "refused at the greeting: \(second.replies)")
        #expect(second.replies.first?.text.contains("failed authentications") == true)
        await sink.shutdown()
        await group.shutdown()
    }

    @Test func drainingLetsContentFinishAndAnswersEverythingElse421() async throws {
        let sink = try await startSink { $0.drainSettle = scaled(.seconds(2)) }
        let group = EventLoopGroup(numberOfLoops: 1)
        let sending = try await RawSession.open(to: sink.localAddress, on: group.loops[0])
        let idle = try await RawSession.open(to: sink.localAddress, on: group.loops[0])
        let leaving = try await RawSession.open(to: sink.localAddress, on: group.loops[0])
        try await leaving.send("EHLO c\r\n")
        await leaving.replies(atLeast: 2)
        try await sending.send("EHLO c\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<a@example.com>\r\nDATA\r\nSubject: x\r\n\r\nhalf")
        await sending.replies(atLeast: 5)
        try await idle.send("EHLO c\r\n")
        await idle.replies(atLeast: 2)
        let draining = Task { await sink.drain(grace: scaled(.seconds(10))) }
        try await Task.sleep(for: scaled(.milliseconds(200)))  // the drain has begun
        try await leaving.send("QUIT\r\n")
        await leaving.collector.waitForClose()
        #expect(leaving.codes.last == 221, "a client that quits as the drain starts is answered: \(leaving.replies)")
        await idle.collector.waitForClose()
        #expect(idle.codes.last == 421, "a silent session between commands is told soon after: \(idle.replies)")
        try await sending.send(" and the rest\r\n.\r\nMAIL FROM:<s@example.com>\r\n")
        await sending.collector.waitForClose()
        #expect(Array(sending.codes.suffix(2)) == [250, 421], "the message in its content gets its 250: \(sending.replies)")
        #expect(await draining.value == 0, "every session closed within the grace period")
        #expect(sink.statistics.messages == 1)
        await sink.shutdown()
        await group.shutdown()
    }
}
