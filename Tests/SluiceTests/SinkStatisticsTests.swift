import Sluice
import SluiceSink
import SluiceTestSupport
import Testing

/// The sink's statistics against a known fault sequence: each refusal is counted once.
@Suite("Sink statistics")
struct SinkStatisticsTests {
    @Test(arguments: [true, false])
    func eachRecipientRefusalIsCountedOnceAndNotAgainAsTheDataRefusal(chunking: Bool) async throws {
        let sink = try await startSink {
            $0.faults.rejectRecipients = .everyNth(3)
            $0.faults.deferRecipients = .everyNth(4)
            $0.faults.seed = 7
        }
        let client = try makeClient(for: sink) {
            $0.retry = .none
            $0.pool.maximumConnections = 1
            $0.pipelining.chunking = chunking
        }
        var rejected = 0
        var deferred = 0
        for index in 0..<60 {
            do {
                _ = try await client.send(testMessage("\(index)"), envelope: envelope())
            } catch let error as SMTPError {
                switch error.report?.recipients.first?.code {
                case 550?: rejected += 1
                case 450?: deferred += 1
                default: Issue.record("unexpected: \(error)")
                }
            }
        }
        await client.shutdown()
        let statistics = sink.statistics
        #expect(rejected > 0 && deferred > 0)
        #expect(statistics.rejectionsByCode == ["550": rejected, "450": deferred], "\(statistics.summary)")
        #expect(statistics.messages == 60 - rejected - deferred)
        await sink.shutdown()
    }

    @Test func aPipelinedDataAfterEveryRecipientWasRefusedIsCountedApart() async throws {
        let sink = try await startSink { $0.faults.rejectRecipients = .everyNth(1) }
        let client = try makeClient(for: sink) { $0.retry = .none }
        for index in 0..<5 {
            await #expect(throws: SMTPError.self) { try await client.send(testMessage("\(index)"), envelope: envelope()) }
        }
        await client.shutdown()
        let statistics = sink.statistics
        #expect(statistics.rejectionsByCode == ["550": 5], "\(statistics.summary)")
        #expect(statistics.transactionsWithoutRecipients == 5, "the BDATs that came pipelined after the refusals")
        await sink.shutdown()
    }
}
