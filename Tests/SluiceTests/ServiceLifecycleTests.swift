import ServiceLifecycle
import ServiceLifecycleTestKit
import Sluice
import SluiceSink
import SluiceTestSupport
import SluiceTransport
import Testing

/// `SMTPClient` and `SMTPSink` as swift-service-lifecycle services: what a graceful shutdown does.
@Suite("ServiceLifecycle")
struct ServiceLifecycleTests {
    @Test func aGracefulShutdownFinishesTheClientsMessagesInFlightThenClosesIt() async throws {
        // Replies are held, so the message is still in flight when the shutdown begins.
        let sink = try await startSink { $0.replyDelay = .fixed(.milliseconds(200)) }
        let client = try makeClient(for: sink)
        try await testGracefulShutdown { trigger in
            try await withThrowingTaskGroup { tasks in
                tasks.addTask { try await client.run() }
                let sending = Task { try await client.send(testMessage(), envelope: envelope()) }
                try await waitUntil(within: .seconds(30)) { sink.statistics.sessions >= 1 }
                trigger.triggerGracefulShutdown()
                let report = try await sending.value
                #expect(report.outcome == .accepted, "the message in flight is finished, not dropped")
                try await tasks.next()  // run() returns once the client has shut down
                #expect(sink.statistics.messages == 1)
                try await waitUntil { sink.statistics.quits == 1 }
                let late = await #expect(throws: SMTPError.self) {
                    try await client.send(testMessage("late"), envelope: envelope())
                }
                #expect(late?.kind == .shutdown, "a send after the shutdown is refused: \(String(describing: late))")
            }
        }
        await sink.shutdown()
    }

    @Test func cancellingTheClientsRunAlsoShutsItDown() async throws {
        let sink = try await startSink()
        let client = try makeClient(for: sink)
        _ = try await client.send(testMessage(), envelope: envelope())
        let running = Task { try await client.run() }
        running.cancel()
        try await running.value
        try await waitUntil { sink.statistics.quits == 1 }
        await #expect(throws: SMTPError.self) { try await client.send(testMessage("late"), envelope: envelope()) }
        await sink.shutdown()
    }

    @Test func aGracefulShutdownStopsTheSinkListening() async throws {
        let sink = try await startSink { $0.drainGrace = .seconds(2) }
        let port = sink.localAddress.port
        // One try, one connect: the send after the shutdown must fail at once.
        var configuration = SMTPClient.Configuration(host: "127.0.0.1", port: port, security: .none)
        configuration.retry.maximumAttempts = 1
        configuration.pool.connectAttempts = 1
        let client = try SMTPClient(configuration: configuration)
        _ = try await client.send(testMessage(), envelope: envelope())
        await client.shutdown()
        try await testGracefulShutdown { trigger in
            try await withThrowingTaskGroup { tasks in
                tasks.addTask { try await sink.run() }
                trigger.triggerGracefulShutdown()
                try await tasks.next()
            }
        }
        #expect(sink.statistics.messages == 1)
        let refused = try SMTPClient(configuration: configuration)
        await #expect(throws: SMTPError.self, "nothing listens after the shutdown") {
            try await refused.send(testMessage("late"), envelope: envelope())
        }
        await refused.shutdown()
    }

    @Test func aSessionStillInItsContentWhenTheGraceRunsOutIsClosed() async throws {
        let sink = try await startSink { $0.drainGrace = .milliseconds(300) }
        let group = EventLoopGroup(numberOfLoops: 1)
        let session = try await RawSession.open(to: sink.localAddress, on: group.loops[0])
        try await session.send("EHLO c.example\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n")
        await session.replies(atLeast: 5)
        try await session.send("Subject: never finished\r\n")  // and no end of data
        try await testGracefulShutdown { trigger in
            let running = Task { try await sink.run() }  // inherits the test's shutdown trigger
            trigger.triggerGracefulShutdown()
            // Generous: in CI's first minute, with every suite starting at once on two cores,
            // 10 s ran out once. A hang still fails, long before the 300 s idle timeout.
            try await withDeadline(.seconds(60), "the sink's run() after its grace") { try await running.value }
        }
        try await waitUntil(within: .seconds(30)) { session.collector.isClosed }  // long before the 300 s idle timeout
        #expect(sink.statistics.messages == 0)
        await group.shutdown()
    }
}
