import Logging
import ServiceLifecycle
import Sluice

func runServices(app: some Service, configuration: SMTPClient.Configuration, logger: Logger) async throws {
    let client = try SMTPClient(configuration: configuration)
    let group = ServiceGroup(services: [client, app], gracefulShutdownSignals: [.sigterm], logger: logger)
    try await group.run()
}
