import ArgumentParser
import Foundation
import Logging
import ServiceLifecycle
import Sluice
import SluiceOutbox

/// `sluice worker`: delivers an outbox through one relay until stopped.
struct WorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "worker",
        abstract: "Deliver an outbox through a relay, retrying deferrals, until stopped.",
        discussion: """
            Claims due messages in batches (a lease that expires, renewed while held), sends \
            them through one pooled, pipelined client, and records every recipient's outcome. \
            Several workers may share one outbox: each claims its own messages, and a worker \
            killed outright loses nothing (its claims expire and another takes them over; what \
            it had sent may be sent again: at least once).

            SIGTERM or SIGINT stops claiming; what is in flight finishes and is recorded, then \
            the worker exits 0. On a terminal a one-line status is kept up to date on stderr.

            Exit status: 0 stopped (or idle, with --exit-when-idle), 64 invalid flags, 69 the \
            outbox cannot be used.
            """
    )

    @OptionGroup var outboxOptions: OutboxOptions
    @Option(help: "The relay, HOST[:PORT]; the port defaults to 587 (starttls), 465 (tls) or 25 (none).")
    var server: String
    @OptionGroup var client: ClientOptions

    @Option(help: "Messages claimed at once.")
    var batch = 200
    @Option(help: "Messages in flight at once, at most.")
    var concurrency = 2_000
    @Option(help: "Connections to the relay, at most.")
    var connections = 8
    @Option(help: "Messages a second at most, summed over every worker of this outbox.")
    var rate: Double?
    @Option(help: "How long a claim holds without renewal.", transform: parseDurationFlag)
    var lease: Duration = .seconds(60)
    @Option(name: .customLong("retry-after"), help: "The first retry's delay; each next one doubles.", transform: parseDurationFlag)
    var retryAfter: Duration = .seconds(60)
    @Option(name: .customLong("retry-max"), help: "The longest delay between retries.", transform: parseDurationFlag)
    var retryMax: Duration = .seconds(3_600)
    @Option(name: .customLong("max-age"), help: "Give a deferred recipient up (expired) this long after its message was first due.",
            transform: parseDurationFlag)
    var maxAge: Duration = .seconds(5 * 86_400)
    @Option(help: "What a recipient with an unknown outcome becomes: retry (at least once; the default) or hold.",
            transform: { text in
                guard let policy = OutboxWorker.UnknownOutcomePolicy(rawValue: text) else {
                    throw ValidationError("--unknown takes retry or hold, not '\(text)'")
                }
                return policy
            })
    var unknown: OutboxWorker.UnknownOutcomePolicy = .retry
    @Option(help: "Delete finished messages this long after they finished.", transform: parseDurationFlag)
    var retention: Duration = .seconds(7 * 86_400)
    @Option(name: .customLong("poll-interval"), help: "The longest the worker sleeps before looking for due work.",
            transform: parseDurationFlag)
    var pollInterval: Duration = .seconds(1)
    @Flag(name: .customLong("exit-when-idle"), help: "Exit 0 once no recipient is queued, leased or deferred.")
    var exitWhenIdle = false
    @Option(name: .customLong("suppress-on"),
            help: "Bounce classes whose 5xx refusals add the address to the suppression list, comma-separated, or none.",
            transform: parseBounceClasses)
    var suppressOn: Set<BounceClass> = BounceClassifier.hardClasses
    @Option(name: .customLong("suppression-lifetime"), help: "How long an address added for a hard bounce stays on the list (for good when left out).",
            transform: parseDurationFlag)
    var suppressionLifetime: Duration?
    @Option(help: "Send each recipient from its own return path, LOCAL+TOKEN@DOMAIN (VERP), given as LOCAL@DOMAIN, so that bounces name their recipient.")
    var verp: String?
    @Option(help: "The most any SMTP step may take, in seconds.")
    var timeout: Double = 60
    @Flag(help: "Log each claim and record (to stderr).")
    var verbose = false

    func validate() throws {
        _ = try ClientOptions.parseServer(server)
        guard batch >= 1, batch <= 10_000 else { throw ValidationError("--batch must be between 1 and 10000") }
        guard concurrency >= 1 else { throw ValidationError("--concurrency must be at least 1") }
        guard connections >= 1, connections <= 10_000 else { throw ValidationError("--connections must be between 1 and 10000") }
        if let rate { guard rate > 0, rate.isFinite else { throw ValidationError("--rate must be above 0") } }
        guard lease >= .seconds(1) else { throw ValidationError("--lease must be at least 1s") }
        guard retryAfter > .zero, retryMax >= retryAfter else { throw ValidationError("--retry-max must be at least --retry-after") }
        guard timeout > 0, timeout <= 86_400 else { throw ValidationError("--timeout must be between 0 and 86400 seconds") }
    }

    func run() async throws {
        let (host, port) = try ClientOptions.parseServer(server)
        var configuration = try settingUp("worker") { try client.configuration(host: host, port: port) }
        let limit = Duration.milliseconds(Int64(timeout * 1_000))
        configuration.pool.maximumConnections = connections
        configuration.pool.connectTimeout = limit
        configuration.timeouts.capped(at: limit)
        // The outbox retries, on its own schedule, and records every attempt.
        configuration.retry = .none
        var logger = Logger(label: "sluice.worker") { _ in TranscriptHandler() }
        logger.logLevel = verbose ? .info : .warning
        configuration.logger = logger
        let smtpClient = try settingUp("worker") { try SMTPClient(configuration: configuration) }

        var settings = OutboxWorker.Configuration()
        settings.batchSize = batch
        settings.concurrency = concurrency
        settings.lease = lease
        settings.retry = Backoff(initial: retryAfter, maximum: retryMax)
        settings.maximumAge = maxAge
        settings.unknownOutcome = unknown
        settings.rateLimit = rate.map { OutboxRateLimit(messagesPerSecond: $0, burst: batch) }
        settings.retention = retention
        settings.pollInterval = pollInterval
        settings.exitWhenIdle = exitWhenIdle
        settings.suppressOn = suppressOn
        settings.suppressionLifetime = suppressionLifetime
        if let verp {
            settings.verp = try settingUp("worker") { () throws -> VERP in
                guard let at = verp.lastIndex(of: "@") else { throw ValidationError("--verp takes LOCAL@DOMAIN, got '\(verp)'") }
                do {
                    return try VERP(localPart: String(verp[..<at]), domain: String(verp[verp.index(after: at)...]))
                } catch {
                    throw ValidationError("--verp: \((error as? OutboxError)?.message ?? "\(error)")")
                }
            }
        }
        settings.logger = logger

        let interactive = isatty(STDERR_FILENO) == 1
        try await outboxOptions.with("worker") { outbox in
            let worker = OutboxWorker(outbox: outbox, client: smtpClient, configuration: settings)
            // A swift-service-lifecycle group, as a service embedding Sluice runs them: the
            // client first, since a group stops its services in reverse order. On SIGTERM or
            // SIGINT the worker stops claiming and records what it holds while the client
            // still sends; then the client finishes and says QUIT. When the worker ends (idle,
            // or a store it cannot use) the group shuts down the same way.
            let services = ServiceGroup(configuration: ServiceGroupConfiguration(
                services: [
                    .init(service: smtpClient),
                    .init(service: worker, successTerminationBehavior: .gracefullyShutdownGroup,
                          failureTerminationBehavior: .gracefullyShutdownGroup),
                ],
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
            let statusLine = Task {
                guard interactive else { return }
                var last = worker.statistics
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(1))
                    let now = worker.statistics
                    FileHandle.standardError.write(Data("\r\u{1b}[K\(Self.statusLine(now, since: last))".utf8))
                    last = now
                }
            }
            defer { statusLine.cancel() }
            try await services.run()
            statusLine.cancel()
            let final = worker.statistics
            FileHandle.standardError.write(Data(((interactive ? "\r\u{1b}[K" : "") + Self.summary(final) + "\n").utf8))
        }
    }

    static func statusLine(_ now: OutboxWorker.Statistics, since last: OutboxWorker.Statistics) -> String {
        "delivered \(now.delivered) (\(now.delivered - last.delivered)/s), deferred \(now.deferred), "
            + "failed \(now.failed), expired \(now.expired), unknown \(now.unknown)"
    }

    static func summary(_ statistics: OutboxWorker.Statistics) -> String {
        "sluice worker: claimed \(statistics.claimed) messages; recipients delivered \(statistics.delivered), "
            + "deferred \(statistics.deferred), failed \(statistics.failed), expired \(statistics.expired), "
            + "unknown \(statistics.unknown), suppressed \(statistics.suppressed); "
            + "added to the suppression list \(statistics.addedToSuppressionList); "
            + "leases lost \(statistics.leasesLost); purged \(statistics.purged)"
    }
}
