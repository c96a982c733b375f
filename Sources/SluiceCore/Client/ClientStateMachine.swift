/// The client side of one SMTP connection, as a state machine: it is fed events and returns
/// the actions to take. It does no I/O, reads no clock and holds no continuation.
///
/// It carries two sub-machines, each in a file of its own:
/// - the opening (`OpeningStateMachine`): the greeting (220; anything else refuses), EHLO
///   with a HELO fallback, STARTTLS by policy with a new EHLO after TLS, and AUTH (never over
///   plaintext unless allowed);
/// - the transaction pipeline (`PipelineStateMachine`): with PIPELINING, `MAIL`, every
///   `RCPT` and `DATA` in one write; with CHUNKING too, whole transactions back to back,
///   several in flight; without PIPELINING, one command, one reply.
///
/// This type owns what holds in every phase: parsing the replies and bounding them, a 421 at
/// any time, a reply that comes before its command was written, bytes injected after the 220
/// to STARTTLS, the reply timer, and gathering each event's writes and actions.
///
/// Every recipient is judged on its own `RCPT` reply; a message is accepted only on a 2xx to
/// the end of its data; a connection lost after the terminator leaves the outcome unknown.
public struct ClientStateMachine: Sendable {
    /// What the connection should do.
    public enum Action: Hashable, Sendable {
        /// Write these pieces, in order, in one write.
        case write([ClientOutput])
        /// Start the TLS handshake now (after the 220 to STARTTLS); every later byte is TLS.
        case startTLS
        /// The session is established (greeting, EHLO, TLS and AUTH as configured) and
        /// transactions can run; the capabilities are the final EHLO's.
        case sessionReady(SMTPCapabilities)
        /// A transaction finished.
        case transactionFinished(TransactionOutcome)
        /// A transaction was not started on this connection and can go to another.
        case transactionNotAttempted(SMTPTransaction)
        /// Wait at most this long for the next reply (replacing any earlier timer).
        case armTimer(Duration)
        /// Nothing is awaited: stop the timer.
        case cancelTimer
        /// Close the connection: cleanly after QUIT (nil), or because of the error.
        case close(SMTPSessionError?)
    }

    /// How the connection uses TLS.
    public enum TLSPolicy: Hashable, Sendable {
        /// STARTTLS must succeed before anything else; never falls back to plaintext.
        case startTLSRequired
        /// STARTTLS when offered; plaintext otherwise.
        case startTLSOpportunistic
        /// No TLS.
        case none
        /// TLS from the first byte (port 465); the transport does the handshake.
        case implicit
    }

    /// What the machine needs to know about the session it runs.
    public struct Configuration: Hashable, Sendable {
        /// The name sent in EHLO/HELO.
        public var ehloName: SMTPDomain
        /// TLS policy.
        public var tls: TLSPolicy
        /// Credentials for AUTH, if any.
        public var credentials: SASLCredentials?
        /// A mechanism to use instead of the strongest common one.
        public var forcedMechanism: SASLMechanism?
        /// Whether credentials may go over a connection that is not encrypted.
        public var allowPlaintextAuthentication: Bool
        /// Use PIPELINING when offered.
        public var usePipelining: Bool
        /// Use CHUNKING (BDAT) when offered together with PIPELINING.
        public var useChunking: Bool
        /// The most transactions in flight at once with CHUNKING.
        public var maximumTransactionsInFlight: Int
        /// Reply timeouts.
        public var timeouts: SMTPTimeouts
        /// Bounds on replies.
        public var replyLimits: ReplyParser.Limits
        /// The server's host and port (OAUTHBEARER sends them).
        public var serverHost: String
        /// The server's port.
        public var serverPort: Int

        /// A configuration; by default STARTTLS is required and no AUTH is done.
        public init(ehloName: SMTPDomain, tls: TLSPolicy = .startTLSRequired, credentials: SASLCredentials? = nil,
                    forcedMechanism: SASLMechanism? = nil, allowPlaintextAuthentication: Bool = false,
                    usePipelining: Bool = true, useChunking: Bool = true, maximumTransactionsInFlight: Int = 8,
                    timeouts: SMTPTimeouts = SMTPTimeouts(), replyLimits: ReplyParser.Limits = ReplyParser.Limits(),
                    serverHost: String = "", serverPort: Int = 25) {
            self.ehloName = ehloName
            self.tls = tls
            self.credentials = credentials
            self.forcedMechanism = forcedMechanism
            self.allowPlaintextAuthentication = allowPlaintextAuthentication
            self.usePipelining = usePipelining
            self.useChunking = useChunking
            self.maximumTransactionsInFlight = max(1, maximumTransactionsInFlight)
            self.timeouts = timeouts
            self.replyLimits = replyLimits
            self.serverHost = serverHost
            self.serverPort = serverPort
        }
    }

    private enum State: Sendable {
        case idle
        /// The greeting, EHLO, STARTTLS and AUTH: `opening` is live.
        case opening
        /// Transactions run.
        case ready
        /// QUIT once what is in flight finishes; nothing new starts.
        case quitting
        case closed
    }

    private let configuration: Configuration
    private var state = State.idle
    private var opening: OpeningStateMachine
    private var pipeline: PipelineStateMachine

    /// The part of a session's opening a connection is in, which the client times.
    public enum SetupPhase: String, CaseIterable, Sendable {
        /// Opening the TCP connection (and, for implicit TLS, its handshake).
        case connect
        /// Waiting for the server's 220 greeting.
        case greeting
        /// EHLO (or HELO) and its reply; twice with STARTTLS, before and after.
        case ehlo
        /// STARTTLS and its reply.
        case startTLS = "starttls"
        /// The TLS handshake after STARTTLS.
        case tlsHandshake = "tls"
        /// AUTH, to its final reply.
        case authentication = "auth"
    }

    /// The opening phase the session is in; nil before the connection is up and once the
    /// session is ready (or closing).
    public var setupPhase: SetupPhase? {
        if case .opening = state { return opening.setupPhase }
        return nil
    }
    private var parser: ReplyParser
    /// The capabilities of the last EHLO, once the session is ready.
    private var capabilities = SMTPCapabilities() {
        didSet { pipeline.features = PipelineStateMachine.Features(capabilities, configuration) }
    }
    /// This event's writes and actions.
    private var effects = ClientEffects()
    /// The opening's command awaiting its reply (EHLO, HELO, STARTTLS, AUTH) is still in the
    /// output, not yet handed to the connection.
    private var sessionCommandUnwritten = false
    /// The pipeline's reply the timer runs for.
    private var armedFor: PipelineStateMachine.Expectation?
    private var timerArmed = false
    /// The reply timer as this event leaves it (armed anew, or cancelled), told once by
    /// ``finish()`` as an `.armTimer` or `.cancelTimer` action. A batch of replies moves the
    /// head of the queue several times per message, and each restart of a libuv timer is a
    /// heap removal and insertion; only where the batch ends matters.
    private var timerChange: TimerChange?

    /// What happens to the reply timer (a plain value: it is set several times per message,
    /// and an `Action` would be destroyed through its value witness each time).
    private enum TimerChange {
        case arm(Duration)
        case cancel

        var action: Action {
            switch self {
            case .arm(let delay): .armTimer(delay)
            case .cancel: .cancelTimer
            }
        }
    }

    /// A machine for one connection.
    public init(configuration: Configuration, cryptography: any SASLCryptography) {
        self.configuration = configuration
        opening = OpeningStateMachine(configuration: configuration, cryptography: cryptography)
        pipeline = PipelineStateMachine(configuration: configuration)
        parser = ReplyParser(limits: configuration.replyLimits)
    }

    /// Whether the session is ready and nothing is in flight or queued.
    public var isIdle: Bool {
        if case .ready = state { return pipeline.isIdle }
        return false
    }

    /// Transactions queued or in flight on this connection.
    public var load: Int { pipeline.load }

    /// The capabilities of the last EHLO.
    public var serverCapabilities: SMTPCapabilities {
        if case .opening = state { return opening.capabilities }
        return capabilities
    }

    // MARK: Events

    /// The TCP connection is up (and, with implicit TLS, its handshake done): wait for the greeting.
    public mutating func connected() -> [Action] {
        guard case .idle = state else { preconditionFailure("connected() twice") }
        state = .opening
        timerChange = .arm(configuration.timeouts.greeting)
        timerArmed = true
        return finish()
    }

    /// Bytes arrived from the server.
    public mutating func bytesReceived(_ bytes: [UInt8]) -> [Action] {
        bytes.withUnsafeBytes { bytesReceived($0) }
    }

    /// Bytes arrived from the server.
    public mutating func bytesReceived(_ bytes: ArraySlice<UInt8>) -> [Action] {
        bytes.withUnsafeBytes { bytesReceived($0) }
    }

    /// Bytes arrived from the server (valid only during the call). Concrete, so that a
    /// caller in another module does not append them byte by byte through generics.
    public mutating func bytesReceived(_ bytes: UnsafeRawBufferPointer) -> [Action] {
        receive(bytes)
        return finish()
    }

    /// Bytes arrived from the server (valid only during the call): this event's actions are
    /// appended to `result`. A caller that empties `result` after carrying them out (keeping
    /// its capacity) and passes it again makes the machine allocate no array per event.
    public mutating func bytesReceived(_ bytes: UnsafeRawBufferPointer, into result: inout [Action]) {
        receive(bytes)
        finish(into: &result)
    }

    private mutating func receive(_ bytes: UnsafeRawBufferPointer) {
        switch state {
        case .closed, .idle:
            return
        case .opening where opening.isInTLSHandshake:
            // The transport hands every byte to TLS once the handshake starts; anything here
            // was read before it and is an injection.
            fail(SMTPSessionError(.tlsInjection, "bytes arrived after the 220 to STARTTLS"))
            return
        case .opening, .ready, .quitting:
            break
        }
        parser.append(bytes)
        while true {
            let reply: SMTPReply?
            do {
                reply = try parser.nextReply()
            } catch {
                // The parser's kind and detail; "protocol" is said by the session error's kind.
                fail(SMTPSessionError(.protocolViolation, "\(error.kind): \(error.detail)", command: awaitedCommand))
                return
            }
            guard let reply else { break }
            handle(reply)
            if case .closed = state { break }
            if case .opening = state, opening.isInTLSHandshake {
                // Nothing may follow the 220 to STARTTLS in plaintext (CVE-2011-0411).
                if parser.hasPartialReply {
                    let injected = parser.takeUnparsedBytes()
                    fail(SMTPSessionError(
                        .tlsInjection, "\(injected.count) bytes arrived after the 220 to STARTTLS, before TLS",
                        command: "STARTTLS"))
                    return
                }
                break
            }
        }
    }

    /// The TLS handshake finished: forget everything learned before it and say EHLO again.
    public mutating func tlsEstablished() -> [Action] {
        guard case .opening = state, let step = opening.tlsEstablished() else { return [] }
        parser = ReplyParser(limits: configuration.replyLimits)
        perform(step)
        return finish()
    }

    /// The awaited reply did not come in time. The connection is not reused.
    public mutating func timeoutFired() -> [Action] {
        switch state {
        case .closed, .idle:
            return []
        case .opening, .ready, .quitting:
            fail(SMTPSessionError(.timeout, "no reply in time", command: awaitedCommand ?? "the server"))
        }
        return finish()
    }

    /// The command whose reply is awaited first (or the part of the opening), for errors.
    private var awaitedCommand: String? {
        switch state {
        case .opening: opening.awaitedName
        case .ready, .quitting: pipeline.awaitedCommand
        case .idle, .closed: nil
        }
    }

    /// A message to send on this connection.
    public mutating func transactionEnqueued(_ transaction: consuming SMTPTransaction) -> [Action] {
        enqueue(transaction)
        return finish()
    }

    /// A message to send on this connection: this event's actions are appended to `result`
    /// (see ``bytesReceived(_:into:)``).
    public mutating func transactionEnqueued(_ transaction: consuming SMTPTransaction, into result: inout [Action]) {
        enqueue(transaction)
        finish(into: &result)
    }

    private mutating func enqueue(_ transaction: consuming SMTPTransaction) {
        switch state {
        case .closed, .quitting:
            effects.actions.append(.transactionNotAttempted(transaction))
        case .idle, .opening, .ready:
            pipeline.enqueue(transaction)
            pump()
        }
    }

    /// Cancels a started transaction whose end of data has not been written. Without
    /// PIPELINING it stops before `DATA` (an `RSET` precedes the next transaction); with it,
    /// a 354 that comes for it is answered by closing the connection, since content once
    /// begun cannot be taken back. Once the end of data is written it is too late: the
    /// transaction runs to its real outcome and this returns no action.
    public mutating func cancelStarted(id: Int) -> [Action] {
        pipeline.cancelStarted(id: id)
        return []  // acted on when its next command would go out, or when its 354 comes
    }

    /// The connection sat idle long enough that the server may have closed it: the next
    /// transaction waits for a lone `RSET` to be answered before any of it is written, so a
    /// message never goes down a connection the server already left (a 421 or a close in
    /// answer moves it, unattempted, to another connection).
    public mutating func idleConnectionReused() -> [Action] {
        guard case .ready = state else { return [] }
        pipeline.probeBeforeNextTransaction()
        return []
    }

    /// Removes a transaction that has not started; returns false if it already has.
    public mutating func cancelPending(id: Int) -> Bool {
        pipeline.cancelPending(id: id)
    }

    /// Ends the session politely: QUIT once nothing is in flight, then close.
    public mutating func quitRequested() -> [Action] {
        switch state {
        case .closed, .quitting:
            return []
        case .ready:
            // Nothing new starts; what is in flight finishes, then the pump sends QUIT.
            pipeline.returnPending(into: &effects)
            state = .quitting
            pump()
        case .idle, .opening:
            fail(nil)
        }
        return finish()
    }

    /// The connection closed (the peer closed it, a read or write failed, TLS failed).
    public mutating func connectionClosed(error: SMTPSessionError?) -> [Action] {
        switch state {
        case .closed:
            return []
        case .quitting where pipeline.awaitsOnlyQuit:
            state = .closed
            return finish()
        default:
            fail(error ?? SMTPSessionError(.connectionLost, "the server closed the connection"))
            return finish()
        }
    }

    // MARK: Replies

    private mutating func handle(_ reply: SMTPReply) {
        if reply.code == .serviceNotAvailable, !isQuitReply {
            fail(SMTPSessionError(.serviceClosing, "the server is closing the connection", reply: reply,
                                  command: pipeline.awaitedCommand), closingReply: reply)
            return
        }
        if sessionCommandUnwritten {
            fail(SMTPSessionError(.protocolViolation, "a reply arrived before \(opening.awaitedName) was written",
                                  reply: reply, command: opening.awaitedName))
            return
        }
        switch state {
        case .opening:
            perform(opening.replyReceived(reply))
        case .ready, .quitting:
            switch pipeline.replyReceived(reply, into: &effects) {
            case .next:
                pump()
            case .quitAnswered:
                state = .closed
                timerChange = .cancel
                effects.actions.append(.close(nil))
            case .fail(let error):
                fail(error)
            }
        case .idle, .closed:
            fail(SMTPSessionError(.protocolViolation, "a reply arrived when none was expected", reply: reply))
        }
    }

    private var isQuitReply: Bool { pipeline.awaited == .quit }

    /// Carries out the opening's next step.
    private mutating func perform(_ step: OpeningStateMachine.Step) {
        switch step {
        case .write(let command):
            effects.output.append(command)
            sessionCommandUnwritten = true
            timerChange = .arm(configuration.timeouts.command)
            timerArmed = true
            armedFor = nil
        case .startTLS:
            effects.actions.append(.startTLS)
            timerChange = .arm(configuration.timeouts.tlsHandshake)
            timerArmed = true
        case .ready(let capabilities):
            self.capabilities = capabilities
            state = .ready
            effects.actions.append(.sessionReady(capabilities))
            pump()
        case .fail(let error):
            fail(error)
        }
    }

    /// Writes whatever the pipeline may write now, and sets the timer for what it awaits.
    private mutating func pump() {
        let quitting: Bool
        switch state {
        case .ready: quitting = false
        case .quitting: quitting = true
        case .idle, .opening, .closed: return
        }
        pipeline.pump(quitting: quitting, into: &effects)
        updateTimer()
    }

    // MARK: Failure

    /// Closes with `error` and settles every transaction (see
    /// `PipelineStateMachine.settle(after:closingReply:into:)`).
    private mutating func fail(_ error: SMTPSessionError?, closingReply: SMTPReply? = nil) {
        if case .closed = state { return }
        state = .closed
        pipeline.settle(after: error, closingReply: closingReply, into: &effects)
        effects.output = OutputBuffer()
        timerChange = .cancel
        effects.actions.append(.close(error))
        timerArmed = false
    }

    // MARK: Output

    private mutating func updateTimer() {
        guard let head = pipeline.awaited else {
            if timerArmed, case .ready = state {
                timerChange = .cancel
                timerArmed = false
                armedFor = nil
            }
            return
        }
        guard head != armedFor || !timerArmed else { return }
        timerChange = .arm(pipeline.timeout(for: head))
        armedFor = head
        timerArmed = true
    }

    /// The actions of this event, in a new array.
    private mutating func finish() -> [Action] {
        var result: [Action] = []
        finish(into: &result)
        return result
    }

    /// Appends the actions of this event to `result`. Into an empty `result` they are not
    /// copied: the buffers trade places, and the machine keeps the caller's for the next event.
    private mutating func finish(into result: inout [Action]) {
        if let pieces = effects.output.take() {
            // The write goes first: outcomes and timers describe the state after it.
            effects.actions.insert(.write(pieces), at: 0)
        }
        // From here every command in the write is the connection's: replies may answer it.
        pipeline.outputWritten()
        sessionCommandUnwritten = false
        effects.settledThisEvent.removeAll(keepingCapacity: true)
        if let timerChange {
            // Last: a close among the actions stops the timer anyway.
            effects.actions.append(timerChange.action)
            self.timerChange = nil
        }
        if result.isEmpty {
            swap(&result, &effects.actions)
        } else {
            result.append(contentsOf: effects.actions)
        }
        effects.actions.removeAllKeepingCapacity()
    }
}
