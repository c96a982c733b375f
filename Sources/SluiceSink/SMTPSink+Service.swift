#if ServiceLifecycleSupport
public import ServiceLifecycle

/// An ``SMTPSink`` is a swift-service-lifecycle `Service`: in a `ServiceGroup`, a graceful
/// shutdown (SIGTERM) drains it as ``SMTPSink/drain(grace:)`` does, within
/// ``SinkConfiguration/drainGrace``, and then shuts it down.
extension SMTPSink: Service {
    /// Keeps the sink listening until a graceful shutdown, then lets the transactions in
    /// progress finish (within ``SinkConfiguration/drainGrace``) and shuts down. On the task's
    /// cancellation it shuts down at once.
    public func run() async throws {
        do {
            try await gracefulShutdown()
            await drain(grace: drainGrace)
        } catch {
            // Cancelled: no grace.
        }
        await shutdown()
    }
}
#endif
