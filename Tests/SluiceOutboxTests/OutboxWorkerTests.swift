import Foundation
import MetricsTestKit
import Sluice
import SluiceOutbox
import SluiceSink
import SluiceTestSupport
import Testing

/// The worker against real SMTP servers, on a clock the test moves.
@Suite(.closesOutboxes) struct OutboxWorkerTests {
    /// Runs a worker in a task; the test cancels it when done.
    static func start(_ outbox: Outbox, _ client: SMTPClient,
                      _ configure: (inout OutboxWorker.Configuration) -> Void = { _ in })
        -> (OutboxWorker, Task<Void, any Error>)
    {
        var configuration = OutboxWorker.Configuration()
        configuration.pollInterval = .milliseconds(20)
        configure(&configuration)
        let worker = OutboxWorker(outbox: outbox, client: client, configuration: configuration)
        return (worker, Task { try await worker.run() })
    }

    @Test(arguments: StoreKind.allCases)
    func aDeferredRecipientIsRetriedAloneUntilAcceptedAndARefusalIsFinal(store kind: StoreKind) async throws {
        // later@ is refused with a 450 three times, then accepted.
        let relay = try await ScriptedRelay.start { address, before in
            switch address {
            case "bad@example.org": "550 5.1.1 no such user"
            case "later@example.org": before < 3 ? "450 4.2.0 mailbox busy" : "250 2.1.5 ok"
            default: "250 2.1.5 ok"
            }
        }
        let clock = ManualClock()
        guard let outbox = try await makeOutbox(kind, clock: clock) else { return }
        let client = try relayClient(port: relay.port)
        let id = try await outbox.enqueue(outboxMessage("d", to: ["ok@example.org", "later@example.org", "bad@example.org"]))
        let (worker, task) = Self.start(outbox, client)
        for attempt in 1...3 {
            try await eventually("attempt \(attempt) is recorded") {
                try await outbox.message(id)?.recipients[1].attempts == attempt
            }
            let record = try #require(try await outbox.message(id))
            #expect(record.recipients.map(\.state) == [.delivered, .deferred, .failed])
            let due = try #require(record.dueAt)
            // 1, 2, 4 minutes, with ±10 % jitter.
            let delay = due.timeIntervalSince(clock.now())
            let expected = 60 * pow(2, Double(attempt - 1))
            #expect(delay >= expected * 0.9 && delay <= expected * 1.1, "attempt \(attempt): \(delay) s")
            clock.advance(by: .seconds(Int64(delay.rounded(.up))))
            worker.wake()
        }
        try await eventually("later@ is delivered") {
            try await outbox.message(id)?.recipients[1].state == .delivered
        }
        let record = try #require(try await outbox.message(id))
        #expect(record.attempts == 4)
        #expect(record.dueAt == nil)
        #expect(record.recipients[0].attempts == 1)
        #expect(record.recipients[1].attempts == 4)
        #expect(record.recipients[1].attemptTimes.count == 4)
        #expect(record.recipients[1].code == 250)
        #expect(record.recipients[2].attempts == 1)
        #expect(record.recipients[2].code == 550)
        #expect(record.recipients[2].enhancedCode == "5.1.1")
        #expect(record.recipients[2].reply == "no such user")
        // Only the deferred recipient went again.
        #expect(relay.rcptCount("ok@example.org") == 1)
        #expect(relay.rcptCount("bad@example.org") == 1)
        #expect(relay.rcptCount("later@example.org") == 4)
        task.cancel()
        try await task.value
        // Counted once the outcome is written: final once run() has returned.
        #expect(worker.statistics.delivered == 2)
        #expect(worker.statistics.deferred == 3)
        #expect(worker.statistics.failed == 1)
        await client.shutdown()
        await relay.shutdown()
        await outbox.close()
    }

    @Test(arguments: StoreKind.allCases)
    func aRecipientDeferredPastTheMaximumAgeExpiresWithItsLastReply(store kind: StoreKind) async throws {
        let relay = try await ScriptedRelay.start { _, before in "451 4.7.1 greylisted (\(before))" }
        let clock = ManualClock()
        guard let outbox = try await makeOutbox(kind, clock: clock) else { return }
        let client = try relayClient(port: relay.port)
        let id = try await outbox.enqueue(outboxMessage("e"))
        let (worker, task) = Self.start(outbox, client) { configuration in
            configuration.maximumAge = .seconds(600)
            configuration.retry = Backoff(initial: .seconds(60), maximum: .seconds(120))
        }
        var attempts = 0
        while try await outbox.message(id)?.recipients[0].state != .expired {
            attempts += 1
            try #require(attempts < 20, "never expired")
            try await eventually("attempt \(attempts) is recorded") { [attempts] in
                try await outbox.message(id)?.recipients[0].attempts == attempts
            }
            clock.advance(by: .seconds(121))
            worker.wake()
        }
        let recipient = try #require(try await outbox.message(id)?.recipients[0])
        // 60 s, then 120 s apart: the attempt that would be due after 600 s is not made.
        #expect((5...7).contains(recipient.attempts), "\(recipient.attempts)")
        #expect(recipient.code == 451)
        #expect(recipient.reply == "greylisted (\(recipient.attempts - 1))")
        #expect(try await outbox.store.hasPendingWork() == false)
        task.cancel()
        try await task.value
        // Counted once the outcome is written: final once run() has returned.
        #expect(worker.statistics.expired == 1)
        await client.shutdown()
        await relay.shutdown()
    }

    @Test(arguments: StoreKind.allCases, OutboxWorker.UnknownOutcomePolicy.allCases)
    func anUnknownOutcomeIsNeverDelivered(store kind: StoreKind, policy: OutboxWorker.UnknownOutcomePolicy) async throws {
        // The sink closes the connection after the end of the data, before its reply.
        let sink = try await startSink { configuration in
            configuration.faults.dropAfterData = .everyNth(1)
        }
        let clock = ManualClock()
        guard let outbox = try await makeOutbox(kind, clock: clock) else { return }
        let client = try relayClient(port: sink.localAddress.port)
        let id = try await outbox.enqueue(outboxMessage("u"))
        let (worker, task) = Self.start(outbox, client) { $0.unknownOutcome = policy }
        try await eventually("the attempt is recorded") {
            try await outbox.message(id)?.recipients[0].attempts == 1
        }
        let recipient = try #require(try await outbox.message(id)?.recipients[0])
        #expect(recipient.state == (policy == .hold ? .unknown : .deferred))
        #expect(recipient.unknownOutcomes == 1)
        #expect(recipient.code == nil)
        #expect(try await outbox.store.hasPendingWork() == (policy == .retry))
        task.cancel()
        try await task.value
        // Counted once the outcome is written: final once run() has returned.
        #expect(worker.statistics.unknown == 1)
        #expect(worker.statistics.delivered == 0)
        await client.shutdown()
        await sink.shutdown()
    }

    @Test(arguments: StoreKind.allCases)
    func scheduledAndCancelledMessagesWaitAndStay(store kind: StoreKind) async throws {
        let relay = try await ScriptedRelay.start { _, _ in "250 ok" }
        let clock = ManualClock()
        guard let outbox = try await makeOutbox(kind, clock: clock) else { return }
        let client = try relayClient(port: relay.port)
        let scheduled = try await outbox.enqueue(outboxMessage("s", to: ["scheduled@example.org"], notBefore: clock.now() + 3_600))
        let cancelled = try await outbox.enqueue(outboxMessage("c", to: ["cancelled@example.org"], notBefore: clock.now() + 60))
        let now = try await outbox.enqueue(outboxMessage("n", to: ["now@example.org"]))
        #expect(try await outbox.cancel(cancelled) == 1)
        let (worker, task) = Self.start(outbox, client)
        try await eventually("the unscheduled message is delivered") {
            try await outbox.message(now)?.recipients[0].state == .delivered
        }
        clock.advance(by: .seconds(3_599))
        worker.wake()
        try await Task.sleep(for: .milliseconds(100))
        #expect(try await outbox.message(scheduled)?.recipients[0].state == .queued)
        clock.advance(by: .seconds(1))
        worker.wake()
        try await eventually("the scheduled message is delivered") {
            try await outbox.message(scheduled)?.recipients[0].state == .delivered
        }
        #expect(try await outbox.message(cancelled)?.recipients[0].state == .cancelled)
        #expect(relay.rcptCount("cancelled@example.org") == 0)
        task.cancel()
        try await task.value
        await client.shutdown()
        await relay.shutdown()
    }

    @Test(arguments: StoreKind.allCases)
    func exitWhenIdleDrainsTheOutboxIntoTheSinkAndReturns(store kind: StoreKind) async throws {
        let sink = try await startSink()
        guard let outbox = try await makeOutbox(kind) else { return }
        let client = try relayClient(port: sink.localAddress.port)
        let messages = (0..<500).map { outboxMessage("m\($0)", to: ["a\($0)@example.org", "b\($0)@example.org"]) }
        _ = try await outbox.enqueue(contentsOf: messages)
        let (worker, task) = Self.start(outbox, client) { configuration in
            configuration.exitWhenIdle = true
            configuration.batchSize = 64
            configuration.concurrency = 128
        }
        try await withDeadline(scaled(.seconds(60)), "the worker drains 500 messages") { try await task.value }
        let status = try await outbox.status()
        #expect(status.recipients[.delivered] == 1_000)
        #expect(status.pendingRecipients == 0)
        #expect(status.messagesFinished == 500)
        #expect(worker.statistics.claimed == 500)
        let stored = sink.messages
        #expect(stored.count == 500)
        #expect(Set(stored.flatMap { $0.recipients.map { "\($0)" } }).count == 1_000)
        await client.shutdown()
        await sink.shutdown()
    }

    @Test(arguments: StoreKind.allCases)
    func aCancelledWorkerRecordsWhatItHeldBeforeItReturns(store kind: StoreKind) async throws {
        // Replies come slowly, so the worker is cancelled with messages in flight.
        let sink = try await startSink { configuration in
            configuration.replyDelay = .fixed(.milliseconds(300))
        }
        guard let outbox = try await makeOutbox(kind) else { return }
        let client = try relayClient(port: sink.localAddress.port)
        _ = try await outbox.enqueue(contentsOf: (0..<20).map { outboxMessage("h\($0)") })
        let (worker, task) = Self.start(outbox, client) { $0.batchSize = 10 }
        try await eventually("the worker holds messages") { worker.statistics.claimed > 0 }
        task.cancel()
        try await task.value
        let status = try await outbox.status()
        // Nothing is left leased: what it held was recorded (or given back) before it returned.
        #expect(status.recipients[.leased] == 0)
        #expect(status.recipients[.delivered] == worker.statistics.delivered)
        #expect(worker.statistics.delivered == worker.statistics.claimed)
        #expect(sink.messages.count == worker.statistics.delivered)
        await client.shutdown()
        await sink.shutdown()
    }

    /// A worker told to stop while the store does not answer keeps trying for its patience,
    /// then returns and leaves what it holds leased; once the leases expire, another worker
    /// sends those messages again: a duplicate for what was delivered, never a loss.
    @Test(arguments: StoreKind.allCases)
    func retentionDeletesEveryFinishedMessagePastItAtOnce(store kind: StoreKind) async throws {
        // One step of 500 every ten seconds let a queue drained at full speed grow without
        // bound: a housekeeping now deletes all that is past retention, in steps.
        let sink = try await startSink()
        let clock = ManualClock()
        guard let outbox = try await makeOutbox(kind, clock: clock) else { return }
        let client = try relayClient(port: sink.localAddress.port)
        _ = try await outbox.enqueue(contentsOf: (0..<1_200).map { outboxMessage("r\($0)") })
        let (worker, task) = Self.start(outbox, client) { $0.retention = .seconds(60) }
        try await eventually("every message is delivered", within: .seconds(60)) {
            try await outbox.status().recipients[.delivered] == 1_200
        }
        clock.advance(by: .seconds(120))
        try await eventually("retention deletes", within: .seconds(30)) { worker.statistics.purged > 0 }
        // The housekeeping deletes for 250 ms, and the next follows a second later while any
        // is left: the rest go within seconds (a step of 500 every ten seconds took 20 s).
        // Under AddressSanitizer one step took longer than the budget, so this does not ask
        // that the first housekeeping deleted everything.
        try await eventually("retention deletes all that is past it", within: .seconds(5)) {
            worker.statistics.purged == 1_200
        }
        #expect(try await outbox.status().messagesFinished == 0)
        task.cancel()
        try await task.value
        await client.shutdown()
        await sink.shutdown()
    }

    @Test func anIdleWorkerThatWasWokenSleepsInsteadOfSpinning() async throws {
        // A wait that a wake-up ended once left its cancelled timer's signal behind, so every
        // later wait returned at once: the idle worker asked the store for work hundreds of
        // times a second, for ever.
        let (sqlite, _) = try await makeSQLiteOutbox()
        let flaky = FlakyStore(sqlite.store)
        let outbox = Outbox(store: flaky)
        let client = try relayClient(port: 9)  // nothing is due, so nothing is sent
        _ = try await outbox.enqueue(outboxMessage("later", notBefore: Date().addingTimeInterval(3_600)))
        let (worker, task) = Self.start(outbox, client) { $0.pollInterval = .milliseconds(500) }
        try await eventually("the worker has looked for work") { flaky.claims > 0 }
        for _ in 0..<3 {
            worker.wake()
            try await Task.sleep(for: .milliseconds(50))
        }
        let before = flaky.claims
        try await Task.sleep(for: .seconds(1))
        let asked = flaky.claims - before
        // One look per poll interval (two in the second), and a spare for a late wake-up.
        #expect(asked <= 4, "the idle worker asked for work \(asked) times in one second")
        task.cancel()
        try await task.value
        await client.shutdown()
        await outbox.close()
    }

    @Test func outcomesAreWrittenWhileClaimsFail() async throws {
        // The worker writes outcomes beside its next claim: a claim that fails must not keep
        // what it learned from the store. Replies are held, so the outcomes come in after the
        // one claim that succeeds.
        let sink = try await startSink { $0.replyDelay = .fixed(.milliseconds(200)) }
        let (flaky, worker) = try await Self.deliver(10, into: sink) { $0.failClaims(after: 1) }
        #expect(flaky.claims > 1, "the worker went on claiming")
        #expect(worker.statistics.delivered == 10)
        await sink.shutdown()
    }

    @Test func outcomesARecordFailedToWriteAreWrittenByTheNextAndNotSentAgain() async throws {
        // The worker keeps the outcomes of a record that failed and writes them with the next,
        // ahead of those that came in meanwhile; the messages are not sent again.
        let sink = try await startSink()
        let (flaky, worker) = try await Self.deliver(30, into: sink) { $0.failRecords(2) }
        #expect(flaky.records > 2, "the failed records were tried again")
        #expect(worker.statistics.delivered == 30)
        #expect(sink.statistics.messages == 30, "each message was sent once")
        await sink.shutdown()
    }

    /// Enqueues `count` messages in a SQLite outbox seen through a ``FlakyStore`` that
    /// `breakStore` sets up, and runs a worker into `sink` until the store has every recipient
    /// delivered.
    private static func deliver(_ count: Int, into sink: SMTPSink, _ breakStore: (FlakyStore) -> Void)
        async throws -> (FlakyStore, OutboxWorker)
    {
        let (sqlite, _) = try await makeSQLiteOutbox()
        let flaky = FlakyStore(sqlite.store)
        breakStore(flaky)
        let outbox = Outbox(store: flaky)
        let client = try relayClient(port: sink.localAddress.port)
        _ = try await outbox.enqueue(contentsOf: (0..<count).map { outboxMessage("m\($0)") })
        let (worker, task) = Self.start(outbox, client)
        do {
            // The default wait: in a full parallel run on a slow day every test here took
            // about 70 s, and 20 s (60 under CI) ran out although nothing was stuck.
            try await eventually("the outcomes are written") {
                try await sqlite.status().recipients[.delivered] == count
            }
        } catch {
            // Say where it stuck: the recipients' states and the worker's count. A status that
            // fails too is said as such, and the timeout is still the error thrown.
            let states: String
            do { states = "\(try await sqlite.status().recipients.filter { $0.value > 0 })" } catch { states = "unreadable (\(error))" }
            Issue.record("recipients: \(states); worker: \(worker.statistics)")
            throw error
        }
        task.cancel()
        try await task.value
        await client.shutdown()
        return (flaky, worker)
    }

    @Test func aStoppingWorkerWhoseStoreIsGoneGivesUpAndLosesNothing() async throws {
        // Replies held, so messages are in the worker's hands when the store goes.
        let sink = try await startSink { $0.replyDelay = .fixed(.milliseconds(300)) }
        let (sqlite, _) = try await makeSQLiteOutbox()
        let flaky = FlakyStore(sqlite.store)
        let outbox = Outbox(store: flaky)
        let client = try relayClient(port: sink.localAddress.port)
        _ = try await outbox.enqueue(contentsOf: (0..<10).map { outboxMessage("s\($0)") })
        let (worker, task) = Self.start(outbox, client) { configuration in
            configuration.stoppingPatience = .seconds(1)
            configuration.lease = .seconds(3)
        }
        try await eventually("the worker holds the messages") { worker.statistics.claimed == 10 }
        flaky.fail()
        worker.stop()
        let clock = ContinuousClock()
        let started = clock.now
        try await withDeadline(scaled(.seconds(30)), "the stopping worker gives up") { try await task.value }
        #expect(clock.now - started < scaled(.seconds(15)), "it gives up after its patience, not the old 16 s of tries")
        // Nothing was recorded: every message is still leased in the store underneath (or,
        // on a slow machine, its lease has run out already).
        let held = try await sqlite.status()
        #expect((held.recipients[.leased] ?? 0) + (held.recipients[.queued] ?? 0) == 10, "\(held.recipients)")
        #expect(held.recipients[.delivered] ?? 0 == 0)

        // Once the leases expire, a second worker delivers every message (it waits for them:
        // a leased recipient is pending work).
        flaky.fail(false)
        let (_, again) = Self.start(sqlite, client) { $0.exitWhenIdle = true }
        try await withDeadline(scaled(.seconds(60)), "the second worker drains the outbox") { try await again.value }
        let after = try await sqlite.status()
        #expect(after.recipients[.delivered] == 10, "nothing is lost: \(after.recipients)")
        #expect(sink.statistics.messages >= 10, "each was sent at least once")
        await client.shutdown()
        await sink.shutdown()
    }

    @Test func theWorkerCountsOutcomesAndTheWaitingQueueInMetrics() async throws {
        let sink = try await startSink { $0.faults.rejectRecipients = .everyNth(3) }
        guard let outbox = try await makeOutbox(.sqlite) else { return }
        let client = try relayClient(port: sink.localAddress.port)
        _ = try await outbox.enqueue(contentsOf: (0..<3).map { outboxMessage("m\($0)") })
        let metrics = TestMetrics()
        let (_, task) = Self.start(outbox, client) { configuration in
            configuration.exitWhenIdle = true
            configuration.metrics.factory = metrics
            configuration.metrics.dimensions = [("service", "receipts")]
            // One message at a time, so that the first look at the queue sees two waiting.
            configuration.rateLimit = OutboxRateLimit(messagesPerSecond: 20, burst: 1)
        }
        try await task.value
        let service = [("service", "receipts")]
        func outcome(_ name: String) throws -> Int64 {
            try metrics.expectCounter("smtp.outbox.recipients", service + [("smtp.outcome", name)]).totalValue
        }
        #expect(try outcome("delivered") == 2)
        #expect(try outcome("failed") == 1)
        #expect(try metrics.expectCounter("smtp.outbox.claimed", service).totalValue == 3)
        #expect(try metrics.expectTimer("smtp.outbox.attempt.duration", service).values.count == 3)
        #expect(try metrics.expectGauge("smtp.outbox.waiting", service).values.first == 2)
        #expect(try metrics.expectGauge("smtp.outbox.oldest_waiting.age", service).values.first.map { $0 >= 0 } == true)
        await client.shutdown()
        await sink.shutdown()
        await outbox.close()
    }
}
