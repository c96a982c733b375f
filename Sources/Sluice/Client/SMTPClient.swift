public import Logging
import SluiceCore
import SluiceMIME
import SluiceTransport
import Synchronization
#if DistributedTracingSupport
import Tracing
#endif

/// An SMTP client: a pool of pipelined connections to one relay, shared by every task of a
/// process, that reports the truth about every recipient.
///
/// ```swift
/// var configuration = SMTPClient.Configuration(host: "smtp.example.com")   // STARTTLS, port 587
/// configuration.credentials = .password(username: "app", password: secret)
/// let client = try SMTPClient(configuration: configuration)
/// let report = try await client.send(try RawMessage(contentsOfFile: "welcome.eml"),
///                                    envelope: try Envelope(from: "app@example.com", to: ["ann@example.org"]))
/// await client.shutdown()
/// ```
///
/// Connections open lazily up to the pool's limit and are reused; each runs its transactions
/// pipelined (with CHUNKING several whole transactions in flight). Transient failures are
/// retried under the ``RetryPolicy``; a message whose data was sent but whose reply never
/// came is reported ``DeliveryReport/Outcome/unknown`` and never retried silently.
public final class SMTPClient: Sendable {
    /// The configuration the client was made with.
    public let configuration: Configuration
    /// The event loops the connections run on.
    public let eventLoopGroup: EventLoopGroup
    private let ownsGroup: Bool
    /// Copies of the settings the per-message path reads, so it never copies the whole
    /// configuration (with its logger, closures and TLS settings) to read one field.
    let retryPolicy: RetryPolicy
    let poolSettings: Pool
    let pipeliningSettings: Pipelining
    let tlsContext: TLSContext?
    let tlsServerName: String
    private let machineConfiguration: ClientStateMachine.Configuration
    /// The pool, one shard per event loop (fewer when the pool allows fewer connections).
    private let shards: [PoolShard]
    /// Jobs accepted and not yet reported (waiting, on a connection, or between tries).
    private let outstanding = Atomic<Int>(0)
    private let shutdownStarted = Atomic<Bool>(false)
    /// What shutdown waits on; touched once per connection or shutdown step, never per message.
    private let state = Locked(State())
    private let metrics: ClientMetrics
    private let nextJobID = Atomic<Int>(1)
    private let logger: Logger
    /// The relay, as spans and the caller's log lines name it.
    let server: MessageObservation.Server
    #if DistributedTracingSupport
    /// The tracer, or nil for the no-op one: then no span is made, and a message with no
    /// logger of its own carries nothing extra.
    let tracer: (any Tracer)?
    #endif

    private struct State {
        var drainWaiters: [CheckedContinuation<Void, Never>] = []
        /// Waiting for the pool to retire every connection.
        var poolWaiters: [CheckedContinuation<Void, Never>] = []
        /// Waiting for every transport connection to close.
        var closedWaiters: [CheckedContinuation<Void, Never>] = []
        /// Shards that have retired every connection after shutdown began.
        var drainedShards = 0
        /// Transport connections attached and not yet closed (the pool forgets a connection
        /// as soon as it stops taking work; shutdown waits for its socket to close too).
        var openTransports = 0
    }

    /// What to do once the lock is released.
    /// A shard's effects for one event, in order: usually none or one, held without an array.
    private typealias Effects = FewElements<Effect>

    private enum Effect {
        case start(ClientConnection)
        case dispatch(DeliveryJob, ClientConnection)
        case retire(ClientConnection)
        case fail([DeliveryJob], SMTPError)
        /// Waiting jobs of a shard whose connects failed, for another shard.
        case handOff([DeliveryJob], from: PoolShard)
        case drained
    }

    /// Makes a client. No connection is opened until the first message.
    ///
    /// - Throws: ``SMTPError`` of kind ``SMTPError/Kind/invalidInput`` for an EHLO name that
    ///   is not a domain or address literal, or credentials with CR, LF or NUL; of kind
    ///   ``SMTPError/Kind/tls`` when the TLS settings cannot be loaded (a missing CA file).
    public init(configuration: Configuration) throws(SMTPError) {
        self.configuration = configuration
        retryPolicy = configuration.retry
        poolSettings = configuration.pool
        pipeliningSettings = configuration.pipelining
        let ehloName: SMTPDomain
        do {
            ehloName = try SMTPDomain(configuration.ehloName)
        } catch {
            throw SMTPError(.invalidInput, "the EHLO name is not valid: \(error)")
        }
        var credentials: SASLCredentials?
        if case .password(let username, let password)? = configuration.credentials {
            do {
                credentials = try SASLCredentials.password(username: username, password: password)
            } catch {
                throw SMTPError(.invalidInput, "the credentials are not valid: \(error)")
            }
        }
        guard (1...65535).contains(configuration.port) else {
            throw SMTPError(.invalidInput, "port \(configuration.port) is not a TCP port")
        }
        let tlsPolicy: ClientStateMachine.TLSPolicy =
            switch configuration.security {
            case .startTLS: .startTLSRequired
            case .opportunisticStartTLS: .startTLSOpportunistic
            case .implicitTLS: .implicit
            case .none: .none
            }
        if configuration.security == .none {
            tlsContext = nil
        } else {
            do {
                tlsContext = try TLSContext(configuration.tls)
            } catch {
                throw SMTPError(.tls, "the TLS settings cannot be used: \(error)")
            }
        }
        tlsServerName = configuration.tlsServerName ?? configuration.host
        machineConfiguration = ClientStateMachine.Configuration(
            ehloName: ehloName, tls: tlsPolicy, credentials: credentials,
            forcedMechanism: configuration.authenticationMechanism,
            allowPlaintextAuthentication: configuration.allowPlaintextAuthentication,
            usePipelining: configuration.pipelining.enabled, useChunking: configuration.pipelining.chunking,
            maximumTransactionsInFlight: configuration.pipelining.transactionsPerConnection,
            timeouts: configuration.timeouts, serverHost: configuration.host, serverPort: configuration.port)
        if let group = configuration.eventLoopGroup {
            eventLoopGroup = group
            ownsGroup = false
        } else {
            eventLoopGroup = EventLoopGroup()
            ownsGroup = true
        }
        let pool = configuration.pool
        let maximumConnections = max(1, pool.maximumConnections)
        let loops = eventLoopGroup.loops
        // A rate limit is one bucket for the whole pool: one shard keeps it exact.
        let shardCount = configuration.rateLimit == nil ? min(loops.count, maximumConnections) : 1
        shards = (0..<shardCount).map { index in
            let share = maximumConnections / shardCount + (index < maximumConnections % shardCount ? 1 : 0)
            return PoolShard(index: index, loop: loops[index], share: share, pool: PoolStateMachine(configuration: .init(
                maximumConnections: share,
                maximumMessagesPerConnection: max(1, pool.maximumMessagesPerConnection),
                maximumConnectionLifetime: pool.maximumConnectionLifetime,
                idleTimeout: pool.idleTimeout, checkAfterIdle: pool.checkAfterIdle,
                transactionsPerConnection: max(1, configuration.pipelining.transactionsPerConnection),
                connectAttempts: max(1, pool.connectAttempts), connectBackoff: pool.connectBackoff,
                rateLimit: configuration.rateLimit, firstConnectionID: index, connectionIDStride: shardCount)))
        }
        server = MessageObservation.Server(host: configuration.host, port: configuration.port)
        metrics = ClientMetrics(server: server, options: configuration.metrics)
        #if DistributedTracingSupport
        let tracer = configuration.tracer ?? InstrumentationSystem.tracer
        self.tracer = tracer is NoOpTracer ? nil : tracer
        #endif
        var logger = configuration.logger
        logger[metadataKey: "smtp.server"] = "\(configuration.host):\(configuration.port)"
        self.logger = logger
    }

    // MARK: Sending

    /// Sends a message and returns its report once its outcome is known (retries included).
    ///
    /// With a tracer (``Configuration/tracer``, or the one bootstrapped in
    /// `InstrumentationSystem`), the send is a span in the calling task's trace, with a child
    /// span for each attempt.
    ///
    /// - Parameters:
    ///   - message: The message, prepared (dot-stuffing and the size known once).
    ///   - envelope: Who it is from and to; its recipients need not match the headers.
    ///   - logger: Where to log what happens to this message (a retry, its outcome, at
    ///     `.debug`), with the caller's metadata (a request id, say). The connection's own
    ///     events and the transcript go to ``Configuration/logger``.
    /// - Returns: The report, when at least one recipient was accepted; check
    ///   ``DeliveryReport/outcome`` for a partial acceptance.
    /// - Throws: ``SMTPError`` when no recipient was accepted; its ``SMTPError/report`` has
    ///   every recipient's status. Cancelling the task cancels the message (kind
    ///   ``SMTPError/Kind/cancelled``) until the end of its data is written; after that it
    ///   runs to its end and is reported truthfully.
    public func send(_ message: EncodedMessage, envelope: Envelope, logger: Logger? = nil) async throws -> DeliveryReport {
        guard !envelope.recipients.isEmpty else {
            throw SMTPError.noRecipients
        }
        let waiter = ReportWaiter()
        let observation = MessageObservation.make(logger: logger, client: self, context: .current)
        let job = makeJob(message, envelope, observation: observation) { waiter.resume($0) }
        let report = await withTaskCancellationHandler {
            await withCheckedContinuation { continuation in
                waiter.install(continuation)
                submit(job)
            }
        } onCancel: {
            cancel(job)
        }
        guard report.acceptedRecipients.isEmpty else { return report }
        throw (report.error ?? SMTPError(.deferred, "no recipient was accepted")).with(report: report)
    }

    /// Signs `message` with the configured DKIM signers, prepares it and sends it (see
    /// ``send(_:envelope:logger:)-(EncodedMessage,_,_)``).
    public func send(_ message: RawMessage, envelope: Envelope, logger: Logger? = nil) async throws -> DeliveryReport {
        let signed: RawMessage
        do {
            signed = try DKIMSigner.sign(message, with: configuration.dkim)
        } catch {
            throw SMTPError(.invalidInput, "\(error); nothing was sent")
        }
        return try await send(EncodedMessage(signed), envelope: envelope, logger: logger)
    }

    /// Hands a message to the pool; `completion` gets its report, on an event loop thread.
    /// The bulk API's entry point; `logger` and `context` are the caller's (see
    /// ``send(_:envelope:logger:)-(EncodedMessage,_,_)``).
    package func submit(_ mail: OutgoingMail, logger: Logger? = nil, context: @autoclosure () -> HandoverContext = .topLevel,
                        completion: @escaping @Sendable (consuming DeliveryReport) -> Void) {
        if let problem = mail.problem ?? (mail.envelope.recipients.isEmpty ? SMTPError.noRecipients : nil) {
            // Reported without a job (a transaction needs a recipient), and counted as every
            // message is, since its report uncounts it: a shutdown waits for the count to
            // reach zero.
            let recipients = mail.envelope.recipients.map {
                DeliveryReport.Recipient(address: $0.address, status: problem.status, reply: nil,
                                         bounceClass: configuration.bounceClassifier.classify(nil, error: problem))
            }
            outstanding.add(1, ordering: .sequentiallyConsistent)
            deliver(DeliveryReport(recipients: recipients, messageID: mail.message.messageID, envelope: mail.envelope,
                                   attempts: 0, elapsed: .zero, error: problem), to: completion)
            return
        }
        let observation = MessageObservation.make(logger: logger, client: self, context: context())
        let job = makeJob(mail.message, mail.envelope, observation: observation, completion: completion)
        submit(job)
    }

    private func makeJob(_ message: EncodedMessage, _ envelope: Envelope, observation: MessageObservation?,
                         completion: @escaping @Sendable (consuming DeliveryReport) -> Void) -> DeliveryJob {
        let id = nextJobID.add(1, ordering: .relaxed).newValue
        return DeliveryJob(id: id, message: message, envelope: envelope, startedAt: .now, client: self,
                           observation: observation, completion: completion)
    }

    /// A job's report is made: it is counted and handed to its sender, and the job is done.
    func deliver(_ report: consuming DeliveryReport, to completion: @Sendable (consuming DeliveryReport) -> Void) {
        metrics.record(report)
        completion(consume report)
        jobEnded()
    }

    private func submit(_ job: DeliveryJob) {
        if job.cancelRequested.load(ordering: .sequentiallyConsistent) {
            if job.attempts == 0 { outstanding.add(1, ordering: .sequentiallyConsistent) }
            job.fail(SMTPError.cancelledBeforeStart, now: .now)
            return
        }
        if job.attempts == 0 {
            // Counted once, on its first submission; uncounted when it reports. Counted
            // before the shutdown flag is read, while shutdown sets the flag before it reads
            // the count: one of the two sees the other.
            outstanding.add(1, ordering: .sequentiallyConsistent)
            if shutdownStarted.load(ordering: .sequentiallyConsistent) {
                job.fail(SMTPError(.shutdown, "the client is shutting down; nothing was sent"), now: .now)
                return
            }
        }
        place(job, in: shardForNewWork())
    }

    /// Hands a counted job to `shard`'s pool.
    private func place(_ job: DeliveryJob, in shard: PoolShard) {
        // Published before the cancel flag is read under the shard's lock, while cancel sets
        // the flag before it reads the shard: a cancel either finds the job there or is seen here.
        job.shard.store(shard.index, ordering: .sequentiallyConsistent)
        let effects = shard.state.withLock { state -> Effects? in
            if job.cancelRequested.load(ordering: .sequentiallyConsistent) { return nil }
            return resolve(state.pool.submitted(job, now: .now), &state, shard)
        }
        guard let effects else {
            job.fail(SMTPError.cancelledBeforeStart, now: .now)
            return
        }
        run(effects)
    }

    /// The shard a message goes to. On one of the client's loops — a bulk send refilling as
    /// its messages finish, a retry — it is that loop's shard, so a busy client's loops never
    /// touch each other's locks. From anywhere else it is the least loaded shard for its
    /// share of connections, the first on a tie, so a task sending one message after
    /// another keeps using one connection.
    private func shardForNewWork() -> PoolShard {
        if shards.count == 1 { return shards[0] }
        if let loop = EventLoop.current, let shard = shards.first(where: { $0.loop === loop }) { return shard }
        return leastLoaded(of: shards)
    }

    /// The shard with the least load for its share, the first on a tie (each shard's lock is
    /// taken once). `candidates` is not empty.
    private func leastLoaded(of candidates: [PoolShard]) -> PoolShard {
        var best = candidates[0]
        var bestLoad = best.relativeLoad
        for shard in candidates.dropFirst() {
            let load = shard.relativeLoad
            if load < bestLoad {
                best = shard
                bestLoad = load
            }
        }
        return best
    }

    private func cancel(_ job: DeliveryJob) {
        job.cancelRequested.store(true, ordering: .sequentiallyConsistent)
        let shard = shards[job.shard.load(ordering: .sequentiallyConsistent)]
        let (removed, connection) = shard.state.withLock { state -> (Bool, ClientConnection?) in
            if state.pool.cancelled(job) { return (true, nil) }
            return (false, job.connectionID.flatMap { state.connections[$0] })
        }
        if removed {
            job.fail(SMTPError.cancelledBeforeStart, now: .now)
        } else if let connection {
            connection.loop.execute { connection.cancel(job) }
        }
    }

    private func jobEnded() {
        guard outstanding.subtract(1, ordering: .sequentiallyConsistent).newValue == 0 else { return }
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            defer { state.drainWaiters = [] }
            return state.drainWaiters
        }
        for waiter in waiters { waiter.resume() }
    }

    // MARK: Shutdown

    /// Finishes every message already handed to the client (retries included), then sends
    /// QUIT on every connection, closes them, and stops the event loops if the client owns
    /// them. New sends fail with ``SMTPError/Kind/shutdown`` from the moment it is called.
    public func shutdown() async {
        let first = !shutdownStarted.exchange(true, ordering: .sequentiallyConsistent)
        // Every message given so far reports; then every connection is retired; then every
        // socket has closed.
        await waitUntil(.drain) { [self] _ in outstanding.load(ordering: .sequentiallyConsistent) == 0 }
        for shard in shards {
            run(shard.state.withLock { state in resolve(state.pool.shutdownRequested(now: .now), &state, shard) })
        }
        await waitUntil(.pool) { [shards] state in state.drainedShards == shards.count }
        await waitUntil(.closed) { state in state.openTransports == 0 }
        for shard in shards {
            guard let timer = shard.state.withLock({ $0.wakeTimer }) else { continue }
            // Cancelled on its loop; shutdown returns once its handle has closed.
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                if !timer.loop.execute({ timer.cancel { continuation.resume() } }) { continuation.resume() }
            }
        }
        if first, ownsGroup { await eventLoopGroup.shutdown() }
    }

    /// The waits of a shutdown, in order.
    private enum ShutdownStep { case drain, pool, closed }

    /// Returns once `isDone` holds, checked under the lock now, or when a waiter appended to
    /// the step's waiters is resumed.
    private func waitUntil(_ step: ShutdownStep, _ isDone: @escaping @Sendable (State) -> Bool) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let done = state.withLock { state -> Bool in
                if isDone(state) { return true }
                switch step {
                case .drain: state.drainWaiters.append(continuation)
                case .pool: state.poolWaiters.append(continuation)
                case .closed: state.closedWaiters.append(continuation)
                }
                return false
            }
            if done { continuation.resume() }
        }
    }

    // MARK: Events from connections (on their loops)

    func connectionReady(_ connection: ClientConnection, capacity: Int) {
        metrics.connectionsOpened.increment()
        let shard = shards[connection.shard]
        run(shard.state.withLock { state in
            resolve(state.pool.connected(connection.id, capacity: capacity, now: .now), &state, shard)
        })
    }

    func connectionEnded(_ connection: ClientConnection, wasReady: Bool, error: SMTPError) {
        (wasReady ? metrics.connectionsRetired : metrics.connectionsFailed).increment()
        let shard = shards[connection.shard]
        // Read before this shard's lock is taken (never two shard locks at once); a shard
        // that becomes ready meanwhile only means messages fail that could have waited.
        let readyElsewhere = !wasReady && shards.contains { $0 !== shard && $0.hasReadyConnection }
        run(shard.state.withLock { state in
            state.connections[connection.id] = nil
            let actions = wasReady
                ? state.pool.connectionClosed(connection.id, now: .now)
                : state.pool.connectFailed(connection.id, error: error, readyElsewhere: readyElsewhere, now: .now)
            return resolve(actions, &state, shard)
        })
    }

    /// Whether connections time each transaction's phases.
    var timesTransactionPhases: Bool { configuration.metrics.timesTransactionPhases }

    /// A transaction's envelope and end of data took these (see ``MetricsOptions/timesTransactionPhases``).
    func transactionPhasesFinished(envelope: Duration, endOfData: Duration?) {
        metrics.recordTransaction(envelope: envelope, endOfData: endOfData)
    }

    /// One of the pool's connections finished `phase` of opening its session in `duration`.
    func setupPhaseFinished(_ phase: ClientStateMachine.SetupPhase, in duration: Duration) {
        metrics.recordSetup(phase, duration)
    }

    /// A transport connection was attached to one of the pool's connections.
    func transportOpened() {
        state.withLock { $0.openTransports += 1 }
    }

    /// That transport connection has closed (its handle is gone).
    func transportClosed() {
        let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
            state.openTransports -= 1
            guard state.openTransports == 0 else { return [] }
            defer { state.closedWaiters = [] }
            return state.closedWaiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// The pool gets the connection's slot back before the report goes out: a caller that
    /// sends its next message as soon as it has the report must find the slot free, not see
    /// a busy pool and make it open a connection it does not need.
    func attemptFinished(_ job: DeliveryJob, outcome: TransactionOutcome, connection: ClientConnection) {
        job.observation?.attemptEnded(outcome)
        let retry = job.record(outcome, policy: retryPolicy)
        left(connection, job)
        if retry, !job.cancelRequested.load(ordering: .relaxed) {
            let delay = retryPolicy.backoff.delay(afterAttempt: job.attempts, random: .random(in: 0..<1))
            (job.observation?.logger ?? logger).debug(
                "retrying", metadata: ["smtp.message": "\(job.id)", "smtp.delay": "\(delay)"])
            connection.loop.scheduleTimer(after: delay) { [self] in submit(job) }
        } else {
            job.complete(now: .now)
        }
    }

    func notAttempted(_ job: DeliveryJob, connection: ClientConnection) {
        job.observation?.attemptAbandoned()
        left(connection, job) { state in
            if job.cancelRequested.load(ordering: .sequentiallyConsistent) {
                return [.fail([job], SMTPError.cancelledBeforeStart)]
            }
            return state.pool.requeued([job], now: .now)
        }
    }

    func cancelledOnConnection(_ job: DeliveryJob, connection: ClientConnection) {
        left(connection, job)
        job.fail(SMTPError.cancelledBeforeStart, now: .now)
    }

    /// `job` is no longer on `connection`: the pool gets the slot back, then `then` may
    /// decide what becomes of the job, under the same lock.
    private func left(_ connection: ClientConnection, _ job: DeliveryJob,
                      then: (inout ShardState) -> PoolStateMachine<DeliveryJob>.Actions = { _ in [] }) {
        let shard = shards[connection.shard]
        run(shard.state.withLock { state in
            job.connectionID = nil
            let actions = state.pool.transactionFinished(on: connection.id, now: .now) + then(&state)
            return resolve(actions, &state, shard)
        })
    }

    // MARK: Effects

    /// Turns a shard's actions into effects, resolving connections while its lock is held.
    private func resolve(_ actions: PoolStateMachine<DeliveryJob>.Actions, _ state: inout ShardState,
                         _ shard: PoolShard) -> Effects {
        var effects: Effects = []
        for action in actions {
            switch action {
            case .connect(let id):
                let connection = ClientConnection(id: id, loop: shard.loop, shard: shard.index, client: self, logger: logger)
                state.connections[id] = connection
                effects.append(.start(connection))
            case .dispatch(let job, let id, let probeFirst):
                guard let connection = state.connections[id] else {
                    preconditionFailure("the pool dispatched to connection \(id), which it does not have")
                }
                job.connectionID = id
                job.probeFirst = probeFirst
                effects.append(.dispatch(job, connection))
            case .retire(let id):
                if let connection = state.connections[id] { effects.append(.retire(connection)) }
            case .fail(let jobs, let error):
                effects.append(.fail(jobs, error))
            case .handOff(let jobs):
                effects.append(.handOff(jobs, from: shard))
            case .wake(let instant):
                state.wakeTimer?.cancel()
                state.wakeTimer = shard.loop.scheduleTimer(after: instant - .now) { [self] in
                    run(shard.state.withLock { state in resolve(state.pool.wake(now: .now), &state, shard) })
                }
            case .drained:
                effects.append(.drained)
            }
        }
        return effects
    }

    private func run(_ effects: Effects) {
        for effect in effects {
            switch effect {
            case .start(let connection):
                start(connection)
            case .dispatch(let job, let connection):
                connection.dispatch(job)
            case .retire(let connection):
                connection.onLoop { connection.retire() }
            case .fail(let jobs, let error):
                for job in jobs { job.fail(error, now: .now) }
            case .handOff(let jobs, let from):
                let others = shards.filter { $0 !== from }
                let ready = others.filter(\.hasReadyConnection)
                for job in jobs { place(job, in: leastLoaded(of: ready.isEmpty ? others : ready)) }
            case .drained:
                let waiters = state.withLock { state -> [CheckedContinuation<Void, Never>] in
                    state.drainedShards += 1
                    guard state.drainedShards == shards.count else { return [] }
                    defer { state.poolWaiters = [] }
                    return state.poolWaiters
                }
                for waiter in waiters { waiter.resume() }
            }
        }
    }

    /// A state machine for one connection's session.
    func makeMachine(credentials: SASLCredentials?) -> ClientStateMachine {
        var configuration = machineConfiguration
        if let credentials { configuration.credentials = credentials }
        return ClientStateMachine(configuration: configuration, cryptography: OpenSSLCryptography())
    }

    /// Opens `connection`'s TCP (and implicit TLS) connection; the handler takes over from there.
    private func start(_ connection: ClientConnection) {
        let configuration = configuration
        let implicitTLS = configuration.security == .implicitTLS ? tlsContext : nil
        let serverName = tlsServerName
        Task {
            do {
                var credentials: SASLCredentials?
                if case .oauth2(let username, let token)? = configuration.credentials {
                    credentials = try SASLCredentials.bearerToken(username: username, token: try await token())
                }
                let machine = makeMachine(credentials: credentials)
                _ = try await Connection.connect(
                    to: configuration.host, port: configuration.port, on: connection.loop,
                    timeout: configuration.pool.connectTimeout, tls: implicitTLS, serverName: serverName
                ) { transport in
                    connection.attach(transport, machine: machine)
                    return connection
                }
            } catch let error as TransportError {
                connection.loop.execute { connection.connectFailed(SMTPError(error)) }
            } catch let error as SASLError {
                connection.loop.execute { connection.connectFailed(SMTPError(.authentication, "OAuth token: \(error)")) }
            } catch {
                connection.loop.execute {
                    connection.connectFailed(SMTPError(.authentication, "the OAuth token provider failed: \(error)",
                                                       isTransient: true))
                }
            }
        }
    }
}

/// One event loop's part of the client's pool: its connections (all on that loop), the
/// messages waiting for them, and the lock over both.
///
/// One pool under one lock had every loop take that lock several times per message; with
/// two loops against Postfix's smtp-sink a third of the client's futex calls were waits
/// for it. A connection that finishes a transaction takes the next message from its own
/// shard, and a bulk send refills the shard of the loop it runs on, so a busy client's loops
/// do not meet.
private final class PoolShard: Sendable {
    let index: Int
    let loop: EventLoop
    /// The connections this shard may open (its part of the pool's maximum).
    let share: Int
    let state: Locked<ShardState>

    init(index: Int, loop: EventLoop, share: Int, pool: PoolStateMachine<DeliveryJob>) {
        self.index = index
        self.loop = loop
        self.share = share
        state = Locked(ShardState(pool: pool))
    }

    /// Messages waiting or in flight per connection the shard may open.
    var relativeLoad: Double { Double(state.withLock { $0.pool.load }) / Double(share) }

    /// Whether one of its connections is ready, read under its lock (the answer may be stale
    /// by the time it is used: a connection can close meanwhile).
    var hasReadyConnection: Bool { state.withLock { $0.pool.hasReadyConnection } }
}

private struct ShardState {
    var pool: PoolStateMachine<DeliveryJob>
    var connections: [Int: ClientConnection] = [:]
    var wakeTimer: LoopTimer?
}

/// Hands one report to one waiting task.
private final class ReportWaiter: Sendable {
    private let continuation = Locked<CheckedContinuation<DeliveryReport, Never>?>(nil)

    func install(_ continuation: CheckedContinuation<DeliveryReport, Never>) {
        self.continuation.withLock { $0 = continuation }
    }

    func resume(_ report: consuming DeliveryReport) {
        // The report comes only after the job was submitted, which happens after install.
        continuation.withLock { continuation in
            defer { continuation = nil }
            return continuation
        }?.resume(returning: report)
    }
}
