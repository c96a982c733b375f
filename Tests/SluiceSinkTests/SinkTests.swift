import Foundation
import SluiceCore
import SluiceSink
import SluiceTestSupport
import SluiceTransport
import Testing

@Suite("Sink: sessions, stores and limits")
struct SinkTests {
    @Test func pipelinedSessionIsStoredExactlyAsSent() async throws {
        let sink = try await startSink()
        let group = EventLoopGroup(numberOfLoops: 1)
        let client = try await RawSession.open(to: sink.localAddress, on: group.loops[0])
        await client.replies(atLeast: 1)
        try await client.send("EHLO client.example\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n")
        await client.replies(atLeast: 5)
        try await client.send("Subject: hello\r\n\r\n..leading dot\r\nbody\r\n.\r\nQUIT\r\n")
        let clock = ContinuousClock()
        let sent = clock.now
        let replies = await client.replies(atLeast: 7)
        // Once under the thread sanitizer this saw five replies: RawSession.replies(atLeast:)
        // read the replies before the close, and the last two came with the close in between.
        // Should it happen again, say whether the wait ran out or the connection closed.
        try #require(replies.map(\.code.rawValue) == [220, 250, 250, 250, 354, 250, 221],
                     "after \(clock.now - sent), connection closed: \(client.collector.isClosed), \(sink.statistics)")
        let stored = try await sink.waitForMessages(count: 1)
        #expect(stored[0].content == Array("Subject: hello\r\n\r\n.leading dot\r\nbody\r\n".utf8))
        #expect(stored[0].recipients.map(\.address) == ["a@example.com"])
        #expect(replies[5].text.contains(stored[0].id))
        let statistics = sink.statistics
        #expect(statistics.messages == 1 && statistics.recipients == 1 && statistics.sessions == 1)
        await client.collector.waitForClose()
        await sink.shutdown()
        await group.shutdown()
    }

    @Test func maildirMessageIsOnDiskBeforeThe250() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-maildir-\(UUID())").path
        let sink = try await startSink { $0.store = .maildir(directory) }
        let group = EventLoopGroup(numberOfLoops: 1)
        let client = try await RawSession.open(to: sink.localAddress, on: group.loops[0])
        try await client.send("EHLO c\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n")
        await client.replies(atLeast: 5)
        try await client.send("Subject: disk\r\n\r\nkept\r\n.\r\n")
        let replies = await client.replies(atLeast: 6)
        #expect(replies.last?.code == .ok)
        // The 250 arrived, so the file must already be in new/ (written, synced, renamed).
        let names = try FileManager.default.contentsOfDirectory(atPath: directory + "/new")
        #expect(names.count == 1)
        let content = try Data(contentsOf: URL(fileURLWithPath: directory + "/new/" + names[0]))
        let text = String(decoding: content, as: UTF8.self)
        #expect(text.hasPrefix("Return-Path: <s@example.com>\nX-Original-To: a@example.com\n"), "\(text)")
        #expect(text.hasSuffix("\nSubject: disk\n\nkept\n"), "the content, with LF line endings: \(text)")
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory + "/tmp").isEmpty)
        await sink.shutdown()
        await group.shutdown()
    }

    @Test func smuggledSecondMessageIsNeverStored() async throws {
        let sink = try await startSink()
        let group = EventLoopGroup(numberOfLoops: 1)
        for attack in ["a\n.\nMAIL FROM:<evil@example.com>\r\nRCPT TO:<v@example.com>\r\nDATA\r\nevil\r\n.\r\n",
                       "a\r.\rMAIL FROM:<evil@example.com>\r\nRCPT TO:<v@example.com>\r\nDATA\r\nevil\r\n.\r\n"] {
            let client = try await RawSession.open(to: sink.localAddress, on: group.loops[0])
            try await client.send("EHLO c\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n" + attack)
            await client.collector.waitForClose()
            #expect(client.codes.contains(521))
        }
        try await Task.sleep(for: .milliseconds(50))
        #expect(sink.messages.isEmpty, "neither the cut message nor the smuggled one is stored")
        await sink.shutdown()
        await group.shutdown()
    }

    @Test func endlessLineAndEndlessDataAreAnsweredAndTheSessionGoesOn() async throws {
        let sink = try await startSink {
            $0.server.maximumMessageSize = 1 << 20
            // 32 MiB of line and 32 MiB of content take minutes under the sanitizers: the
            // deadlines for a whole line and a whole content must not be what ends them here.
            $0.commandTimeout = scaled(.seconds(600))
            $0.contentTimeout = scaled(.seconds(600))
        }
        let group = EventLoopGroup(numberOfLoops: 1)
        let client = try await RawSession.open(to: sink.localAddress, on: group.loops[0])
        try await pushEndlessLineAndData(client)
        let replies = await client.replies(atLeast: 8)
        #expect(replies.map(\.code.rawValue) == [220, 500, 250, 250, 250, 354, 552, 250], "answered, and the session goes on")
        #expect(sink.messages.isEmpty, "a message over the limit is not stored, even partly")
        await sink.shutdown()
        await group.shutdown()
    }

    @Test func endlessLineAndEndlessDataDoNotGrowTheSinksMemory() async throws {
        // Measured on a sink process of its own: this process's RSS is shared with the
        // suites running in parallel.
        guard let sluice = sluiceCommand() else { return }
        let deadline = "\(Int(600 * testTimeScale))"  // as above: the input takes minutes under the sanitizers
        let command = memoryMeasuredCommand([sluice, "sink", "--listen", "127.0.0.1:0", "--max-message-size", "1048576",
                                             "--command-timeout", deadline, "--content-timeout", deadline])
        let process = try ChildProcess(command[0], Array(command.dropFirst()), error: .null)
        defer { process.stop() }
        let line = try await process.firstOutputLine(within: .seconds(20))
        let port = try #require(Int(line.split(separator: ":").last ?? ""))
        let group = EventLoopGroup(numberOfLoops: 1)
        let client = try await RawSession.open(to: SocketAddress(ipAddress: "127.0.0.1", port: port), on: group.loops[0])
        await client.replies(atLeast: 1)
        // The peak (VmHWM), not the resident size at the end: a sink that buffered the input
        // and freed it afterwards must fail too.
        let before = try #require(process.memoryReading("VmHWM:"), "no VmHWM in /proc/\(process.pid)/status")
        try await pushEndlessLineAndData(client)
        let replies = await client.replies(atLeast: 8)
        #expect(replies.map(\.code.rawValue) == [220, 500, 250, 250, 250, 354, 552, 250])
        let peak = try #require(process.memoryReading("VmHWM:"))
        #expect(peak - before < 16 << 20, "the sink's peak grew by \(peak - before) bytes for 64 MiB of input")
        await client.connection.close()
        await group.shutdown()
    }

    /// 32 MiB of one line without an end, then a transaction with 32 MiB of DATA against a
    /// 1 MiB limit, then NOOP.
    private func pushEndlessLineAndData(_ client: RawSession) async throws {
        let chunk = [UInt8](repeating: UInt8(ascii: "A"), count: 1 << 20)
        for _ in 0..<32 { try await client.send(chunk) }
        try await client.send("\r\nEHLO c\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n")
        await client.replies(atLeast: 6)
        let line = Array((String(repeating: "x", count: 998) + "\r\n").utf8)
        let block = Array(repeating: line, count: 1024).flatMap { $0 }
        for _ in 0..<32 { try await client.send(block) }
        try await client.send(".\r\nNOOP\r\n")
    }

    @Test func garbageNULAndInvalidUTF8GetErrorsAndTheSessionContinues() async throws {
        let sink = try await startSink()
        let group = EventLoopGroup(numberOfLoops: 1)
        let client = try await RawSession.open(to: sink.localAddress, on: group.loops[0])
        try await client.send("GARBAGE\r\nMORE GARBAGE\r\n")
        try await client.send([0x4E, 0x4F, 0x00, 0x4F, 0x50, 13, 10, 0x45, 0x48, 0x4C, 0x4F, 0x20, 0xC3, 0x28, 13, 10])
        try await client.send("NOOP\r\n")
        #expect(await client.replies(atLeast: 6).map(\.code.rawValue) == [220, 500, 500, 500, 500, 250])
        #expect(sink.statistics.protocolErrors == 4)
        await sink.shutdown()
        await group.shutdown()
    }

    @Test func startTLSWithPipelinedPlaintextAnswersOnlyThe220() async throws {
        let certificates = try TestCertificates.shared()
        let sink = try await startSink {
            $0.tls = try? TLSContext(.server(certificateChainFile: certificates.good.certificate, privateKeyFile: certificates.good.key))
        }
        let group = EventLoopGroup(numberOfLoops: 1)
        let client = try await RawSession.open(to: sink.localAddress, on: group.loops[0])
        try await client.send("EHLO c\r\n")
        #expect(await client.replies(atLeast: 2).last?.lines.contains("STARTTLS") == true)
        try await client.send("STARTTLS\r\nRSET\r\n")
        let replies = await client.replies(atLeast: 3)
        try await Task.sleep(for: .milliseconds(100))
        #expect(client.codes == [220, 250, 220], "RSET sent in plaintext behind STARTTLS is never answered")
        _ = replies
        let clientTLS = try TLSContext(.client(trustRoots: .pemFile(certificates.caFile)))
        try await client.connection.startTLS(context: clientTLS, serverName: "localhost")
        try await client.send("EHLO c\r\n")
        let after = await client.replies(atLeast: 4)
        #expect(after.last?.code == .ok)
        #expect(after.last?.lines.contains("STARTTLS") == false)
        #expect(sink.statistics.tlsSessions == 1)
        await sink.shutdown()
        await group.shutdown()
    }

    @Test func thousandsOfIdleConnectionsDoNotStopARealSession() async throws {
        let sink = try await startSink { $0.maximumConnections = 5000 }
        let group = EventLoopGroup(numberOfLoops: 2)
        var idle: [RawSession] = []
        for _ in 0..<2000 { idle.append(try await RawSession.open(to: sink.localAddress, on: group.next())) }
        // A connect can finish before the sink accepts it (past a full accept queue the kernel
        // completes it later): each idle session counts once the sink has greeted it.
        var greeted = 0
        for session in idle where await session.replies(atLeast: 1).first?.code.rawValue == 220 { greeted += 1 }
        #expect(greeted == 2000)
        let client = try await RawSession.open(to: sink.localAddress, on: group.next())
        try await client.send("EHLO c\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n")
        await client.replies(atLeast: 5)
        try await client.send("Subject: x\r\n\r\ny\r\n.\r\n")
        #expect(await client.replies(atLeast: 6).last?.code == .ok)
        #expect(sink.statistics.activeSessions == 2001)
        for session in idle { await session.connection.close() }
        await sink.shutdown()
        await group.shutdown()
    }

    @Test func connectionsPastTheLimitGet421() async throws {
        let sink = try await startSink { $0.maximumConnections = 2 }
        let group = EventLoopGroup(numberOfLoops: 1)
        let first = try await RawSession.open(to: sink.localAddress, on: group.loops[0])
        let second = try await RawSession.open(to: sink.localAddress, on: group.loops[0])
        await first.replies(atLeast: 1)
        await second.replies(atLeast: 1)
        let third = try await RawSession.open(to: sink.localAddress, on: group.loops[0])
        await third.collector.waitForClose()
        #expect(third.codes == [421])
        #expect(sink.statistics.refusedSessions == 1)
        await sink.shutdown()
        await group.shutdown()
    }

    @Test func connectionsArrivingAtOnceOnSeveralLoopsNeverPassTheLimit() async throws {
        // The sink accepts on two loops (a listening socket each); thirty connections arrive
        // together from two more. The limit used to be read, and the session counted later:
        // two accepts at once could both see room for one. That window is narrow, and this
        // test did not hit it in fifteen rounds on the old code here; under ASan it let
        // ClientPoolTests' second connection in instead of refusing it. It guards the limit.
        let sinkGroup = EventLoopGroup(numberOfLoops: 2)
        var configuration = SinkConfiguration()
        configuration.port = 0
        configuration.maximumConnections = 1
        let sink = try await SMTPSink.start(configuration, group: sinkGroup)
        let group = EventLoopGroup(numberOfLoops: 2)
        for round in 0..<5 {
            let sessions = try await withThrowingTaskGroup(of: RawSession.self) { tasks in
                for index in 0..<30 {
                    tasks.addTask { try await RawSession.open(to: sink.localAddress, on: group.loops[index % 2]) }
                }
                return try await tasks.reduce(into: []) { $0.append($1) }
            }
            var greeted = 0
            for session in sessions {
                let codes = await session.replies(atLeast: 1).map(\.code.rawValue)
                if codes.first == 220 { greeted += 1 }
            }
            #expect(greeted == 1, "round \(round): \(greeted) sessions were served at once for a limit of one")
            for session in sessions { await session.connection.close() }
            try await waitUntilNoSessions(sink)
        }
        await sink.shutdown()
        await sinkGroup.shutdown()
        await group.shutdown()
    }

    /// Waits until the sink has no session open (at most 10 s, scaled).
    func waitUntilNoSessions(_ sink: SMTPSink) async throws {
        let deadline = ContinuousClock.now + scaled(.seconds(10))
        while sink.statistics.activeSessions > 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(5)) }
        try #require(sink.statistics.activeSessions == 0)
    }

    @Test func anIdleClientGets421AndIsClosed() async throws {
        let sink = try await startSink { $0.idleTimeout = .milliseconds(200) }
        let group = EventLoopGroup(numberOfLoops: 1)
        let client = try await RawSession.open(to: sink.localAddress, on: group.loops[0])
        await client.collector.waitForClose()
        #expect(client.codes == [220, 421])
        await sink.shutdown()
        await group.shutdown()
    }

    @Test func seededFaultsRepeatExactly() async throws {
        func run() async throws -> [Int] {
            let sink = try await startSink {
                $0.faults.rejectRecipients = .everyNth(3)
                $0.faults.deferRecipients = .probability(0.3)
                $0.faults.seed = 42
            }
            let group = EventLoopGroup(numberOfLoops: 1)
            let client = try await RawSession.open(to: sink.localAddress, on: group.loops[0])
            var script = "EHLO c\r\nMAIL FROM:<s@example.com>\r\n"
            for index in 0..<30 { script += "RCPT TO:<r\(index)@example.com>\r\n" }
            try await client.send(script)
            let codes = await client.replies(atLeast: 33).map(\.code.rawValue)
            await sink.shutdown()
            await group.shutdown()
            return codes
        }
        let first = try await run()
        let second = try await run()
        #expect(first == second, "the same seed gives the same faults")
        let recipientCodes = Array(first.dropFirst(3))
        #expect(recipientCodes.count == 30)
        #expect(stride(from: 2, to: 30, by: 3).allSatisfy { recipientCodes[$0] == 550 }, "every third is rejected")
        #expect(recipientCodes.contains(450) && recipientCodes.contains(250))
    }

    /// A client may hang up while its message is being written: the message is in the store,
    /// so it is in the count too (`sluice soak` compares the two).
    @Test func aMessageStoredAfterItsClientHungUpIsCounted() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-count-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let mbox = directory.appendingPathComponent("count.mbox").path
        let sink = try await startSink { $0.store = .mbox(mbox) }
        let group = EventLoopGroup(numberOfLoops: 1)
        let sessions = 20
        for _ in 0..<sessions {
            let client = try await RawSession.open(to: sink.localAddress, on: group.loops[0])
            // The whole transaction in one write, then gone before any reply.
            try await client.send("EHLO c\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<a@example.com>\r\nDATA\r\nx\r\n.\r\n")
            await client.connection.close()
        }
        func storedCount() -> Int {
            let text = (try? String(contentsOfFile: mbox, encoding: .utf8)) ?? ""
            return text.split(separator: "\n").filter { $0.hasPrefix("From ") }.count
        }
        // Wait until the store and the count agree and stay so for 200 ms: a message written
        // to the mbox is counted a moment later, so one equal reading taken while stores are
        // still going on can be followed by an unequal one.
        let clock = ContinuousClock()
        let deadline = clock.now + scaled(.seconds(10))
        var settled: (stored: Int, counted: Int, since: ContinuousClock.Instant)?
        while clock.now < deadline {
            let (stored, counted) = (storedCount(), sink.statistics.messages)
            if stored > 0, stored == counted {
                if let last = settled, last.stored == stored, last.counted == counted {
                    if clock.now - last.since >= .milliseconds(200) { break }
                } else {
                    settled = (stored, counted, clock.now)
                }
            } else {
                settled = nil
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(storedCount() > 0, "some messages were stored before their clients left")
        #expect(sink.statistics.messages == storedCount(), "the count matches the store")
        await sink.shutdown()
        await group.shutdown()
    }

    @Test func disconnectAfterDataLeavesNoReplyAndNoMessage() async throws {
        let sink = try await startSink {
            $0.faults.disconnect = .everyNth(1)
            $0.faults.disconnectPhase = .afterData
        }
        let group = EventLoopGroup(numberOfLoops: 1)
        let client = try await RawSession.open(to: sink.localAddress, on: group.loops[0])
        try await client.send("EHLO c\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n")
        await client.replies(atLeast: 5)
        try await client.send("x\r\n.\r\n")
        await client.collector.waitForClose()
        #expect(client.codes == [220, 250, 250, 250, 354])
        #expect(sink.messages.isEmpty)
        await sink.shutdown()
        await group.shutdown()
    }
}
