public import Logging
import SluiceCore
public import SluiceTransport
#if DistributedTracingSupport
public import Tracing
#endif

/// How a sink is set up.
public struct SinkConfiguration: Sendable {
    /// A delay before each batch of replies.
    public enum ReplyDelay: Hashable, Sendable {
        /// Always this long.
        case fixed(Duration)
        /// Uniformly between the two (seeded with the faults' seed).
        case random(Duration, Duration)
    }

    /// The address to listen on (`127.0.0.1`, `::1`, `localhost`).
    public var host = "127.0.0.1"
    /// The port; 0 picks a free one (see ``SMTPSink/localAddress``).
    public var port = 2525
    /// A second listener speaking TLS from the first byte (port 465 style), if wanted.
    public var implicitTLSListen: (host: String, port: Int)?
    /// What the SMTP server offers and enforces.
    public var server = ServerStateMachine.Configuration()
    /// The server's certificate for STARTTLS and implicit TLS.
    public var tls: TLSContext?
    /// Connections past this many are answered 421 and closed.
    public var maximumConnections = 10_000
    /// A client silent this long gets 421 and is closed.
    public var idleTimeout: Duration = .seconds(300)
    /// The longest a client may take over one whole command line, from its first byte to its
    /// CRLF; then 421 and close. (The idle timer restarts on every byte, so a client that
    /// trickles a line a byte at a time would otherwise hold its slot for ever.)
    public var commandTimeout: Duration = .seconds(60)
    /// The longest a client may take over one message's content (after 354, or one BDAT
    /// chunk); then 421 and close.
    public var contentTimeout: Duration = .seconds(600)
    /// Failed AUTH attempts one client address may make in ``authenticationFailureWindow``
    /// across all its connections; past them its sessions get 421 (Postfix's anvil limits).
    public var maximumAuthenticationFailuresPerAddress = 20
    /// The window over which failures per address are counted.
    public var authenticationFailureWindow: Duration = .seconds(600)
    /// How long a failed AUTH's reply is held, per failure so far on the connection (the
    /// second failure waits twice this, and so on, at most ten times).
    public var authenticationFailureDelay: Duration = .milliseconds(250)
    /// Where messages go.
    public var store = SinkStore.discard
    /// Whether a Maildir or mbox keeps each message exactly as it came on the wire (CRLF, no
    /// trace fields). By default a file holds what an MTA delivers: `Return-Path`,
    /// `X-Original-To`/`Delivered-To` and `Received` in front (see
    /// ``StoredMessage/traceHeaders(by:)``), with LF line endings as Unix mail tools expect.
    public var storesWireBytes = false
    /// Called with each message once it is kept (on a loop thread or the store's queue):
    /// `sluice sink --print` prints from here. Leave it nil for load work: with it, every
    /// message is copied out even with the `discard` store.
    public var onMessage: (@Sendable (StoredMessage) -> Void)?
    /// Whether each message's ``ContentChecksum`` field is checked (`sluice sink --verify`):
    /// a message whose body does not match its field is answered `554 5.6.0` and not kept,
    /// so the sender counts it as failed. A message without the field is kept and counted as
    /// unchecked.
    public var verifiesChecksums = false
    /// Faults to inject.
    public var faults = SinkFaults()
    /// A delay before replies, if any.
    public var replyDelay: ReplyDelay?
    #if DistributedTracingSupport
    /// The tracer for a span per transaction (from its content's arrival to its storing);
    /// nil takes `InstrumentationSystem.tracer` when the sink starts. With the no-op tracer
    /// no span is made.
    public var tracer: (any Tracer)?
    #endif
    /// How long a graceful shutdown of the sink as a `Service` lets transactions in progress
    /// finish (see ``SMTPSink/drain(grace:)``).
    public var drainGrace: Duration = .seconds(10)
    /// How long a draining session between commands may take to send its next command
    /// before it gets its 421: a client that has just had its 250 is usually about to QUIT,
    /// and is answered 221 if it does.
    public var drainSettle: Duration = .milliseconds(250)

    /// The defaults: 127.0.0.1:2525, every extension but STARTTLS and AUTH, discard.
    public init() {}
}

/// A fast SMTP sink on SluiceTransport's loops and its server state machine: it takes
/// mail (to discard, memory, a Maildir or an mbox), can misbehave on demand, and counts.
///
/// ```swift
/// var configuration = SinkConfiguration()
/// configuration.port = 0
/// configuration.store = .memory
/// let sink = try await SMTPSink.start(configuration)
/// // … send to sink.localAddress …
/// let messages = try await sink.waitForMessages(count: 1)
/// await sink.shutdown()
/// ```
public final class SMTPSink: Sendable {
    /// Where the sink listens (with the port actually bound).
    public let localAddress: SocketAddress
    /// Where the implicit-TLS listener listens, if there is one.
    public let implicitTLSAddress: SocketAddress?
    private let servers: [TCPServer]
    let shared: SinkShared
    private let group: EventLoopGroup
    private let ownsGroup: Bool

    private init(localAddress: SocketAddress, implicitTLSAddress: SocketAddress?, servers: [TCPServer], shared: SinkShared,
                 group: EventLoopGroup, ownsGroup: Bool) {
        self.localAddress = localAddress
        self.implicitTLSAddress = implicitTLSAddress
        self.servers = servers
        self.shared = shared
        self.group = group
        self.ownsGroup = ownsGroup
    }

    /// Starts listening. Without a `group` the sink makes (and on shutdown stops) its own.
    public static func start(
        _ configuration: SinkConfiguration, group: EventLoopGroup? = nil,
        logger: Logger = Logger(label: "sluice.sink")
    ) async throws -> SMTPSink {
        var configuration = configuration
        if configuration.tls != nil, configuration.tls?.configuration.role != .server {
            throw TransportError(.invalidArgument, "the sink needs a server TLS context")
        }
        configuration.server.startTLS = configuration.server.startTLS || configuration.tls != nil
        let store = try MessageStore(configuration.store, hostname: configuration.server.hostname,
                                     wireBytes: configuration.storesWireBytes, observer: configuration.onMessage)
        let shared = SinkShared(configuration: configuration, store: store)
        let ownsGroup = group == nil
        let group = group ?? EventLoopGroup()
        var options = ConnectionOptions()
        options.pausesReadingWhenNotWritable = true  // a client that does not read cannot grow our memory

        let (limit, hostname) = (configuration.maximumConnections, configuration.server.hostname)
        func makeHandler(secure: Bool) -> @Sendable (Connection) -> any ConnectionHandler {
            { connection in
                // The slot is taken before the check, atomically: connections accepted at once
                // on two loops cannot both see room for one (a load, then an add, let them).
                if shared.counters.activeSessions.add(1, ordering: .relaxed).newValue > limit {
                    shared.counters.activeSessions.subtract(1, ordering: .relaxed)
                    shared.counters.sessions.add(1, ordering: .relaxed)
                    shared.counters.refusedSessions.add(1, ordering: .relaxed)
                    return RefusedSession(connection: connection, reply: "421 4.7.0 \(hostname) Error: too many connections")
                }
                if let address = connection.remoteAddress?.host, shared.isLockedOut(address) {
                    shared.counters.activeSessions.subtract(1, ordering: .relaxed)
                    shared.counters.sessions.add(1, ordering: .relaxed)
                    shared.counters.refusedSessions.add(1, ordering: .relaxed)
                    return RefusedSession(
                        connection: connection,
                        reply: "421 4.7.0 \(hostname) Error: too many failed authentications from \(address)")
                }
                return SinkSession(connection: connection, shared: shared, secure: secure)  // holds the slot taken above
            }
        }

        var servers: [TCPServer] = []
        do {
            let plain = try await TCPServer.listen(
                host: configuration.host, port: configuration.port, group: group, options: options, logger: logger,
                handler: makeHandler(secure: false))
            servers.append(plain)
            var implicitAddress: SocketAddress?
            if let listen = configuration.implicitTLSListen {
                guard let tls = configuration.tls else {
                    throw TransportError(.invalidArgument, "implicit TLS needs a certificate and key")
                }
                let secure = try await TCPServer.listen(
                    host: listen.host, port: listen.port, group: group, tls: tls, options: options, logger: logger,
                    handler: makeHandler(secure: true))
                servers.append(secure)
                implicitAddress = secure.localAddress
            }
            return SMTPSink(localAddress: plain.localAddress, implicitTLSAddress: implicitAddress, servers: servers,
                            shared: shared, group: group, ownsGroup: ownsGroup)
        } catch {
            for server in servers { await server.close() }
            if ownsGroup { await group.shutdown() }
            throw error
        }
    }

    /// What the sink has seen so far.
    public var statistics: SinkStatistics {
        var statistics = shared.counters.snapshot
        statistics.acceptPauses = servers.reduce(0) { $0 + $1.acceptPauses }
        return statistics
    }

    /// The messages kept so far (``SinkStore/memory`` only).
    public var messages: [StoredMessage] { shared.store.messages }

    /// Waits until at least `count` messages are kept in memory (``SinkStore/memory`` only).
    ///
    /// - Throws: `CancellationError` when the task is cancelled, ``Sluice/TransportError`` with
    ///   ``Sluice/TransportError/Kind/connectTimeout`` when `timeout` passes first.
    public func waitForMessages(count: Int, timeout: Duration = .seconds(30)) async throws -> [StoredMessage] {
        precondition(shared.store.kind == .memory, "waitForMessages needs the memory store")
        return try await withThrowingTaskGroup(of: [StoredMessage]?.self) { tasks in
            tasks.addTask { await self.shared.store.waitForMessages(count: count) }
            tasks.addTask {
                try await Task.sleep(for: timeout)
                return nil
            }
            defer { tasks.cancelAll() }
            guard let first = try await tasks.next(), let messages = first else {
                throw TransportError(.connectTimeout, "fewer than \(count) messages arrived within \(timeout)")
            }
            return messages
        }
    }

    /// Stops reading from every client, and from clients that connect later, until
    /// ``resumeReading()``: a sink that has stopped taking data, for overload tests. Replies
    /// already due still go out; idle timeouts wait too.
    public func pauseReading() { shared.setReadingPaused(true) }

    /// Reads again after ``pauseReading()``.
    public func resumeReading() { shared.setReadingPaused(false) }

    /// ``SinkConfiguration/drainGrace``.
    var drainGrace: Duration { shared.configuration.drainGrace }

    /// Shuts down gracefully, as on SIGTERM: stops listening, answers every new command with
    /// 421, lets each transaction already in its content finish (its 250 goes out) within
    /// `grace`, and closes each session once it has nothing in flight. Returns when every
    /// session has closed or `grace` has passed; then call ``shutdown()``, which closes what
    /// is left.
    ///
    /// - Returns: The sessions still open when `grace` ran out.
    @discardableResult
    public func drain(grace: Duration) async -> Int {
        for server in servers { await server.close() }
        for session in shared.sessions { session.drain() }
        let clock = ContinuousClock()
        let deadline = clock.now + grace
        while shared.counters.activeSessions.load(ordering: .relaxed) > 0, clock.now < deadline {
            try? await Task.sleep(for: .milliseconds(10))
        }
        return shared.counters.activeSessions.load(ordering: .relaxed)
    }

    /// Stops listening; sessions in progress are closed when an owned group shuts down.
    public func shutdown() async {
        for server in servers { await server.close() }
        if ownsGroup { await group.shutdown() }
    }
}
