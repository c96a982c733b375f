import Metrics
import SluiceCore

/// The client's counters and timers (swift-metrics): a service that bootstraps a metrics
/// backend gets them; without one they cost a no-op call.
struct ClientMetrics: Sendable {
    private let messages: [DeliveryReport.Outcome: Counter]
    private let recipients: [DeliveryStatus: Counter]
    let connectionsOpened: Counter
    let connectionsFailed: Counter
    let connectionsRetired: Counter
    private let latency: Metrics.Timer

    init(label: String) {
        var messages: [DeliveryReport.Outcome: Counter] = [:]
        for outcome in DeliveryReport.Outcome.allCases {
            messages[outcome] = Counter(label: "sluice_messages_total", dimensions: [("client", label), ("outcome", outcome.rawValue)])
        }
        self.messages = messages
        var recipients: [DeliveryStatus: Counter] = [:]
        for (status, name) in [(DeliveryStatus.accepted, "accepted"), (.rejected, "rejected"), (.deferred, "deferred"), (.unknown, "unknown")] {
            recipients[status] = Counter(label: "sluice_recipients_total", dimensions: [("client", label), ("status", name)])
        }
        self.recipients = recipients
        connectionsOpened = Counter(label: "sluice_connections_opened_total", dimensions: [("client", label)])
        connectionsFailed = Counter(label: "sluice_connections_failed_total", dimensions: [("client", label)])
        connectionsRetired = Counter(label: "sluice_connections_closed_total", dimensions: [("client", label)])
        latency = Metrics.Timer(label: "sluice_message_duration_seconds", dimensions: [("client", label)],
                                preferredDisplayUnit: .seconds)
    }

    func record(_ report: DeliveryReport) {
        messages[report.outcome]?.increment()
        for recipient in report.recipients { recipients[recipient.status]?.increment() }
        latency.recordNanoseconds(Int64(report.elapsed.components.seconds) * 1_000_000_000
                                  + report.elapsed.components.attoseconds / 1_000_000_000)
    }
}
