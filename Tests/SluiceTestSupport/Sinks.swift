public import SluiceSink

/// Starts a memory-store sink on 127.0.0.1:0 with `configure` applied.
public func startSink(_ configure: (inout SinkConfiguration) -> Void = { _ in }) async throws -> SMTPSink {
    var configuration = SinkConfiguration()
    configuration.port = 0
    configuration.store = .memory
    configure(&configuration)
    return try await SMTPSink.start(configuration)
}
