import SluiceCore
import SluiceTransport
#if DistributedTracingSupport
import Tracing
#endif

/// What every session of one sink shares.
final class SinkShared: Sendable {
    let configuration: SinkConfiguration
    let store: MessageStore
    let counters = SinkCounters()
    let faults: FaultState?
    let delays: Locked<SplitMix64>
    #if DistributedTracingSupport
    /// The tracer for a span per transaction; nil for the no-op one (then none is made).
    let tracer: (any Tracer)?
    #endif
    /// Whether reading is paused sink-wide, and the open sessions to tell when it changes.
    private let stall = Locked<(paused: Bool, sessions: [ObjectIdentifier: SinkSession])>((false, [:]))

    init(configuration: SinkConfiguration, store: MessageStore) {
        self.configuration = configuration
        self.store = store
        faults = configuration.faults.isEmpty ? nil : FaultState(configuration.faults)
        delays = Locked(SplitMix64(seed: configuration.faults.seed &+ 0x5EED))
        #if DistributedTracingSupport
        let tracer = configuration.tracer ?? InstrumentationSystem.tracer
        self.tracer = tracer is NoOpTracer ? nil : tracer
        #endif
    }

    /// Whether reading is paused sink-wide (``SMTPSink/pauseReading()``).
    var readingPaused: Bool { stall.withLock { $0.paused } }

    /// Pauses or resumes reading on every open session (and on those that open later).
    func setReadingPaused(_ paused: Bool) {
        let sessions = stall.withLock { state in
            state.paused = paused
            return Array(state.sessions.values)
        }
        for session in sessions { session.readingPausedChanged() }
    }

    /// Adds an open session; returns whether reading is paused.
    func register(_ session: SinkSession) -> Bool {
        stall.withLock { state in
            state.sessions[ObjectIdentifier(session)] = session
            return state.paused
        }
    }

    func unregister(_ session: SinkSession) {
        _ = stall.withLock { $0.sessions.removeValue(forKey: ObjectIdentifier(session)) }
    }

    /// The open sessions.
    var sessions: [SinkSession] { stall.withLock { Array($0.sessions.values) } }

    /// Failed AUTH attempts by client address, counted over a window (Postfix's anvil).
    private let authenticationFailures = Locked<[String: FailureCount]>([:])

    private struct FailureCount {
        var count = 0
        let since: ContinuousClock.Instant
    }

    /// `address`'s failures if its window is still open at `now`.
    private func failures(of address: String, in table: [String: FailureCount], at now: ContinuousClock.Instant)
        -> FailureCount? {
        table[address].flatMap { now - $0.since < configuration.authenticationFailureWindow ? $0 : nil }
    }

    /// Records a failed AUTH from `address`; returns whether the address is now past its limit.
    func authenticationFailed(from address: String) -> Bool {
        counters.authenticationFailures.add(1, ordering: .relaxed)
        let now = ContinuousClock.now
        return authenticationFailures.withLock { table in
            var entry = failures(of: address, in: table, at: now) ?? FailureCount(since: now)
            entry.count += 1
            table[address] = entry
            if table.count > 10_000 {  // bounded: forget the windows that have closed
                table = table.filter { now - $0.value.since < configuration.authenticationFailureWindow }
            }
            return entry.count >= configuration.maximumAuthenticationFailuresPerAddress
        }
    }

    /// Whether `address` is past its limit of failed AUTH attempts now.
    func isLockedOut(_ address: String) -> Bool {
        let now = ContinuousClock.now
        return authenticationFailures.withLock { table in
            guard let entry = failures(of: address, in: table, at: now) else { return false }
            return entry.count >= configuration.maximumAuthenticationFailuresPerAddress
        }
    }

    func replyDelay() -> Duration? {
        switch configuration.replyDelay {
        case nil: return nil
        case .fixed(let delay)?: return delay
        case .random(let low, let high)?:
            let fraction = delays.withLock { $0.nextFraction() }
            return low + (high - low) * fraction
        }
    }
}

/// One SMTP session: the server state machine joined to a connection, on its loop.
final class SinkSession: ConnectionHandler, @unchecked Sendable {
    // Every mutable field is touched on the connection's loop thread only: the handler
    // methods run there, and each closure that captures the session (timers, the store's
    // completion) runs there or hops there with loop.execute before touching anything.
    //
    // So the fields skip the runtime's exclusivity checks (a thread-local lookup and an
    // access-set update each; a message made 23 here against smtp-source). No access can
    // overlap another: the machine's mutating calls return actions, carried out once the call
    // has returned. The compiler's static checks still apply.
    let connection: Connection
    private let shared: SinkShared
    @exclusivity(unchecked) private var machine: ServerStateMachine
    @exclusivity(unchecked) private var idleTimer: LoopTimer?
    /// The deadline for what the client is in the middle of sending (a command line or a
    /// content), and which one it was set for.
    @exclusivity(unchecked) private var deadlineTimer: LoopTimer?
    @exclusivity(unchecked) private var deadlineFor: (ServerStateMachine.InputProgress, Int) = (.idle, 0)
    @exclusivity(unchecked) private var delayTimer: LoopTimer?
    /// Ends the hold after a failed AUTH or a tarpit's hold.
    @exclusivity(unchecked) private var holdTimer: LoopTimer?
    /// Ends the wait for a draining session's next command.
    @exclusivity(unchecked) private var drainTimer: LoopTimer?
    /// Output held by a reply delay or a penalty, in order, each with when it is due (never
    /// before the one in front of it).
    @exclusivity(unchecked) private var outbox: [(out: Out, due: ContinuousClock.Instant)] = []
    @exclusivity(unchecked) private var isClosed = false
    /// Bytes read after a sink-wide pause began and before the connection stopped reading
    /// (that takes a hop to this loop): held unread, so that from the moment
    /// ``SMTPSink/pauseReading()`` returns the session answers nothing until it resumes.
    @exclusivity(unchecked) private var heldInput: [UInt8] = []

    private enum Out {
        case write([UInt8])
        case startTLS
        case close
    }

    /// Starts the session on `connection` (on its loop) and sends the greeting.
    /// The session holds a slot of ``SinkCounters/activeSessions`` its caller has already
    /// taken, and gives it back when it closes.
    init(connection: Connection, shared: SinkShared, secure: Bool) {
        self.connection = connection
        self.shared = shared
        let policy: any ServerPolicy = shared.faults.map { FaultPolicy(state: $0, client: connection.remoteAddress?.host ?? "") } ?? NoFaults()
        machine = ServerStateMachine(configuration: shared.configuration.server, policy: policy)
        shared.counters.sessions.add(1, ordering: .relaxed)
        if secure { shared.counters.tlsSessions.add(1, ordering: .relaxed) }
        perform(machine.connected(secure: secure))
        if shared.register(self) {
            connection.pauseReading()
        } else {
            resetIdleTimer()
        }
    }

    /// Follows a sink-wide pause or resume of reading, on the connection's loop. A paused
    /// session has no idle timer: the silence is the sink's, not the client's.
    func readingPausedChanged() {
        connection.eventLoop.execute { [self] in
            guard !isClosed else { return }
            if shared.readingPaused {
                idleTimer?.cancel()
                idleTimer = nil
                connection.pauseReading()
            } else {
                if !heldInput.isEmpty {
                    let held = heldInput
                    heldInput = []
                    held.withUnsafeBytes { process($0) }
                    guard !isClosed else { return }
                }
                resetIdleTimer()
                if machine.bufferedInputCount <= 1 << 20 { connection.resumeReading() }
            }
        }
    }

    func connection(_ connection: Connection, didReceive bytes: UnsafeRawBufferPointer) {
        if !heldInput.isEmpty || shared.readingPaused {
            heldInput.append(contentsOf: bytes)
            connection.pauseReading()
            return
        }
        process(bytes)
    }

    private func process(_ bytes: UnsafeRawBufferPointer) {
        resetIdleTimer()
        perform(machine.bytesReceived(bytes))
        // Input waits while a message is stored; do not let a client pile it up.
        if machine.bufferedInputCount > 1 << 20 { connection.pauseReading() }
        updateDeadline()
    }

    /// A failed AUTH, the `failures`-th on this connection: its reply (and everything after
    /// it) is held longer with each failure, the machine reads nothing more meanwhile (so
    /// pipelined guesses wait their turn), and an address past its limit across connections
    /// is closed with 421. Returns how long the replies are held.
    private func authenticationFailed(failures: Int) -> Duration {
        let address = connection.remoteAddress?.host ?? "unknown"
        let penalty = shared.configuration.authenticationFailureDelay * min(failures, 10)
        if shared.authenticationFailed(from: address) {
            let refusal = SMTPReply(
                .serviceNotAvailable, EnhancedStatusCode("4.7.0"),
                "\(shared.configuration.server.hostname) Error: too many failed authentications from \(address)")
            holdTimer = connection.eventLoop.scheduleTimer(after: penalty) { [self] in
                perform(machine.closeRequested(refusal))
            }
        } else {
            holdTimer = connection.eventLoop.scheduleTimer(after: penalty) { [self] in
                perform(machine.holdEnded())
                resetIdleTimer()
                updateDeadline()
            }
        }
        return penalty
    }

    /// Arms the deadline for the command line or content the client is in the middle of,
    /// once per line or content; cancels it when nothing is half-sent.
    private func updateDeadline() {
        let now = machine.progress()
        guard now != deadlineFor else { return }
        deadlineFor = now
        deadlineTimer?.cancel()
        deadlineTimer = nil
        let limit: Duration
        switch now.0 {
        case .idle: return
        case .commandLine: limit = shared.configuration.commandTimeout
        case .content: limit = shared.configuration.contentTimeout
        }
        deadlineTimer = connection.eventLoop.scheduleTimer(after: limit) { [self] in
            guard !isClosed else { return }
            shared.counters.slowClientsClosed.add(1, ordering: .relaxed)
            perform(machine.deadlineExceeded())
        }
    }

    /// The sink is shutting down: the session finishes the content it is reading, then closes.
    ///
    /// A session between commands has ``SinkConfiguration/drainSettle`` to send its next command
    /// (a client that has just had its 250 is usually about to QUIT, and deserves its 221);
    /// then it gets its 421.
    func drain() {
        connection.eventLoop.execute { [self] in
            guard !isClosed else { return }
            perform(machine.drainRequested())
            guard !isClosed else { return }
            drainTimer = connection.eventLoop.scheduleTimer(after: shared.configuration.drainSettle) { [self] in
                guard !isClosed else { return }
                perform(machine.drainSettled())
            }
        }
    }

    func connectionDidClose(_ connection: Connection, error: TransportError?) {
        isClosed = true
        if machine.quitReceived { shared.counters.quits.add(1, ordering: .relaxed) }
        shared.unregister(self)
        idleTimer?.cancel()
        deadlineTimer?.cancel()
        delayTimer?.cancel()
        holdTimer?.cancel()
        drainTimer?.cancel()
        shared.counters.activeSessions.subtract(1, ordering: .relaxed)
    }

    private func resetIdleTimer() {
        if idleTimer?.reschedule(after: shared.configuration.idleTimeout) == true { return }
        idleTimer = connection.eventLoop.scheduleTimer(after: shared.configuration.idleTimeout) { [self] in
            perform(machine.timeoutFired())
        }
    }

    private func perform(_ actions: [ServerStateMachine.Action]) {
        guard !isClosed else { return }
        var penalty: Duration?
        for action in actions {
            switch action {
            case .write(let bytes):
                shared.counters.countReplies(in: bytes)
                send(.write(bytes), penalty: penalty)
            case .startTLS:
                send(.startTLS, penalty: penalty)
            case .close:
                send(.close, penalty: penalty)
            case .deliver(let message):
                deliver(message)
            case .authenticationFailed(let failures):
                penalty = authenticationFailed(failures: failures)
            case .hold(let duration):
                // A tarpit: what follows waits, and so does the reading.
                penalty = duration
                holdTimer = connection.eventLoop.scheduleTimer(after: duration) { [self] in
                    perform(machine.holdEnded())
                    resetIdleTimer()
                    updateDeadline()
                }
            }
        }
    }

    private func deliver(_ message: ReceivedMessage) {
        let loop = connection.eventLoop
        let span = transactionSpan(message)
        if shared.configuration.verifiesChecksums, let refusal = checksumRefusal(message) {
            ended(span, .failure(StoreError(description: "checksum mismatch")))
            finish(refusal)
            return
        }
        shared.store.store(message, arrival: Arrival(client: connection.remoteAddress, tls: connection.tlsDetails)) {
            [self] result in
            if loop.inEventLoop {
                delivered(message, result, span: span)
            } else {
                loop.execute { self.delivered(message, result, span: span) }
            }
        }
    }

    #if DistributedTracingSupport
    typealias TransactionSpan = (any Span)?

    /// A server span for a transaction whose content has arrived, ended once it is stored
    /// (or not) and its reply is due. Addresses stay out of it: they are personal data.
    private func transactionSpan(_ message: ReceivedMessage) -> TransactionSpan {
        guard let tracer = shared.tracer else { return nil }
        let span = tracer.startSpan("smtp receive", context: .topLevel, ofKind: .server)
        if let client = connection.remoteAddress {
            span.attributes["client.address"] = client.host
            span.attributes["client.port"] = client.port
        }
        span.attributes["smtp.recipients"] = message.recipients.count
        span.attributes["smtp.message.size"] = message.content.count
        span.attributes["smtp.tls"] = message.wasSecure
        return span
    }

    private func ended(_ span: TransactionSpan, _ result: Result<String, StoreError>) {
        guard let span else { return }
        switch result {
        case .success:
            span.attributes["smtp.outcome"] = "stored"
        case .failure(let error):
            span.attributes["smtp.outcome"] = "failed"
            span.setStatus(SpanStatus(code: .error, message: "\(error)"))
        }
        span.end()
    }
    #else
    typealias TransactionSpan = Void
    private func transactionSpan(_ message: ReceivedMessage) {}
    private func ended(_ span: Void, _ result: Result<String, StoreError>) {}
    #endif

    private func delivered(_ message: ReceivedMessage, _ result: Result<String, StoreError>, span: TransactionSpan) {
        ended(span, result)
        // A stored message is counted even when its client has already gone: the count must
        // match the store.
        if case .success = result {
            shared.counters.messages.add(1, ordering: .relaxed)
            shared.counters.recipients.add(message.recipients.count, ordering: .relaxed)
            shared.counters.bytes.add(message.content.count, ordering: .relaxed)
        }
        switch result {
        case .success(let id):
            finish(.stored(id: id))
        case .failure(let error):
            finish(.failed(SMTPReply(.localErrorInProcessing, EnhancedStatusCode("4.3.0"), "Error: could not store the message: \(error)")))
        }
    }

    /// Answers the transaction whose content was delivered, and reads on.
    private func finish(_ result: DeliveryResult) {
        guard !isClosed else { return }
        perform(machine.deliveryFinished(result))
        resetIdleTimer()  // the client's idle time starts at its reply (see timeoutFired)
        if machine.bufferedInputCount <= 1 << 20, !shared.readingPaused { connection.resumeReading() }
        updateDeadline()
    }

    /// With ``SinkConfiguration/verifiesChecksums``: the refusal for a message whose body
    /// does not match its checksum (counted, and never stored), or nil to store it.
    private func checksumRefusal(_ message: ReceivedMessage) -> DeliveryResult? {
        switch ContentChecksum.verify(message.content) {
        case .verified:
            shared.counters.checksumsVerified.add(1, ordering: .relaxed)
            return nil
        case .unchecked:
            shared.counters.checksumsMissing.add(1, ordering: .relaxed)
            return nil
        case .mismatch(let reason):
            shared.counters.checksumMismatches.add(1, ordering: .relaxed)
            return .failed(SMTPReply(.transactionFailed, EnhancedStatusCode("5.6.0"), "Error: content corrupted: \(reason)"))
        }
    }

    // MARK: Output, with the optional reply delay

    /// Carries `out` out now, or after the sink's reply delay or a `penalty` (a failed
    /// AUTH, a tarpit), whichever is longer; what is already held keeps its place in front
    /// of it, and a penalty counts from now even when output is held already.
    private func send(_ out: Out, penalty: Duration? = nil) {
        // The longer of the two, without an array per reply (this runs for every reply).
        let configured = shared.replyDelay()
        let delay = configured.map { configured in penalty.map { max($0, configured) } ?? configured } ?? penalty
        if delay == nil, outbox.isEmpty {
            execute(out)
            return
        }
        let due = max(ContinuousClock.now + (delay ?? .zero), outbox.last?.due ?? ContinuousClock.now)
        outbox.append((out, due))
        if delayTimer == nil { scheduleHeldOutput(at: outbox[0].due) }
    }

    /// Writes the held output that is due when the timer fires, and waits again for the rest.
    private func scheduleHeldOutput(at due: ContinuousClock.Instant) {
        delayTimer = connection.eventLoop.scheduleTimer(after: max(.zero, due - ContinuousClock.now)) { [self] in
            delayTimer = nil
            let now = ContinuousClock.now
            let ready = outbox.prefix { $0.due <= now }.count
            let released = outbox[..<ready].map(\.out)
            outbox.removeFirst(ready)
            for out in released where !isClosed { execute(out) }
            if let next = outbox.first, !isClosed { scheduleHeldOutput(at: next.due) }
        }
    }

    private func execute(_ out: Out) {
        switch out {
        case .write(let bytes):
            write(bytes)
        case .close:
            connection.close()  // graceful: the replies written go first
        case .startTLS:
            guard let context = shared.configuration.tls else {
                connection.close(error: TransportError(.invalidArgument, "STARTTLS without a certificate"))
                return
            }
            connection.startTLS(context: context, serverName: nil) { [self] result in
                guard case .success = result else { return }  // the transport closes a failed handshake
                shared.counters.tlsSessions.add(1, ordering: .relaxed)
                perform(machine.tlsEstablished())
            }
        }
    }

    /// Queues `bytes` with whatever else this session answers in this loop iteration: the
    /// transport writes them together at its end (see ``Connection/bufferWrite(_:)-([UInt8])``).
    private func write(_ bytes: [UInt8]) {
        connection.bufferWrite(bytes)
    }
}

/// Answers a connection the sink will not serve (past the connection limit, or from an
/// address locked out) with a 421 and closes it.
final class RefusedSession: ConnectionHandler {
    init(connection: Connection, reply: String) {
        connection.enqueueWrite(Array("\(reply)\r\n".utf8))
        connection.close()
    }
    func connection(_ connection: Connection, didReceive bytes: UnsafeRawBufferPointer) {}
    func connectionDidClose(_ connection: Connection, error: TransportError?) {}
}
