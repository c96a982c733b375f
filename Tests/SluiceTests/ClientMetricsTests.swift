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
            let server = [("server.address", "127.0.0.1"), ("server.port", "\(sink.localAddress.port)")]
            let smtp = server + [("messaging.system", "smtp")]
            #expect(try metrics.expectCounter(
                "messaging.client.sent.messages", smtp + [("smtp.outcome", "partiallyAccepted")]).totalValue == 1)
            #expect(try metrics.expectCounter("messaging.client.sent.messages", smtp + [("smtp.outcome", "accepted")]).totalValue == 1)
            #expect(try metrics.expectCounter("messaging.client.sent.messages", smtp + [("smtp.outcome", "rejected")]).totalValue == 1)
            #expect(try metrics.expectCounter(
                "smtp.client.recipients", server + [("smtp.recipient.status", "accepted")]).totalValue == 2)
            #expect(try metrics.expectCounter(
                "smtp.client.recipients", server + [("smtp.recipient.status", "rejected")]).totalValue == 2)
            // The sink refuses with 550 5.1.1: both refusals are counted by their class.
            #expect(try metrics.expectCounter("smtp.client.bounces", server + [
                ("smtp.recipient.status", "rejected"), ("smtp.bounce.class", "invalid-recipient"),
            ]).totalValue == 2)
            #expect(try metrics.expectCounter("smtp.client.connections.opened", server).totalValue == 1)
            #expect(try metrics.expectTimer(
                "messaging.client.operation.duration", smtp + [("messaging.operation.name", "send")]).values.count == 3)
        }
    }
    @Test func dimensionsAreTheCallersToChoose() async throws {
        let metrics = TestMetrics()
        try await withSinkAndClient(client: {
            $0.metrics.factory = metrics
            $0.metrics.includesServer = false
            $0.metrics.dimensions = [("service", "receipts")]
        }) { _, client in
            _ = try await client.send(testMessage(), envelope: envelope())
            let service = [("service", "receipts")]
            #expect(try metrics.expectCounter(
                "messaging.client.sent.messages", service + [("messaging.system", "smtp"), ("smtp.outcome", "accepted")]
            ).totalValue == 1)
            #expect(try metrics.expectCounter("smtp.client.connections.opened", service).totalValue == 1)
            #expect(metrics.counters.allSatisfy { counter in !counter.dimensions.contains { $0.0.hasPrefix("server.") } },
                    "no metric names the server")
            #expect(throws: (any Error).self, "the process's backend got none of it") {
                try testMetrics.expectCounter(
                    "messaging.client.sent.messages", service + [("messaging.system", "smtp"), ("smtp.outcome", "accepted")])
            }
        }
    }
}
