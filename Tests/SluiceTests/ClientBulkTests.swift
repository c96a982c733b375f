import Foundation
import Sluice
import SluiceSink
import SluiceTestSupport
import Synchronization
import Testing

/// `count` mails, counting how many were taken.
struct CountingMails: Sequence, Sendable {
    let count: Int
    let taken: Counter

    final class Counter: Sendable {
        private let value = Atomic<Int>(0)
        func increment() { value.add(1, ordering: .relaxed) }
        var count: Int { value.load(ordering: .relaxed) }
    }

    func makeIterator() -> AnyIterator<OutgoingMail> {
        var index = 0
        let message = testMessage("bulk")
        return AnyIterator {
            guard index < count else { return nil }
            index += 1
            taken.increment()
            return OutgoingMail(envelope: envelope("r\(index)@example.org"), message: message)
        }
    }
}

@Suite("SMTPClient bulk")
struct ClientBulkTests {
    /// A mail with no recipient is reported at once, and counted as any other: the client's
    /// shutdown, which waits for every message to report, still returns. (It hung: the report
    /// uncounted a message that had never been counted.)
    @Test func aMailWithNoRecipientIsReportedAndShutdownStillReturns() async throws {
        let sink = try await startSink()
        var configuration = SMTPClient.Configuration(host: "127.0.0.1", port: sink.localAddress.port, security: .none)
        configuration.retry = .none
        let client = try SMTPClient(configuration: configuration)
        let mails = [OutgoingMail(envelope: try Envelope(from: "a@example.com", to: []), message: testMessage("none")),
                     OutgoingMail(envelope: envelope("b@example.org"), message: testMessage("one"))]
        var outcomes: [DeliveryReport.Outcome] = []
        for try await report in client.send(contentsOf: mails) { outcomes.append(report.outcome) }
        #expect(outcomes.sorted { $0.rawValue < $1.rawValue } == [.accepted, .failed])
        try await withDeadline(.seconds(20), "the client's shutdown") { await client.shutdown() }
        await sink.shutdown()
    }

    @Test func everyMessageOfASequenceReportsOnce() async throws {
        try await withSinkAndClient(client: { $0.pool.maximumConnections = 4 }) { sink, client in
            let mails = CountingMails(count: 2_000, taken: .init())
            var reportsByRecipient: [String: Int] = [:]
            var reports = 0
            for try await report in client.send(contentsOf: mails, maximumInFlight: 64) {
                #expect(report.outcome == .accepted)
                reportsByRecipient[report.envelope.recipients[0].address.address, default: 0] += 1
                reports += 1
            }
            #expect(reports == 2_000, "one report per message, no more")
            #expect(reportsByRecipient.count == 2_000 && reportsByRecipient.values.allSatisfy { $0 == 1 },
                    "duplicated: \(reportsByRecipient.filter { $0.value != 1 }.prefix(3))")
            #expect(sink.statistics.messages == 2_000)
        }
    }

    @Test func aConsumerThatStopsReadingHoldsTheProducerBack() async throws {
        try await withSinkAndClient { sink, client in
            // 400 messages, ten at a time: enough to see the hold and the release, and quick
            // enough under the sanitizers, which slow the whole suite about fourfold.
            let mails = CountingMails(count: 400, taken: .init())
            let reports = client.send(contentsOf: mails, maximumInFlight: 10)
            try await Task.sleep(for: .milliseconds(300))
            // 10 with the client and 10 reports waiting for the consumer, at most; and the
            // producer did start: at least the first 10 were taken.
            let taken = mails.taken.count
            #expect(taken >= 10 && taken <= 20, "taken while the consumer did not read: \(taken)")
            var count = 0
            for try await report in reports {
                #expect(report.outcome == .accepted)
                count += 1
            }
            #expect(count == 400)
            #expect(mails.taken.count == 400)
        }
    }

    @Test func failuresAreReportsThatDoNotEndTheSequence() async throws {
        try await withSinkAndClient(sink: { $0.faults.rejectRecipients = .everyNth(3) }, client: {
            $0.pool.maximumConnections = 1
        }) { sink, client in
            var outcomes: [DeliveryReport.Outcome: Int] = [:]
            for try await report in client.send(contentsOf: CountingMails(count: 30, taken: .init())) {
                outcomes[report.outcome, default: 0] += 1
                if report.outcome == .rejected { #expect(report.error?.code == 550) }
            }
            #expect(outcomes == [.accepted: 20, .rejected: 10])
        }
    }

    /// Reports are handed over in batches; one that finishes while others are still in
    /// flight must not wait for them. The second message's recipient is deferred and retried
    /// two seconds later, so the first report has to reach the consumer on its own. The
    /// consumer runs on a thread of its own: on the pool, busy with other tests, it could be
    /// resumed late enough to find both reports waiting, which would prove nothing.
    @Test func aReportDoesNotWaitForMessagesStillInFlight() async throws {
        try await withSinkAndClient(sink: { $0.faults.deferRecipients = .everyNth(2) }, client: {
            $0.pool.maximumConnections = 1
            $0.retry.backoff = Backoff(initial: .seconds(2), maximum: .seconds(2))
            $0.retry.backoff.jitter = 0
        }) { sink, client in
            let executor = ThreadExecutor()
            defer { executor.stop() }
            let arrivals = try await Task(executorPreference: executor) {
                var arrivals: [ContinuousClock.Instant] = []
                for try await report in client.send(contentsOf: CountingMails(count: 2, taken: .init())) {
                    #expect(report.outcome == .accepted)
                    arrivals.append(.now)
                }
                return arrivals
            }.value
            try #require(arrivals.count == 2)
            // Held back until the retried message finished, the first would come with it.
            #expect(arrivals[1] - arrivals[0] >= .seconds(1))
        }
    }

    @Test func anAsyncSequenceFeedsTheClientAndItsErrorEndsTheReports() async throws {
        struct InputFailed: Error {}
        try await withSinkAndClient { sink, client in
            let (stream, continuation) = AsyncThrowingStream.makeStream(of: OutgoingMail.self)
            for index in 0..<10 { continuation.yield(OutgoingMail(envelope: envelope(), message: testMessage("a\(index)"))) }
            continuation.finish(throwing: InputFailed())
            var count = 0
            do {
                for try await report in client.send(contentsOf: stream) {
                    #expect(report.outcome == .accepted)
                    count += 1
                }
                Issue.record("the input's error did not reach the consumer")
            } catch is InputFailed {
                #expect(count == 10, "every message taken before the error reported first")
            }
        }
    }
}
