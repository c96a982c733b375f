import Metrics
import SluiceCore

/// The client's counters and timers (swift-metrics): a service that bootstraps a metrics
/// backend gets them; without one they cost a no-op call.
/// Named and shaped as ``SMTPClient/Configuration-swift.struct/metrics`` says.
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
    /// How long each phase of opening a session took, in ``ClientStateMachine/SetupPhase``
    /// order.
    private let setupPhases: [Metrics.Timer]
    private let envelope: Metrics.Timer
    private let endOfData: Metrics.Timer

    init(server: MessageObservation.Server, options: MetricsOptions) {
        let factory = options.factory ?? MetricsSystem.factory
        let base = options.dimensions
            + (options.includesServer ? [("server.address", server.host), ("server.port", "\(server.port)")] : [])
        let smtp = base + [("messaging.system", "smtp")]
        messages = DeliveryReport.Outcome.allCases.map { outcome in
            Counter(label: "messaging.client.sent.messages", dimensions: smtp + [("smtp.outcome", outcome.rawValue)],
                    factory: factory)
        }
        let statuses: [DeliveryStatus] = [.accepted, .rejected, .deferred, .failed, .unknown]
        recipients = statuses.map { status in
            Counter(label: "smtp.client.recipients", dimensions: base + [("smtp.recipient.status", status.rawValue)],
                    factory: factory)
        }
        bounces = statuses.dropFirst().flatMap { status in
            BounceClass.allCases.map { bounceClass in
                Counter(label: "smtp.client.bounces", dimensions: base + [
                    ("smtp.recipient.status", status.rawValue), ("smtp.bounce.class", bounceClass.rawValue),
                ], factory: factory)
            }
        }
        connectionsOpened = Counter(label: "smtp.client.connections.opened", dimensions: base, factory: factory)
        connectionsFailed = Counter(label: "smtp.client.connections.failed", dimensions: base, factory: factory)
        connectionsRetired = Counter(label: "smtp.client.connections.closed", dimensions: base, factory: factory)
        latency = Metrics.Timer(label: "messaging.client.operation.duration",
                                dimensions: smtp + [("messaging.operation.name", "send")],
                                preferredDisplayUnit: .seconds, factory: factory)
        envelope = Metrics.Timer(label: "smtp.client.transaction.duration", dimensions: base + [("smtp.transaction.phase", "envelope")],
                                 preferredDisplayUnit: .seconds, factory: factory)
        endOfData = Metrics.Timer(label: "smtp.client.transaction.duration", dimensions: base + [("smtp.transaction.phase", "data")],
                                  preferredDisplayUnit: .seconds, factory: factory)
        setupPhases = ClientStateMachine.SetupPhase.allCases.map { phase in
            Metrics.Timer(label: "smtp.client.connection.setup.duration", dimensions: base + [("smtp.setup.phase", phase.rawValue)],
                          preferredDisplayUnit: .seconds, factory: factory)
        }
    }

    /// A transaction's envelope and (if its content was sent) end of data took these.
    func recordTransaction(envelope: Duration, endOfData: Duration?) {
        self.envelope.recordNanoseconds(envelope.wholeNanoseconds)
        if let endOfData { self.endOfData.recordNanoseconds(endOfData.wholeNanoseconds) }
    }

    /// A connection finished `phase` of its opening in `duration`.
    func recordSetup(_ phase: ClientStateMachine.SetupPhase, _ duration: Duration) {
        setupPhases[ClientStateMachine.SetupPhase.allCases.firstIndex(of: phase)!].recordNanoseconds(duration.wholeNanoseconds)  // every case has a timer
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
