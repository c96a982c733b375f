import Foundation
import Logging
import Sluice
import SluiceSink
import SluiceTestSupport
import Testing

@Suite("SMTPClient pool")
struct ClientPoolTests {
    @Test func poolNeverOpensMoreConnectionsThanItsMaximum() async throws {
        try await withSinkAndClient(client: { $0.pool.maximumConnections = 3 }) { sink, client in
            try await withThrowingTaskGroup(of: DeliveryReport.self) { group in
                for index in 0..<200 {
                    group.addTask { try await client.send(testMessage("m\(index)"), envelope: envelope()) }
                }
                for try await report in group { #expect(report.outcome == .accepted) }
            }
            #expect(sink.statistics.sessions <= 3)
            #expect(sink.statistics.messages == 200)
        }
    }

    @Test func aConnectionIsRetiredAfterItsMessageLimit() async throws {
        try await withSinkAndClient(client: {
            $0.pool.maximumConnections = 1
            $0.pool.maximumMessagesPerConnection = 5
        }) { sink, client in
            for index in 0..<20 { _ = try await client.send(testMessage("m\(index)"), envelope: envelope()) }
            #expect(sink.statistics.sessions == 4, "20 messages, 5 per connection")
        }
    }

    /// A task that sends one message after another, each as soon as it has the last report,
    /// must find the connection free: one command at a time (no PIPELINING), a pool allowed
    /// four connections, and still one session.
    @Test func sendingOneAfterAnotherUsesOneConnection() async throws {
        try await withSinkAndClient(client: {
            $0.pool.maximumConnections = 4
            $0.pipelining.enabled = false
        }) { sink, client in
            for index in 0..<50 {
                let report = try await client.send(testMessage("m\(index)"), envelope: envelope())
                #expect(report.outcome == .accepted)
            }
            #expect(sink.statistics.sessions == 1, "the pool opened a connection it did not need")
        }
    }

    @Test func anIdleConnectionIsClosedWithQUITAndTheNextMessageOpensAnother() async throws {
        try await withSinkAndClient(client: { $0.pool.idleTimeout = .milliseconds(100) }) { sink, client in
            _ = try await client.send(testMessage("first"), envelope: envelope())
            try await waitUntil { sink.statistics.activeSessions == 0 }
            #expect(sink.statistics.quits == 1, "the client said QUIT rather than dropping the connection")
            _ = try await client.send(testMessage("second"), envelope: envelope())
            #expect(sink.statistics.sessions == 2)
        }
    }

    @Test func aServerThatClosedAnIdleConnectionNeverFailsAMessage() async throws {
        try await withSinkAndClient(sink: { $0.idleTimeout = .milliseconds(200) }) { sink, client in
            _ = try await client.send(testMessage("first"), envelope: envelope())
            try await waitUntil { sink.statistics.activeSessions == 0 }  // the sink's 421 and close
            for index in 0..<5 {
                let report = try await client.send(testMessage("again \(index)"), envelope: envelope())
                #expect(report.outcome == .accepted)
                #expect(report.attempts == 1, "the message never saw the dead connection")
            }
        }
    }

    @Test func refusedConnectsBackOffThenFailTheWaitingMessages() async throws {
        let refused = try RefusedPort()
        defer { refused.close() }  // keeps the port refused to the end
        let port = refused.port
        var configuration = SMTPClient.Configuration(host: "127.0.0.1", port: port, security: .none)
        configuration.pool.connectAttempts = 3
        configuration.pool.connectBackoff = Backoff(initial: .milliseconds(40), maximum: .milliseconds(40))
        let client = try SMTPClient(configuration: configuration)
        let start = ContinuousClock.now
        let errors = await withTaskGroup(of: SMTPError?.self) { group in
            for index in 0..<5 {
                group.addTask { await smtpError { try await client.send(testMessage("m\(index)"), envelope: envelope()) } }
            }
            return await group.reduce(into: []) { $0.append($1) }
        }
        #expect(errors.count == 5)
        #expect(errors.allSatisfy { $0?.kind == .connection && $0?.isTransient == true }, "\(errors)")
        #expect(errors.allSatisfy { $0?.report?.outcome == .deferred })
        #expect(ContinuousClock.now - start >= .milliseconds(70), "two backoffs of about 40 ms came between the three connects")
        await client.shutdown()
    }

    /// The pool is split per event loop. A server that takes one connection and answers 421
    /// to the next lets one loop's part of the pool connect and never the other's: the
    /// messages waiting on the refused side must go through the connection that works, not
    /// fail with the 421.
    @Test func messagesWaitingWhereConnectsFailGoWhereAConnectionIsReady() async throws {
        let group = EventLoopGroup(numberOfLoops: 2)
        // Slow replies keep the first loop's part busy while the sends are spread, so the
        // second loop's part always gets messages and tries to connect (on a busy machine the
        // first connection could otherwise finish each message before the next was sent).
        try await withSinkAndClient(sink: {
            $0.maximumConnections = 1
            $0.replyDelay = .fixed(.milliseconds(10))
        }, client: {
            $0.eventLoopGroup = group
            $0.pool.maximumConnections = 2  // one per loop
            $0.pool.connectAttempts = 3
        }) { sink, client in
            let reports = try await withThrowingTaskGroup(of: DeliveryReport.self) { tasks in
                for index in 0..<20 {
                    tasks.addTask { try await client.send(testMessage("m\(index)"), envelope: envelope()) }
                }
                return try await tasks.reduce(into: []) { $0.append($1) }
            }
            #expect(reports.count == 20)
            #expect(reports.allSatisfy { $0.outcome == .accepted })
            #expect(sink.statistics.refusedSessions >= 1, "the second loop's connects were refused")
            #expect(sink.statistics.messages == 20)
        }
        await group.shutdown()
    }

    @Test func theRateLimitIsNeverOvershot() async throws {
        try await withSinkAndClient(client: {
            $0.rateLimit = SMTPClient.RateLimit(messagesPerSecond: 50, burst: 1)
        }) { sink, client in
            let start = ContinuousClock.now
            let finished = try await withThrowingTaskGroup(of: Duration.self) { group in
                for index in 0..<20 {
                    group.addTask {
                        _ = try await client.send(testMessage("m\(index)"), envelope: envelope())
                        return ContinuousClock.now - start
                    }
                }
                return try await group.reduce(into: []) { $0.append($1) }.sorted()
            }
            // A message finishes after its token was granted, so by the time the k-th has
            // finished at most burst + rate × elapsed can have been let through: checked for
            // every prefix, so a limiter that lets a crowd through and then waits fails too.
            // (A loaded machine only delays the finishes, which this allows.)
            for (index, elapsed) in finished.enumerated() {
                let allowed = 1 + 50 * Double(elapsed.components.seconds) + 50 * Double(elapsed.components.attoseconds) / 1e18
                #expect(Double(index + 1) <= allowed + 0.5, "\(index + 1) messages done after \(elapsed), at most \(allowed) allowed")
            }
            #expect(sink.statistics.messages == 20)
        }
    }

    @Test func aConnectionThatSatIdlePastTheCheckIsProbedWithRSETBeforeItsNextMessage() async throws {
        let lines = LoggedEvents()
        try await withSinkAndClient(client: {
            $0.pool.maximumConnections = 1
            $0.pool.checkAfterIdle = .milliseconds(50)
            $0.pipelining.chunking = false  // with BDAT every later transaction begins with RSET anyway
            var logger = Logger(label: "test") { _ in RecordingHandler(events: lines) }
            logger.logLevel = .trace
            $0.logger = logger
        }) { _, client in
            #expect(try await client.send(testMessage("first"), envelope: envelope()).outcome == .accepted)
            #expect(try await client.send(testMessage("at once"), envelope: envelope()).outcome == .accepted)
            try await Task.sleep(for: .milliseconds(200))
            #expect(try await client.send(testMessage("after a pause"), envelope: envelope()).outcome == .accepted)
            let commands = lines.messages.filter { $0.hasPrefix("C: MAIL FROM:") || $0.hasPrefix("C: RSET") }
            // The second message may follow the first within the check or not (a slow machine),
            // so only the message after the pause is sure to be probed.
            #expect(commands.last?.hasPrefix("C: MAIL FROM:") == true)
            #expect(commands.count >= 4 && commands[commands.count - 2] == "C: RSET", "RSET before the MAIL after the pause: \(commands)")
        }
    }

    @Test func cancellingAQueuedSendCancelsOnlyThatMessage() async throws {
        // No clock decides this test either: a warm-up message readies the one connection,
        // the sink stops reading, the first message's MAIL goes out and can get no reply, so
        // the second can only wait (one connection, no pipelining) until it is cancelled.
        // (An earlier version raced 150 ms reply delays and lost on a loaded machine.)
        let lines = LoggedEvents()
        try await withSinkAndClient(client: {
            $0.pool.maximumConnections = 1
            $0.pool.checkAfterIdle = .seconds(3_600)  // no RSET probe before the first MAIL
            $0.pipelining.enabled = false
            var logger = Logger(label: "test") { _ in RecordingHandler(events: lines) }
            logger.logLevel = .trace
            $0.logger = logger
        }) { sink, client in
            #expect(try await client.send(testMessage("warm-up"), envelope: envelope()).outcome == .accepted)
            sink.pauseReading()
            let first = Task { try await client.send(testMessage("first"), envelope: envelope()) }
            try await waitUntil { lines.messages.filter { $0.hasPrefix("C: MAIL FROM:") }.count == 2 }
            let second = Task { try await client.send(testMessage("second"), envelope: envelope()) }
            try await Task.sleep(for: .milliseconds(20))
            second.cancel()
            let error = await smtpError { try await second.value }
            #expect(error?.kind == .cancelled)
            sink.resumeReading()
            #expect(try await first.value.outcome == .accepted)
            try await Task.sleep(for: .milliseconds(100))
            let stored = sink.messages.map { String(decoding: $0.content, as: UTF8.self) }
            #expect(stored.map { ["warm-up", "first", "second"].filter($0.contains) } == [["warm-up"], ["first"]],
                    "the cancelled message was not stored")
            #expect(lines.messages.filter { $0.hasPrefix("C: MAIL FROM:") }.count == 2, "the second never started")
        }
    }

    @Test(arguments: [false, true])
    func cancellingAStartedSendBeforeItsDataSendsNoContent(pipelining: Bool) async throws {
        // No clock decides this test: a first message readies the connection, the sink stops
        // reading, the second message's MAIL goes on the wire (the transcript says so) and can
        // get no reply; the cancellation reaches the connection (its log says so) and only
        // then does the sink read again. (An earlier version raced 2.5 s reply delays, which a
        // sanitizer on a loaded machine lost.)
        let lines = LoggedEvents()
        try await withSinkAndClient(client: {
            $0.pool.maximumConnections = 1
            $0.pool.checkAfterIdle = .seconds(3_600)  // no RSET probe before the second MAIL
            $0.pipelining.enabled = pipelining
            $0.pipelining.chunking = false
            var logger = Logger(label: "test") { _ in RecordingHandler(events: lines) }
            logger.logLevel = .trace
            $0.logger = logger
        }) { sink, client in
            #expect(try await client.send(testMessage("first"), envelope: envelope()).outcome == .accepted)
            sink.pauseReading()
            let send = Task { try await client.send(testMessage("cancelled"), envelope: envelope()) }
            try await waitUntil { lines.messages.filter { $0.hasPrefix("C: MAIL FROM:") }.count == 2 }
            send.cancel()
            try await waitUntil { lines.messages.contains { $0.hasPrefix("send cancelled") } }
            sink.resumeReading()
            let error = await smtpError { try await send.value }
            #expect(error?.kind == .cancelled)
            #expect(error?.report?.outcome == .deferred)
            let next = try await client.send(testMessage("next"), envelope: envelope())
            #expect(next.outcome == .accepted)
            try await Task.sleep(for: .milliseconds(100))
            let stored = sink.messages.map { String(decoding: $0.content, as: UTF8.self) }
            #expect(stored.map { ["first", "cancelled", "next"].filter($0.contains) } == [["first"], ["next"]],
                    "the cancelled message was not stored")
        }
    }

    @Test func shutdownFinishesWhatItWasGivenThenRefusesNewSends() async throws {
        let sink = try await startSink { $0.replyDelay = .fixed(.milliseconds(20)) }
        let client = try makeClient(for: sink)
        let sends = (0..<20).map { index in Task { try await client.send(testMessage("m\(index)"), envelope: envelope()) } }
        try await waitUntil { sink.statistics.sessions >= 1 }  // work is in flight
        await client.shutdown()
        // Every send that reached the client before shutdown began is delivered; one that
        // came after (a task scheduled late) is refused, and nothing else happens to any.
        var accepted = 0
        for send in sends {
            do {
                #expect(try await send.value.outcome == .accepted)
                accepted += 1
            } catch let error as SMTPError {
                #expect(error.kind == .shutdown)
            }
        }
        #expect(accepted >= 1)
        let late = await smtpError { try await client.send(testMessage("late"), envelope: envelope()) }
        #expect(late?.kind == .shutdown)
        try await waitUntil { sink.statistics.activeSessions == 0 }  // the sink saw QUIT and the close
        #expect(sink.statistics.messages == accepted)
        await sink.shutdown()
    }
}

/// Waits until `condition` holds, for at most `limit`; a miss is recorded at the caller's line.
func waitUntil(
    within limit: Duration = .seconds(10), sourceLocation: SourceLocation = #_sourceLocation, _ condition: () -> Bool
) async throws {
    let limit = scaled(limit)
    let deadline = ContinuousClock.now + limit
    while !condition() {
        guard ContinuousClock.now < deadline else {
            Issue.record("the condition did not come true within \(limit)", sourceLocation: sourceLocation)
            return
        }
        try await Task.sleep(for: .milliseconds(10))
    }
}
