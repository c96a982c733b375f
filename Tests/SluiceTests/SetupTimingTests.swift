import Foundation
import Sluice
@testable import SluiceCLI
import SluiceSink
import SluiceTestSupport
import Testing

/// `smtp.client.connection.setup.duration` and `smtp.client.transaction.duration`: each phase
/// of opening a session and of a transaction timed, as `sluice bench` reports them.
@Suite struct SetupTimingTests {
    @Test func everyPhaseOfASTARTTLSAndAUTHSessionIsTimedOncePerConnection() async throws {
        let sink = try await startSink(ClientSecurityTests.tlsSink())
        let metrics = BenchMetrics()
        let client = try makeClient(for: sink) {
            ClientSecurityTests.verifying()(&$0)
            $0.credentials = .password(username: "app", password: "s3cret pass")
            $0.pool.maximumMessagesPerConnection = 1  // a session for every message
            $0.pool.maximumConnections = 1
            $0.metrics.factory = metrics
            $0.metrics.timesTransactionPhases = true
            $0.pipelining.chunking = false  // DATA: the content waits for the envelope's replies
        }
        try await shuttingDown(sink) {
        for number in 1...3 {
            let report = try await client.send(
                EncodedMessage(bytes: Array("From: a@example.com\r\nSubject: \(number)\r\n\r\nHi\r\n".utf8)),
                envelope: envelope("b@example.org"))
            #expect(report.outcome == .accepted)
        }
        await client.shutdown()
        }
        let setup = metrics.phaseLatencies
        #expect(setup.map(\.phase) == ["connect", "greeting", "ehlo", "starttls", "tls", "auth", "envelope", "data"])
        #expect(setup.map(\.latency.totalCount) == [3, 3, 6, 3, 3, 3, 3, 3], "EHLO before and after STARTTLS")
        #expect(setup.allSatisfy { $0.latency.min >= 1 && $0.latency.max < 60_000_000 })
    }

    @Test func transactionPhasesAreTimedOnlyWhenAskedFor() async throws {
        let sink = try await startSink()
        let metrics = BenchMetrics()
        try await shuttingDown(sink) {
            let client = try makeClient(for: sink) { $0.metrics.factory = metrics }
            _ = try await client.send(EncodedMessage(bytes: Array("From: a@example.com\r\n\r\nHi\r\n".utf8)), envelope: envelope("b@example.org"))
            await client.shutdown()
        }
        #expect(metrics.phaseLatencies.map(\.phase) == ["connect", "greeting", "ehlo"], "no clock read per message by default")
    }

    @Test func benchReportsThePhasesAndMergeAddsThem() async throws {
        let directory = try makeTemporaryDirectory("sluice-setup")
        defer { removeDirectory(directory) }
        guard let run = try await BenchCommandTests.bench([
            "--security", "starttls", "--messages-per-connection", "1", "--messages", "30", "--connections", "2",
            "--hdr-out", directory + "/a.hlog", "--json"])
        else { return }
        #expect(run.status == 0, "\(run.error)")
        let setup = try #require(try BenchCommandTests.object(run.output)["phaseMilliseconds"] as? [String: [String: Double]])
        // A session for every message (the pool may open one more than it uses, at the end).
        let sessions = try #require(setup["connect"]?["count"])
        #expect((30...32).contains(sessions), "\(setup)")
        #expect(setup.mapValues { $0["count"] } == ["connect": sessions, "greeting": sessions, "ehlo": 2 * sessions,
                                                   "starttls": sessions, "tls": sessions, "envelope": 30, "data": 30])
        guard let merged = try await BenchCommandTests.bench(["--json", "merge", directory + "/a.hlog", directory + "/a.hlog"]) else { return }
        let twice = try #require(try BenchCommandTests.object(merged.output)["phaseMilliseconds"] as? [String: [String: Double]])
        #expect(twice.mapValues { $0["count"] } == setup.mapValues { $0["count"].map { 2 * $0 } })
        // The same run twice has the same percentiles, within the histograms' three digits
        // (a decoded bucket reads as its highest value; the run's own, as its largest recorded).
        let (once, doubled) = (try #require(setup["tls"]?["p99"]), try #require(twice["tls"]?["p99"]))
        #expect(doubled >= once && doubled <= once * 1.001 + 0.001, "\(doubled) against \(once)")
    }
}
