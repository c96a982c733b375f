import Metrics
import SluiceCore

/// The client's counters and timers (swift-metrics): a service that bootstraps a metrics
/// backend gets them; without one they cost a no-op call.
struct ClientMetrics: Sendable {
    /// One counter per outcome and per recipient status, in the order of the cases (an
    /// index, not a dictionary: each message would otherwise hash its outcome and each
    /// recipient's status).
    private let messages: [Counter]
    private let recipients: [Counter]
    /// Recipients not accepted, by status (rejected, deferred, failed, unknown) and bounce
    /// class: `statuses × classes`, row by status.
    private let bounces: [Counter]
    let connectionsOpened: Counter
    let connectionsFailed: Counter
    let connectionsRetired: Counter
    private let latency: Metrics.Timer

    init(label: String) {
        messages = DeliveryReport.Outcome.allCases.map { outcome in
            Counter(label: "sluice_messages_total", dimensions: [("client", label), ("outcome", outcome.rawValue)])
        }
        recipients = [DeliveryStatus.accepted, .rejected, .deferred, .failed, .unknown].map { status in
            Counter(label: "sluice_recipients_total", dimensions: [("client", label), ("status", status.rawValue)])
        }
        bounces = [DeliveryStatus.rejected, .deferred, .failed, .unknown].flatMap { status in
            BounceClass.allCases.map { bounceClass in
                Counter(label: "sluice_bounces_total", dimensions: [
                    ("client", label), ("status", status.rawValue), ("class", bounceClass.rawValue),
                ])
            }
        }
        connectionsOpened = Counter(label: "sluice_connections_opened_total", dimensions: [("client", label)])
        connectionsFailed = Counter(label: "sluice_connections_failed_total", dimensions: [("client", label)])
        connectionsRetired = Counter(label: "sluice_connections_closed_total", dimensions: [("client", label)])
        latency = Metrics.Timer(label: "sluice_message_duration_seconds", dimensions: [("client", label)],
                                preferredDisplayUnit: .seconds)
    }

    func record(_ report: DeliveryReport) {
        messages[Self.index(of: report.outcome)].increment()
        for recipient in report.recipients {
            let status = Self.index(of: recipient.status)
            recipients[status].increment()
            if status > 0, let bounceClass = recipient.bounceClass,
               let column = BounceClass.allCases.firstIndex(of: bounceClass) {
                bounces[(status - 1) * BounceClass.allCases.count + column].increment()
            }
        }
        latency.recordNanoseconds(report.elapsed.wholeNanoseconds)
    }

    /// The outcome's index in `allCases`, which ``messages`` follows.
    private static func index(of outcome: DeliveryReport.Outcome) -> Int {
        switch outcome {
        case .accepted: 0
        case .partiallyAccepted: 1
        case .rejected: 2
        case .deferred: 3
        case .failed: 4
        case .unknown: 5
        }
    }

    private static func index(of status: DeliveryStatus) -> Int {
        switch status {
        case .accepted: 0
        case .rejected: 1
        case .deferred: 2
        case .failed: 3
        case .unknown: 4
        }
    }
}
