import Metrics
import MetricsTestKit
import Sluice
import SluiceSink
import SluiceTestSupport
import Testing

/// One metrics backend for the test process (swift-metrics bootstraps once per process).
let testMetrics: TestMetrics = {
    let metrics = TestMetrics()
    MetricsSystem.bootstrap(metrics)
    return metrics
}()

@Suite("SMTPClient metrics")
struct ClientMetricsTests {
    @Test func outcomesRecipientsConnectionsAndLatencyAreCounted() async throws {
        let metrics = testMetrics
        try await withSinkAndClient(sink: { $0.faults.rejectRecipients = .everyNth(2) }, client: {
            $0.pool.maximumConnections = 1
        }) { sink, client in
            _ = try await client.send(testMessage("1"), envelope: envelope("a@example.org", "b@example.org"))
            // The sink rejects every second recipient: b, then d.
            _ = try await client.send(testMessage("2"), envelope: envelope("c@example.org"))
            _ = try? await client.send(testMessage("3"), envelope: envelope("d@example.org"))
            let name = [("client", "127.0.0.1:\(sink.localAddress.port)")]
            #expect(try metrics.expectCounter("sluice_messages_total", name + [("outcome", "partiallyAccepted")]).totalValue == 1)
            #expect(try metrics.expectCounter("sluice_messages_total", name + [("outcome", "accepted")]).totalValue == 1)
            #expect(try metrics.expectCounter("sluice_messages_total", name + [("outcome", "rejected")]).totalValue == 1)
            #expect(try metrics.expectCounter("sluice_recipients_total", name + [("status", "accepted")]).totalValue == 2)
            #expect(try metrics.expectCounter("sluice_recipients_total", name + [("status", "rejected")]).totalValue == 2)
            // The sink refuses with 550 5.1.1: both refusals are counted by their class.
            #expect(try metrics.expectCounter(
                "sluice_bounces_total", name + [("status", "rejected"), ("class", "invalid-recipient")]).totalValue == 2)
            #expect(try metrics.expectCounter("sluice_connections_opened_total", name).totalValue == 1)
            #expect(try metrics.expectTimer("sluice_message_duration_seconds", name).values.count == 3)
        }
    }
}
