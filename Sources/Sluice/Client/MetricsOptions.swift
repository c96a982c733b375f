public import Metrics

/// Where Sluice's metrics go and which dimensions they carry.
///
/// Names follow OpenTelemetry's semantic conventions where one fits (`messaging.client.*`,
/// `server.address`, `server.port`, `error.type`); what no convention covers is named under
/// `smtp.*`, in the same dotted style. A Prometheus backend turns the dots into underscores.
public struct MetricsOptions: Sendable {
    /// Dimensions added to every metric: a service name, a tenant, a deployment.
    public var dimensions: [(String, String)] = []
    /// Whether the client's metrics carry the relay as `server.address` and `server.port`.
    /// Keep it for a process with several clients; leave it out when one relay is all there
    /// is and each series costs.
    public var includesServer = true
    /// The backend; nil for the process's (`MetricsSystem.factory`).
    public var factory: (any MetricsFactory)?
    /// Whether each transaction's phases are timed (`smtp.client.transaction.duration` by
    /// `smtp.transaction.phase`: `envelope`, from the attempt's start on its connection to
    /// the content's write, and `data`, from that write to the final reply). Off by default:
    /// it reads the clock three times a message.
    public var timesTransactionPhases = false

    /// Every metric with the server's dimensions, none added, to the process's backend.
    public init() {}
}
