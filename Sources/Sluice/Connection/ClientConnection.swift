import Logging
import SluiceCore
import SluiceTransport

/// One pooled SMTP connection: the client state machine joined to a transport connection,
/// on one event loop. The I/O layer is thin: bytes in, one call to the machine, one switch
/// over its actions.
final class ClientConnection: ConnectionHandler, @unchecked Sendable {
    // Every mutable field is touched on `loop`'s thread only: the handler methods run there,
    // the client hops there (loop.execute) before calling enqueue/retire/cancel, and timer
    // bodies run there.
    //
    // So the fields opt out of the runtime's exclusivity checks, which cost 33 calls per
    // message here (each a thread-local lookup and an access-set update: 2% of the client's
    // CPU against smtp-sink). No access can overlap another: the machine's mutating calls
    // return actions, carried out once the call has returned, and what re-enters the
    // connection while they are carried out (a completion that sends the next message) only
    // appends to `arrived`. The compiler's static checks still apply.
    let id: Int
    let loop: EventLoop
    /// The pool shard the connection belongs to (the one on `loop`).
    let shard: Int
    private let client: SMTPClient
    @exclusivity(unchecked) private var machine: ClientStateMachine
    @exclusivity(unchecked) private var connection: Connection?
    /// The jobs given to the machine and not yet finished, in the order given: a few (the
    /// transactions in flight), so a search beats hashing the id three times per message.
    @exclusivity(unchecked) private var jobs: [DeliveryJob] = []
    @exclusivity(unchecked) private var replyTimer: LoopTimer?
    /// Timers cancelled whose handles have not closed yet, and whether the transport has
    /// closed without the client being told: it is told once both are done, so the client's
    /// shutdown never returns with a handle of ours still open.
    @exclusivity(unchecked) private var timersClosing = 0
    @exclusivity(unchecked) private var transportClosePending = false
    @exclusivity(unchecked) private var ready = false
    @exclusivity(unchecked) private var reportedClosed = false
    @exclusivity(unchecked) private var transportCloseError: SMTPError?
    private var logger: Logger
    private let tracing: Bool
    /// The transcript hides what the client sends between `AUTH` and the server's verdict.
    @exclusivity(unchecked) private var redactingAuthentication = false
    /// Set while actions run: work handed over meanwhile (a completion that submits the next
    /// message) waits until they are done, so actions of one batch never interleave.
    @exclusivity(unchecked) private var performing = false
    @exclusivity(unchecked) private var arrived: [DeliveryJob] = []
    /// The batch of ``arrived`` being started; its storage is kept, as a job arrives with
    /// nearly every message.
    @exclusivity(unchecked) private var arriving: [DeliveryJob] = []
    /// The opening phase being timed and when it began; nil once the session is ready.
    @exclusivity(unchecked) private var setup: (phase: ClientStateMachine.SetupPhase, since: Moment)?
    /// Whether each transaction's envelope and end of data are timed
    /// (``MetricsOptions/timesTransactionPhases``).
    private let timesTransactions: Bool
    /// Emptied arrays for the machine's actions, kept with their storage so the two events of
    /// every message (its reply, the next message's arrival) allocate none. More than one
    /// when events nest (a completion that retires this connection mid-batch).
    @exclusivity(unchecked) private var actionBuffers: [[ClientStateMachine.Action]] = []

    /// A connection not yet open; ``attach(_:machine:)`` gives it its session.
    init(id: Int, loop: EventLoop, shard: Int, client: SMTPClient, logger: Logger) {
        self.id = id
        self.loop = loop
        self.shard = shard
        self.client = client
        machine = client.makeMachine(credentials: nil)
        var logger = logger
        logger[metadataKey: "smtp.connection"] = "\(id)"
        self.logger = logger
        tracing = logger.logLevel <= .trace
        timesTransactions = client.timesTransactionPhases
        setup = (.connect, .now)
    }

    // MARK: Transport events

    /// The TCP (and, for implicit TLS, TLS) connection is up; `machine` runs its session.
    /// Called on the loop by the connect's handler factory.
    func attach(_ connection: Connection, machine: ClientStateMachine) {
        self.connection = connection
        self.machine = machine
        client.transportOpened()
        logger.debug("connected", metadata: ["smtp.remote": "\(connection.remoteAddress.map { "\($0)" } ?? "?")"])
        traceTLS(connection)  // implicit TLS: the handshake is done before the handler is attached
        perform(self.machine.connected())
    }

    /// Times the session's opening: when the machine has moved to another phase (or to none,
    /// ready), the one it left is recorded. Costs one comparison per event once ready.
    private func timeSetup() {
        guard let current = setup else { return }
        let phase = machine.setupPhase
        guard phase != current.phase else { return }
        let now = Moment.now
        client.setupPhaseFinished(current.phase, in: now - current.since)
        setup = phase.map { ($0, now) }
    }

    /// Puts what a finished handshake settled in the transcript: version, cipher, the
    /// server certificate's subject (the peer's text, escaped).
    private func traceTLS(_ connection: Connection) {
        guard let details = connection.tlsDetails else { return }
        logger.trace("TLS established: \("\(details)".controlCharactersEscaped)")
    }

    func connection(_ connection: Connection, didReceive bytes: UnsafeRawBufferPointer) {
        if tracing { traceReplies(bytes) }
        handlingEvent {
            var actions = actionBuffers.popLast() ?? []
            machine.bytesReceived(bytes, into: &actions)
            run(&actions)
            recycle(&actions)
        }
    }

    func connectionDidClose(_ connection: Connection, error: TransportError?) {
        let sessionError = error.map { error in
            error.kind == .tls
                ? SMTPSessionError(.tlsFailed, error.description)
                : SMTPSessionError(.connectionLost, error.description)
        }
        // The pool judges the connection by the transport's error, which knows whether a
        // TLS failure was the certificate's (permanent) or the network's.
        transportCloseError = error.map(SMTPError.init)
        perform(machine.connectionClosed(error: sessionError))
        closed(error: transportCloseError ?? SMTPError(.connection, "the server closed the connection", isTransient: true))
        transportClosePending = true
        reportTransportClosedWhenTimersAre()
    }

    /// Cancels `timer` (if any), counting it until its handle has closed.
    private func cancelTimer(_ timer: inout LoopTimer?) {
        guard let cancelled = timer else { return }
        timer = nil
        timersClosing += 1
        cancelled.cancel { [self] in
            timersClosing -= 1
            reportTransportClosedWhenTimersAre()
        }
    }

    private func reportTransportClosedWhenTimersAre() {
        guard transportClosePending, timersClosing == 0 else { return }
        transportClosePending = false
        client.transportClosed()
    }

    // MARK: Client requests (on the loop)

    /// Runs `body` on this connection's loop: now if this is its thread, else by a hop.
    func onLoop(_ body: @escaping @Sendable () -> Void) {
        if loop.inEventLoop { body() } else { loop.execute(body) }
    }

    /// Sends `job` on this connection, from any thread: at once on the loop's own (no
    /// closure is made, which the busiest path would otherwise allocate per message), else
    /// after a hop.
    func dispatch(_ job: DeliveryJob) {
        guard loop.inEventLoop else {
            loop.execute { self.enqueue(job) }
            return
        }
        enqueue(job)
    }

    /// Sends `job` on this connection.
    func enqueue(_ job: DeliveryJob) {
        loop.assertInEventLoop()
        job.observation?.attemptStarted(number: job.attempts + 1, connection: id)
        arrived.append(job)
        if !performing { perform([]) }
    }

    /// The task that sent `job` was cancelled: drop it if it has not started.
    func cancel(_ job: DeliveryJob) {
        loop.assertInEventLoop()
        guard let index = jobs.firstIndex(where: { $0 === job }) else { return }
        (job.observation?.logger ?? logger).debug("send cancelled", metadata: ["smtp.job": "\(job.id)"])
        if machine.cancelPending(id: job.id) {
            jobs.remove(at: index)
            client.cancelledOnConnection(job, connection: self)
        } else {
            // Started: stopped before its end of data if it is not too late (the outcome
            // then says cancelled), else it runs to its real outcome.
            perform(machine.cancelStarted(id: job.id))
        }
    }

    /// QUIT once the work in flight is done, then close.
    func retire() {
        loop.assertInEventLoop()
        logger.debug("retiring")
        perform(machine.quitRequested())
    }

    /// The connect failed before any handler was made.
    func connectFailed(_ error: SMTPError) {
        guard !reportedClosed else { return }
        reportedClosed = true
        logger.warning("could not connect to the relay", metadata: ["smtp.error": "\(error)"])
        client.connectionEnded(self, wasReady: false, error: error)
    }

    // MARK: Actions

    private func perform(_ actions: [ClientStateMachine.Action]) {
        var actions = actions
        handlingEvent { run(&actions) }
    }

    /// Runs `body` (which carries out actions), then, if this is the outermost call, starts
    /// the jobs that arrived meanwhile and schedules the write.
    private func handlingEvent(_ body: () -> Void) {
        let outermost = !performing
        performing = true
        body()
        guard outermost else { return }
        if setup != nil { timeSetup() }
        while !arrived.isEmpty {
            swap(&arrived, &arriving)  // what these jobs' actions hand over goes to the emptied array
            defer { arriving.removeAll(keepingCapacity: true) }
            for job in arriving {
                if job.probeFirst {
                    // The pool saw this connection sit idle long enough to check it first.
                    job.probeFirst = false
                    perform(machine.idleConnectionReused())
                }
                if job.cancelRequested.load(ordering: .relaxed) {
                    client.cancelledOnConnection(job, connection: self)
                    continue
                }
                self.jobs.append(job)
                if timesTransactions { job.phaseTimes = (.now, nil) }
                var actions = actionBuffers.popLast() ?? []
                machine.transactionEnqueued(job.transaction, into: &actions)
                run(&actions)
                recycle(&actions)
            }
        }
        performing = false
    }

    /// Keeps `actions`, carried out, for a later event.
    private func recycle(_ actions: inout [ClientStateMachine.Action]) {
        actions.removeAllKeepingCapacity()
        actionBuffers.append(actions)
    }

    /// Carries out `actions`, each moved out of the array in turn (a placeholder left in its
    /// place): iterated as values, each action and what it carries was retained once more and
    /// released with the array, several times a message.
    private func run(_ actions: inout [ClientStateMachine.Action]) {
        for index in actions.indices {
            var action = ClientStateMachine.Action.cancelTimer
            swap(&action, &actions[index])
            switch consume action {
            case .write(let outputs):
                write(outputs)
            case .startTLS:
                startTLS()  // the transport writes STARTTLS's batch in the clear first
            case .sessionReady(let capabilities):
                ready = true
                logger.debug("session ready", metadata: ["smtp.capabilities": "\(capabilities.extensions.keys.sorted())"])
                client.connectionReady(self, capacity: capacity(for: capabilities))
            case .transactionFinished(let outcome):
                guard let job = takeJob(outcome.id) else { continue }
                if timesTransactions, let (started, written) = job.phaseTimes {
                    // The envelope runs to the content's write (with CHUNKING that is at once:
                    // nothing waits for the envelope's replies); the end of data to the reply.
                    let now = Moment.now
                    client.transactionPhasesFinished(envelope: (written ?? now) - started, endOfData: written.map { now - $0 })
                }
                client.attemptFinished(job, outcome: outcome, connection: self)
            case .transactionNotAttempted(let transaction):
                guard let job = takeJob(transaction.id) else { continue }
                client.notAttempted(job, connection: self)
            case .armTimer(let delay):
                if replyTimer?.reschedule(after: delay) != true {
                    replyTimer = loop.scheduleTimer(after: delay) { [self] in perform(machine.timeoutFired()) }
                }
            case .cancelTimer:
                cancelTimer(&replyTimer)
            case .close(let error):
                if let error { logger.debug("closing", metadata: ["smtp.error": "\(error)"]) }
                connection?.close()  // graceful: what was written goes first
                closed(error: transportCloseError ?? error.map(SMTPError.init)
                    ?? SMTPError(.connection, "closed after QUIT", isTransient: true))
            }
        }
    }

    /// Removes and returns the job of transaction `id`.
    private func takeJob(_ id: Int) -> DeliveryJob? {
        jobs.firstIndex { $0.id == id }.map { jobs.remove(at: $0) }
    }

    /// Tells the client once that this connection is gone.
    private func closed(error: SMTPError) {
        cancelTimer(&replyTimer)
        guard !reportedClosed else { return }
        reportedClosed = true
        client.connectionEnded(self, wasReady: ready, error: error)
    }

    private func capacity(for capabilities: SMTPCapabilities) -> Int {
        let configuration = client.pipeliningSettings
        guard configuration.enabled, capabilities.pipelining else { return 1 }
        guard configuration.chunking, capabilities.chunking else { return 2 }
        return max(1, configuration.transactionsPerConnection)
    }


    /// Adds what the machine wrote to what the transport writes at the end of this loop
    /// iteration (``Connection/bufferWrite(_:)-(UnsafeRawBufferPointer)``): commands copied in,
    /// message contents shared.
    private func write(_ outputs: [ClientOutput]) {
        guard let connection else { return }
        if tracing { traceCommands(outputs) }
        for output in outputs {
            switch output {
            case .bytes(let bytes):
                connection.bufferWrite(bytes)
            case .data(let id), .chunk(let id):
                guard let content = content(of: output, id) else { continue }
                if timesTransactions, let job = jobs.first(where: { $0.id == id }) { job.phaseTimes?.contentWritten = .now }
                connection.bufferWrite(contentsOf: content)
            }
        }
    }

    /// The message bytes a `.data` (dot-stuffed, with the terminator) or `.chunk`
    /// (normalised) piece stands for, shared and not copied.
    private func content(of output: ClientOutput, _ id: Int) -> [SharedBytes]? {
        guard let message = jobs.first(where: { $0.id == id })?.message else { return nil }
        return output == .data(transactionID: id) ? message.dataPieces : message.chunkPieces
    }

    private func startTLS() {
        guard let connection, let context = client.tlsContext else {
            connection?.close(error: TransportError(.invalidArgument, "STARTTLS without a TLS context"))
            return
        }
        connection.startTLS(context: context, serverName: client.tlsServerName) { [self] result in
            // A failed handshake closes the connection; connectionDidClose reports it.
            guard case .success = result else { return }
            traceTLS(connection)
            perform(machine.tlsEstablished())
        }
    }

    // MARK: Transcript

    private func traceCommands(_ outputs: [ClientOutput]) {
        for output in outputs {
            switch output {
            case .bytes(let bytes):
                for line in String(decoding: bytes, as: UTF8.self).split(separator: "\r\n", omittingEmptySubsequences: true) {
                    let shown: String
                    if line.uppercased().hasPrefix("AUTH ") {
                        redactingAuthentication = true
                        shown = line.split(separator: " ").prefix(2).joined(separator: " ") + " [redacted]"
                    } else if redactingAuthentication {
                        shown = "[redacted]"
                    } else {
                        shown = String(line)
                    }
                    logger.trace("C: \(shown)")
                }
            case .data(let id), .chunk(let id):
                logger.trace("C: [message content, \(content(of: output, id)?.reduce(0) { $0 + $1.count } ?? 0) octets]")
            }
        }
    }

    private func traceReplies(_ bytes: UnsafeRawBufferPointer) {
        for line in String(decoding: bytes, as: UTF8.self).split(separator: "\r\n", omittingEmptySubsequences: true) {
            if redactingAuthentication, !line.hasPrefix("334") { redactingAuthentication = false }
            logger.trace("S: \(line.controlCharactersEscaped)")
        }
    }
}
