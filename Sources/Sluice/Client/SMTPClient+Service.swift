#if ServiceLifecycleSupport
public import ServiceLifecycle

/// An ``SMTPClient`` is a swift-service-lifecycle `Service`: put it in a `ServiceGroup`
/// after the services that send through it (a group shuts its services down in reverse
/// order), and on SIGTERM it finishes every message already handed to it, then closes.
///
/// ```swift
/// let client = try SMTPClient(configuration: configuration)
/// let group = ServiceGroup(services: [client, app], gracefulShutdownSignals: [.sigterm], logger: logger)
/// try await group.run()
/// ```
extension SMTPClient: Service {
    /// Keeps the client until a graceful shutdown (or the task's cancellation), then calls
    /// ``shutdown()``: messages already given are finished and reported, new sends fail with
    /// ``SMTPError/Kind/shutdown``, and every connection says QUIT.
    public func run() async throws {
        // Returns on a graceful shutdown and throws on cancellation: both end in a shutdown.
        try? await gracefulShutdown()
        await shutdown()
    }
}
#endif
