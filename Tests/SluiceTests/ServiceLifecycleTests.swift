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
                try await waitUntil { sink.statistics.sessions >= 1 }
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
}
