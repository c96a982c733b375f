/// The client side of one SMTP connection, as a state machine: it is fed events and returns
/// the actions to take. It does no I/O, reads no clock and holds no continuation.
///
/// It covers the greeting (220; anything else refuses), EHLO with a HELO fallback, STARTTLS
/// by policy (with the injection defence and a new EHLO after TLS), AUTH (never over
/// plaintext unless allowed), and transactions:
/// - with PIPELINING, `MAIL`, every `RCPT` and `DATA` in one write, and the previous
///   message's content and terminator at the head of the next group;
/// - with CHUNKING too, whole transactions (`MAIL`, `RCPT`s, `BDAT n LAST` and content)
///   back to back, several in flight;
/// - without PIPELINING, one command, one reply.
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
        case awaitingGreeting
        case awaitingEHLO
        case awaitingHELO
        case awaitingStartTLS
        case tlsHandshake
        case authenticating(SASLClient)
        case ready
        case quitting
        case closed
    }

    /// A reply the machine is waiting for, in the order the commands were written.
    private enum Expectation: Hashable, Sendable {
        /// An RSET sent alone to check that a connection that sat idle is still alive.
        case probe
        case reset
        case mail(Int)
        case recipient(Int, Int)
        case data(Int)
        case content(Int)
        case bdat(Int)
        case quit
    }

    /// A command of a started transaction not yet written.
    private enum Step: Hashable, Sendable {
        case reset
        case mail(Int)
        case recipient(Int, Int)
        case data(Int)
        case bdat(Int)
    }

    /// A transaction whose MAIL is queued or written.
    private struct Active: Sendable {
        var transaction: SMTPTransaction
        var parameters: MailParameters
        var mailReply: SMTPReply?
        var recipientReplies: [SMTPReply?]
        var terminatorWritten = false
        /// The 354 came although no recipient was accepted: only the terminator was sent.
        var emptyTerminator = false
        /// Cancelled before the end of its data: it will never send content.
        var cancelled = false

        var id: Int { transaction.id }
        var anyRecipientAccepted: Bool { recipientReplies.contains { $0?.code.isPositiveCompletion == true } }
    }

    private let configuration: Configuration
    private let cryptography: any SASLCryptography
    private var state = State.idle

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
        switch state {
        case .awaitingGreeting: .greeting
        case .awaitingEHLO, .awaitingHELO: .ehlo
        case .awaitingStartTLS: .startTLS
        case .tlsHandshake: .tlsHandshake
        case .authenticating: .authentication
        case .idle, .ready, .quitting, .closed: nil
        }
    }
    private var parser: ReplyParser
    private var capabilities = SMTPCapabilities() {
        didSet { features = Features(capabilities, configuration) }
    }
    /// What the transactions use of the capabilities, read once per EHLO (looking a keyword
    /// up upper-cases and hashes a string; the pump asks several times per message).
    private var features = Features()

    private struct Features: Sendable {
        var pipelining = false
        var chunking = false
        var smtpUTF8 = false
        var eightBitMIME = false
        var binaryMIME = false
        var deliveryStatusNotifications = false
        var maximumMessageSize: Int?

        init() {}

        init(_ capabilities: SMTPCapabilities, _ configuration: Configuration) {
            pipelining = configuration.usePipelining && capabilities.pipelining
            chunking = pipelining && configuration.useChunking && capabilities.chunking
            smtpUTF8 = capabilities.smtpUTF8
            eightBitMIME = capabilities.eightBitMIME
            binaryMIME = capabilities.binaryMIME
            deliveryStatusNotifications = capabilities.deliveryStatusNotifications
            maximumMessageSize = capabilities.maximumMessageSize
        }
    }
    private var isSecure = false
    private var authenticated = false
    private var pending: [SMTPTransaction] = []
    /// Started transactions, oldest first. A few at most (two without CHUNKING), so a
    /// search beats hashing, and an entry changes in place.
    private var active: [Active] = []
    private var unsent: [Step] = []
    /// Replies awaited, in the order their commands were written.
    private var outstanding: [Expectation] = []
    /// How many entries at the end of `outstanding` belong to commands still in `output`,
    /// not yet handed to the connection: a reply to one of them would answer a command the
    /// server has not seen, and is a protocol error.
    private var unwrittenExpectations = 0
    /// The session-phase command (EHLO, HELO, STARTTLS, AUTH) awaiting its reply is still in
    /// `output`, not yet handed to the connection.
    private var sessionCommandUnwritten = false
    /// Transactions settled during this event, as indices into `actions`, and whether their
    /// content was handed to the connection: if the event then ends in a protocol error,
    /// their replies may have been paired with the wrong commands and they are settled again.
    private var settledThisEvent: [(action: Int, contentSent: Bool)] = []
    private var needsReset = false
    /// Check the connection with a lone RSET before the next transaction's content goes on it.
    private var needsProbe = false
    /// The probe's RSET already reset the session for the next transaction.
    private var probeReset = false
    private var transactionsStarted = 0
    private var output = OutputBuffer()
    private var actions: [Action] = []
    private var armedFor: Expectation?
    /// Our reason for cancelling an AUTH exchange, reported when the server answers the `*`.
    private var pendingAuthenticationError: SMTPSessionError?
    /// The 334 challenges of the current AUTH exchange so far.
    private var authenticationChallenges = 0
    /// The most 334 challenges one AUTH exchange may bring: SCRAM needs two, LOGIN two, an
    /// XOAUTH2 error one. A server that goes on is holding the client, not authenticating it.
    static let maximumAuthenticationChallenges = 5
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
        self.cryptography = cryptography
        parser = ReplyParser(limits: configuration.replyLimits)
    }

    /// Whether the session is ready and nothing is in flight or queued.
    public var isIdle: Bool {
        if case .ready = state { return outstanding.isEmpty && unsent.isEmpty && pending.isEmpty }
        return false
    }

    /// Transactions queued or in flight on this connection.
    public var load: Int { pending.count + active.count }

    /// The capabilities of the last EHLO.
    public var serverCapabilities: SMTPCapabilities { capabilities }

    // MARK: Events

    /// The TCP connection is up (and, with implicit TLS, its handshake done): wait for the greeting.
    public mutating func connected() -> [Action] {
        guard case .idle = state else { preconditionFailure("connected() twice") }
        isSecure = configuration.tls == .implicit
        state = .awaitingGreeting
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
        case .tlsHandshake:
            // The transport hands every byte to TLS once the handshake starts; anything here
            // was read before it and is an injection.
            fail(SMTPSessionError(.tlsInjection, "bytes arrived after the 220 to STARTTLS"))
            return
        default:
            break
        }
        parser.append(bytes)
        while true {
            let reply: SMTPReply?
            do {
                reply = try parser.nextReply()
            } catch {
                fail(SMTPSessionError(.protocolViolation, "\(error)"))
                return
            }
            guard let reply else { break }
            handle(reply)
            if case .closed = state { break }
            if case .tlsHandshake = state {
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
        guard case .tlsHandshake = state else { return [] }
        isSecure = true
        parser = ReplyParser(limits: configuration.replyLimits)
        capabilities = SMTPCapabilities()
        sendEHLO()
        return finish()
    }

    /// The awaited reply did not come in time. The connection is not reused.
    public mutating func timeoutFired() -> [Action] {
        switch state {
        case .closed, .idle:
            return []
        default:
            let what = outstanding.first.map(Self.verb) ?? phaseName
            fail(SMTPSessionError(.timeout, "no reply in time", command: what))
            return finish()
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
            actions.append(.transactionNotAttempted(transaction))
        default:
            pending.append(transaction)
            pump()
        }
    }

    /// Cancels a started transaction whose end of data has not been written. Without
    /// PIPELINING it stops before `DATA` (an `RSET` precedes the next transaction); with it,
    /// a 354 that comes for it is answered by closing the connection, since content once
    /// begun cannot be taken back. Once the end of data is written it is too late: the
    /// transaction runs to its real outcome and this returns no action.
    public mutating func cancelStarted(id: Int) -> [Action] {
        guard let index = activeIndex(id), !active[index].terminatorWritten else { return [] }
        active[index].cancelled = true
        return []  // acted on when its next command would go out, or when its 354 comes
    }

    /// The connection sat idle long enough that the server may have closed it: the next
    /// transaction waits for a lone `RSET` to be answered before any of it is written, so a
    /// message never goes down a connection the server already left (a 421 or a close in
    /// answer moves it, unattempted, to another connection).
    public mutating func idleConnectionReused() -> [Action] {
        guard case .ready = state, outstanding.isEmpty, unsent.isEmpty, active.isEmpty else { return [] }
        needsProbe = true
        return []
    }

    /// Removes a transaction that has not started; returns false if it already has.
    public mutating func cancelPending(id: Int) -> Bool {
        guard let index = pending.firstIndex(where: { $0.id == id }) else { return false }
        pending.remove(at: index)
        return true
    }

    /// Ends the session politely: QUIT once nothing is in flight, then close.
    public mutating func quitRequested() -> [Action] {
        switch state {
        case .closed, .quitting:
            return []
        case .ready:
            // Nothing new starts; what is in flight finishes, then pump() sends QUIT.
            for transaction in pending { actions.append(.transactionNotAttempted(transaction)) }
            pending = []
            state = .quitting
            pump()
        case .idle, .awaitingGreeting, .awaitingEHLO, .awaitingHELO, .awaitingStartTLS, .tlsHandshake, .authenticating:
            fail(nil)
        }
        return finish()
    }

    /// The connection closed (the peer closed it, a read or write failed, TLS failed).
    public mutating func connectionClosed(error: SMTPSessionError?) -> [Action] {
        switch state {
        case .closed:
            return []
        case .quitting where outstanding == [.quit] || outstanding.isEmpty:
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
                                  command: outstanding.first.map(Self.verb)), closingReply: reply)
            return
        }
        if sessionCommandUnwritten {
            fail(SMTPSessionError(.protocolViolation, "a reply arrived before \(phaseName) was written", reply: reply,
                                  command: phaseName))
            return
        }
        switch state {
        case .awaitingGreeting:
            guard reply.code == .serviceReady else {
                fail(SMTPSessionError(.greetingRefused, "the server refused the session", reply: reply))
                return
            }
            sendEHLO()
        case .awaitingEHLO:
            if reply.code.isPositiveCompletion {
                capabilities = SMTPCapabilities(ehloReply: reply)
                afterHello()
            } else if reply.code.isPermanent {
                // RFC 5321 §3.2: an old server; fall back to HELO (no extensions).
                state = .awaitingHELO
                write(command: .helo(configuration.ehloName), timeout: configuration.timeouts.command)
            } else {
                fail(SMTPSessionError(.ehloRejected, "EHLO failed", reply: reply, command: "EHLO"))
            }
        case .awaitingHELO:
            guard reply.code.isPositiveCompletion else {
                fail(SMTPSessionError(.ehloRejected, "EHLO and HELO were refused", reply: reply, command: "HELO"))
                return
            }
            capabilities = SMTPCapabilities(serverName: reply.firstLine)
            afterHello()
        case .awaitingStartTLS:
            if reply.code == .serviceReady {
                state = .tlsHandshake
                actions.append(.startTLS)
                timerChange = .arm(configuration.timeouts.tlsHandshake)
                timerArmed = true
            } else if configuration.tls == .startTLSRequired {
                fail(SMTPSessionError(.tlsRequired, "the server refused STARTTLS", reply: reply, command: "STARTTLS"))
            } else {
                afterTLSDecision()
            }
        case .authenticating(var exchange):
            handleAuthentication(reply, &exchange)
        case .ready, .quitting:
            handleTransactionReply(reply)
        case .idle, .tlsHandshake, .closed:
            fail(SMTPSessionError(.protocolViolation, "a reply arrived when none was expected", reply: reply))
        }
    }

    private var isQuitReply: Bool { outstanding.first == .quit }

    private mutating func sendEHLO() {
        state = .awaitingEHLO
        write(command: .ehlo(configuration.ehloName), timeout: configuration.timeouts.command)
    }

    /// After EHLO/HELO: STARTTLS by policy, else AUTH, else ready.
    private mutating func afterHello() {
        if !isSecure {
            switch configuration.tls {
            case .startTLSRequired:
                guard capabilities.startTLS else {
                    fail(SMTPSessionError(.tlsRequired, "the server does not offer STARTTLS and TLS is required"))
                    return
                }
                state = .awaitingStartTLS
                write(command: .startTLS, timeout: configuration.timeouts.command)
                return
            case .startTLSOpportunistic where capabilities.startTLS:
                state = .awaitingStartTLS
                write(command: .startTLS, timeout: configuration.timeouts.command)
                return
            case .startTLSOpportunistic, .none, .implicit:
                break
            }
        }
        afterTLSDecision()
    }

    private mutating func afterTLSDecision() {
        if let credentials = configuration.credentials, !authenticated {
            guard isSecure || configuration.allowPlaintextAuthentication else {
                fail(SMTPSessionError(.authenticationNotAllowed,
                                      "credentials are never sent over a connection that is not encrypted"))
                return
            }
            let mechanism: SASLMechanism
            do {
                mechanism = try SASLMechanism.choose(
                    offered: capabilities.authenticationMechanisms, credentials: credentials,
                    forced: configuration.forcedMechanism)
            } catch {
                fail(SMTPSessionError(.authenticationNotAllowed, error.reason))
                return
            }
            var exchange = SASLClient(mechanism: mechanism, credentials: credentials, cryptography: cryptography,
                                      host: configuration.serverHost, port: configuration.serverPort)
            let command = exchange.start()
            state = .authenticating(exchange)
            write(command: command, timeout: configuration.timeouts.command)
            return
        }
        becomeReady()
    }

    private mutating func handleAuthentication(_ reply: SMTPReply, _ exchange: inout SASLClient) {
        switch reply.code {
        case .authenticationSucceeded:
            do {
                try exchange.succeeded()
            } catch {
                fail(SMTPSessionError(.authenticationFailed, error.reason, reply: reply, command: "AUTH"))
                return
            }
            authenticated = true
            becomeReady()
        case .serverChallenge:
            authenticationChallenges += 1
            if pendingAuthenticationError != nil {
                // We cancelled with `*`: the only valid answer is a final reply (501).
                fail(SMTPSessionError(.authenticationFailed, "the server challenged again after the client cancelled",
                                      reply: reply, command: "AUTH"))
                return
            }
            guard authenticationChallenges <= Self.maximumAuthenticationChallenges else {
                fail(SMTPSessionError(
                    .authenticationFailed, "the server sent more than \(Self.maximumAuthenticationChallenges) challenges",
                    reply: reply, command: "AUTH"))
                return
            }
            switch exchange.challengeReceived(reply.firstLine) {
            case .respond(let response):
                state = .authenticating(exchange)
                write(command: .authResponse(response), timeout: configuration.timeouts.command)
            case .cancel(let error):
                // Cancel, and fail with our reason when the server answers (501).
                state = .authenticating(exchange)
                write(command: .authCancel, timeout: configuration.timeouts.command)
                pendingAuthenticationError = SMTPSessionError(.authenticationFailed, error.reason, reply: reply, command: "AUTH")
            }
        default:
            let error = pendingAuthenticationError
                ?? SMTPSessionError(.authenticationFailed, "the server refused authentication", reply: reply, command: "AUTH")
            fail(error)
        }
    }

    private mutating func becomeReady() {
        state = .ready
        actions.append(.sessionReady(capabilities))
        pump()
    }

    // MARK: Transactions

    private var pipelining: Bool { features.pipelining }
    private var chunking: Bool { features.chunking }

    /// Writes whatever may be written now.
    private mutating func pump() {
        let quitting: Bool
        switch state {
        case .ready: quitting = false
        case .quitting: quitting = true
        case .idle, .awaitingGreeting, .awaitingEHLO, .awaitingHELO, .awaitingStartTLS, .tlsHandshake, .authenticating, .closed:
            return
        }
        while true {
            if unsent.isEmpty {
                guard !quitting, !pending.isEmpty,
                      active.count < (chunking ? configuration.maximumTransactionsInFlight : 2)
                else { break }
                if needsProbe {
                    needsProbe = false
                    needsReset = false
                    probeReset = true
                    write(command: .reset, expecting: .probe)
                }
                if outstanding.contains(.probe) { break }
                // In DATA mode, start the next transaction once the previous one has written
                // its content, so its envelope rides in the same write as that content.
                if !chunking, active.contains(where: { !$0.terminatorWritten }) { break }
                start(pending.removeFirst())
                continue
            }
            if !pipelining, !outstanding.isEmpty { break }
            if outstanding.contains(where: { if case .data = $0 { return true } else { return false } }) { break }
            send(unsent.removeFirst())
        }
        if quitting, unsent.isEmpty, outstanding.isEmpty {
            write(command: .quit, expecting: .quit)
        }
        updateTimer()
    }

    private mutating func start(_ transaction: consuming SMTPTransaction) {
        var parameters = transaction.parameters
        if !features.deliveryStatusNotifications, parameters.hasDeliveryStatusParameters
            || transaction.recipients.contains(where: { $0.parameters != RecipientParameters() }) {
            // RFC 3461 §5.2: a server that does not offer DSN is not sent its parameters (it
            // would refuse them with a 555); the relay sends its own notifications.
            parameters.removeDeliveryStatusParameters()
            for index in transaction.recipients.indices { transaction.recipients[index].parameters = RecipientParameters() }
        }
        if transaction.requiresSMTPUTF8 {
            guard features.smtpUTF8 else {
                finishLocally(transaction, "an address needs SMTPUTF8, which the server does not offer",
                              code: EnhancedStatusCode(statusClass: 5, subject: 6, detail: 7))
                return
            }
            parameters.smtpUTF8 = true
        }
        if transaction.content.requires8BitMIME {
            guard features.eightBitMIME || chunking && features.binaryMIME else {
                finishLocally(transaction, "the content is 8-bit and the server does not offer 8BITMIME",
                              code: EnhancedStatusCode(statusClass: 5, subject: 6, detail: 3))
                return
            }
            if parameters.body == nil { parameters.body = .eightBitMIME }
        }
        if let limit = features.maximumMessageSize {
            let size = transaction.content.chunkLength
            if limit > 0, size > limit {
                finishLocally(transaction, "the message is \(size) octets; the server takes at most \(limit)",
                              code: EnhancedStatusCode(statusClass: 5, subject: 3, detail: 4))
                return
            }
            parameters.size = size
        }
        let id = transaction.id
        let recipients = transaction.recipients.count
        active.append(Active(transaction: transaction, parameters: parameters, recipientReplies: Array(nils: recipients)))
        if !probeReset, needsReset || (chunking && transactionsStarted > 0) {
            unsent.append(.reset)
        }
        needsReset = false
        probeReset = false
        transactionsStarted += 1
        unsent.append(.mail(id))
        for index in 0..<recipients { unsent.append(.recipient(id, index)) }
        unsent.append(chunking ? .bdat(id) : .data(id))
    }

    private mutating func send(_ step: Step) {
        switch step {
        case .reset:
            write(command: .reset, expecting: .reset)
        case .mail(let id):
            guard let i = activeIndex(id) else { return }
            if active[i].cancelled {
                finishCancelled(id)  // nothing of it was sent
                return
            }
            write(command: .mail(from: active[i].transaction.from, active[i].parameters), expecting: .mail(id))
        case .recipient(let id, let index):
            guard let i = activeIndex(id) else { return }
            if !pipelining, active[i].cancelled {
                needsReset = true
                finishCancelled(id)
                return
            }
            let recipient = active[i].transaction.recipients[index]
            write(command: .recipient(recipient.address, recipient.parameters), expecting: .recipient(id, index))
        case .data(let id):
            guard let i = activeIndex(id) else { return }
            if !pipelining, active[i].cancelled {
                needsReset = true
                finishCancelled(id)
                return
            }
            if !pipelining, !anyRecipientAccepted(at: i) {
                needsReset = true
                finishTransaction(id)  // no recipient: never send DATA
                return
            }
            write(command: .data, expecting: .data(id))
        case .bdat(let id):
            guard let i = activeIndex(id) else { return }
            if !pipelining, !anyRecipientAccepted(at: i) {
                needsReset = true
                finishTransaction(id)
                return
            }
            write(command: .bdat(size: active[i].transaction.content.chunkLength, last: true), expecting: .bdat(id))
            output.append(.chunk(transactionID: id))
            active[i].terminatorWritten = true
        }
    }

    private mutating func handleTransactionReply(_ reply: SMTPReply) {
        // Every reply answers the oldest command written and not yet answered. A reply with
        // no such command is not guessed at: the pairing of everything after it is in doubt.
        guard outstanding.count > unwrittenExpectations else {
            let detail = outstanding.isEmpty
                ? "a reply arrived with no command to answer"
                : "a reply arrived before its command (\(Self.verb(outstanding[0]))) was written"
            fail(SMTPSessionError(.protocolViolation, detail, reply: reply, command: outstanding.first.map(Self.verb)))
            return
        }
        let expectation = outstanding.removeFirst()
        // 354 answers DATA and nothing else; a 3xx anywhere else means the replies and the
        // commands are out of step.
        if reply.code.kind == .positiveIntermediate, expectation != .quit {
            if case .data = expectation {} else {
                fail(SMTPSessionError(.protocolViolation, "\(Self.verb(expectation)) was answered with \(reply.code.rawValue)",
                                      reply: reply, command: Self.verb(expectation)))
                return
            }
        }
        switch expectation {
        case .quit:
            state = .closed
            timerChange = .cancel
            actions.append(.close(nil))
            return
        case .reset, .probe:
            break  // whatever it says, the next MAIL tells
        case .mail(let id):
            if let i = activeIndex(id) { active[i].mailReply = reply }
            if !reply.code.isPositiveCompletion {
                needsReset = true
                if !pipelining { finishTransaction(id) }
            }
        case .recipient(let id, let index):
            if let i = activeIndex(id) { active[i].recipientReplies[index] = reply }
        case .data(let id):
            guard let i = activeIndex(id) else { break }
            if reply.code == .startMailInput, active[i].cancelled {
                // Content cannot be withheld after 354 (a lone terminator would deliver an
                // empty message): the only way out is to close.
                finishCancelled(id)
                fail(nil)
                return
            }
            if reply.code == .startMailInput {
                if wasAccepted(at: i) {
                    output.append(.data(transactionID: id))
                } else {
                    // A lenient server said 354 with no recipient: send only the terminator.
                    output.appendTerminator()
                    active[i].emptyTerminator = true
                }
                active[i].terminatorWritten = true
                // DATA ends a group and nothing is written after it until it is answered, so
                // the content's reply is the only one awaited.
                assert(outstanding.isEmpty, "DATA is the last command awaiting a reply")
                expect(.content(id))
            } else if reply.code.isPositiveCompletion || reply.code.kind == .positiveIntermediate {
                // Only 354 lets content go; a 250 here would accept a message never sent.
                fail(SMTPSessionError(.protocolViolation, "DATA was answered with \(reply.code.rawValue), not 354",
                                      reply: reply, command: "DATA"))
                return
            } else {
                needsReset = true
                finishTransaction(id, dataReply: reply, dataCommand: "DATA")
            }
        case .content(let id):
            finishTransaction(id, dataReply: reply, dataCommand: "DATA", contentSent: true)
        case .bdat(let id):
            if !reply.code.isPositiveCompletion { needsReset = true }
            finishTransaction(id, dataReply: reply, dataCommand: "BDAT", contentSent: true)
        }
        pump()
    }

    /// Reports a transaction from its replies and forgets it.
    private mutating func finishTransaction(_ id: Int, dataReply: SMTPReply? = nil, dataCommand: String? = nil,
                                            contentSent: Bool = false) {
        guard let entry = forget(id) else { return }
        settledThisEvent.append((actions.count, contentSent && !entry.emptyTerminator))
        actions.append(.transactionFinished(Self.outcome(of: entry, dataReply: dataReply, dataCommand: dataCommand)))
    }

    private static func status(of reply: SMTPReply) -> DeliveryStatus {
        switch reply.code.kind {
        case .positiveCompletion: .accepted
        case .transientNegative: .deferred
        case .permanentNegative, .positiveIntermediate: .rejected
        }
    }

    /// An outcome in which every recipient shares the message's status and reply.
    private static func uniformOutcome(
        _ transaction: SMTPTransaction, _ status: DeliveryStatus, reply: SMTPReply?, command: String? = nil,
        error: SMTPSessionError?
    ) -> TransactionOutcome {
        TransactionOutcome(
            id: transaction.id, status: status,
            recipients: transaction.recipients.map { RecipientOutcome(address: $0.address, status: status, reply: reply) },
            reply: reply, command: reply == nil ? nil : command, error: error)
    }

    /// The message's status when no recipient was accepted: rejected only if every refusal is
    /// permanent; any 4xx makes it worth retrying.
    private static func statusWhenNoneAccepted(_ recipients: [RecipientOutcome]) -> DeliveryStatus {
        recipients.contains { $0.status == .deferred } ? .deferred : .rejected
    }

    private static func outcome(of entry: Active, dataReply: SMTPReply?, dataCommand: String?) -> TransactionOutcome {
        let transaction = entry.transaction
        if let mailReply = entry.mailReply, !mailReply.code.isPositiveCompletion {
            return uniformOutcome(transaction, status(of: mailReply), reply: mailReply, command: "MAIL", error: nil)
        }
        var recipients: [RecipientOutcome] = []
        for (recipient, reply) in zip(transaction.recipients, entry.recipientReplies) {
            if let reply, !reply.code.isPositiveCompletion {
                recipients.append(RecipientOutcome(address: recipient.address, status: status(of: reply), reply: reply))
            } else if let dataReply, reply != nil, !entry.emptyTerminator {
                recipients.append(RecipientOutcome(address: recipient.address, status: status(of: dataReply), reply: dataReply))
            } else {
                recipients.append(RecipientOutcome(address: recipient.address, status: .deferred, reply: reply))
            }
        }
        let status: DeliveryStatus
        let decidingReply: SMTPReply?
        let command: String?
        if !entry.anyRecipientAccepted {
            status = statusWhenNoneAccepted(recipients)
            // The reply that makes the status: the last transient refusal when one makes the
            // message worth retrying, else the last refusal.
            let refusals = entry.recipientReplies.compactMap { $0 }
            let lastRefusal = status == .deferred ? refusals.last { $0.code.isTransient } : refusals.last
            decidingReply = lastRefusal ?? dataReply
            command = lastRefusal != nil ? "RCPT" : dataReply == nil ? nil : dataCommand
        } else if let dataReply {
            status = Self.status(of: dataReply)
            decidingReply = dataReply
            command = dataCommand
        } else {
            status = .deferred
            decidingReply = nil
            command = nil
        }
        return TransactionOutcome(id: transaction.id, status: status, recipients: recipients, reply: decidingReply,
                                  command: command, error: nil)
    }

    /// Whether started transaction `i` has a recipient accepted so far, read in place:
    /// reading `active[i]`'s replies through the array copies the whole entry first (a
    /// retain and a release of each of its references, once per message).
    private func anyRecipientAccepted(at i: Int) -> Bool {
        active.withUnsafeBufferPointer { $0[i].anyRecipientAccepted }
    }

    /// Whether started transaction `i`'s MAIL and at least one recipient were accepted, read
    /// in place (as ``anyRecipientAccepted(at:)`` is).
    private func wasAccepted(at i: Int) -> Bool {
        active.withUnsafeBufferPointer { $0[i].mailReply?.code.isPositiveCompletion == true && $0[i].anyRecipientAccepted }
    }

    /// Where transaction `id` is in `active`, if it is there.
    private func activeIndex(_ id: Int) -> Int? {
        active.firstIndex { $0.id == id }
    }

    /// Removes a transaction and its unsent commands; returns what was known of it.
    private mutating func forget(_ id: Int) -> Active? {
        guard let index = activeIndex(id) else { return nil }
        let entry = active.remove(at: index)
        unsent.removeAll { step in
            switch step {
            case .mail(let other), .recipient(let other, _), .data(let other), .bdat(let other): other == id
            case .reset: false
            }
        }
        return entry
    }

    /// Reports a cancelled transaction: nothing was delivered; every recipient refused by
    /// the server keeps its reply, the rest are deferred.
    private mutating func finishCancelled(_ id: Int) {
        guard let entry = forget(id) else { return }
        let error = SMTPSessionError(.cancelled, "the send was cancelled before the end of its data")
        let recipients = zip(entry.transaction.recipients, entry.recipientReplies).map { recipient, reply in
            if let reply, !reply.code.isPositiveCompletion {
                return RecipientOutcome(address: recipient.address, status: Self.status(of: reply), reply: reply)
            }
            return RecipientOutcome(address: recipient.address, status: .deferred, reply: nil)
        }
        actions.append(.transactionFinished(TransactionOutcome(
            id: id, status: .deferred, recipients: recipients, reply: nil, command: nil, error: error)))
    }

    private mutating func finishLocally(_ transaction: SMTPTransaction, _ reason: String, code: EnhancedStatusCode?) {
        let error = SMTPSessionError(.refusedLocally, reason, command: "MAIL", enhancedCode: code)
        actions.append(.transactionFinished(Self.uniformOutcome(transaction, .rejected, reply: nil, error: error)))
    }

    // MARK: Failure

    /// Closes with `error` and settles every transaction: an unanswered one whose end of data
    /// was written is unknown, any other deferred, and those not started go elsewhere.
    ///
    /// After a protocol error no reply of this session can be trusted to answer the command
    /// it was paired with: the unfinished transactions are settled without their replies, and
    /// those settled earlier in this same event are settled again the same way (content sent:
    /// unknown; not sent: deferred), so an extra or early reply can never make one accepted.
    private mutating func fail(_ error: SMTPSessionError?, closingReply: SMTPReply? = nil) {
        if case .closed = state { return }
        state = .closed
        let repliesTrusted = error?.kind != .protocolViolation
        if !repliesTrusted { settleAgainWithoutReplies(error) }
        // A terminator still in `output` never reached the connection: nothing was sent.
        let unwritten = outstanding.suffix(unwrittenExpectations)
        func contentSent(_ entry: Active) -> Bool {
            entry.terminatorWritten && !entry.emptyTerminator
                && !unwritten.contains(.content(entry.id)) && !unwritten.contains(.bdat(entry.id))
        }
        if let closingReply, let first = outstanding.first {
            switch first {
            case .mail(let id), .recipient(let id, _), .data(let id), .content(let id), .bdat(let id):
                if let index = activeIndex(id) {
                    let entry = active.remove(at: index)
                    actions.append(.transactionFinished(
                        Self.uniformOutcome(entry.transaction, .deferred, reply: closingReply, command: Self.verb(first),
                                            error: error)))
                }
            case .reset, .probe, .quit:
                break
            }
        }
        for entry in active {
            let id = entry.id
            if closingReply != nil, entry.mailReply == nil {
                // A 421 answers one command and the server processes none after it: a
                // transaction with no reply yet was never seen, and can go elsewhere.
                actions.append(.transactionNotAttempted(entry.transaction))
                continue
            }
            let status: DeliveryStatus = contentSent(entry) ? .unknown : .deferred
            guard repliesTrusted else {
                actions.append(.transactionFinished(Self.uniformOutcome(entry.transaction, status, reply: nil, error: error)))
                continue
            }
            let recipients = zip(entry.transaction.recipients, entry.recipientReplies).map { recipient, reply in
                if let reply, !reply.code.isPositiveCompletion {
                    return RecipientOutcome(address: recipient.address, status: Self.status(of: reply), reply: reply)
                }
                return RecipientOutcome(address: recipient.address, status: status, reply: reply)
            }
            let allRefused = !entry.anyRecipientAccepted && entry.recipientReplies.allSatisfy { $0 != nil }
            actions.append(.transactionFinished(TransactionOutcome(
                id: id, status: allRefused ? Self.statusWhenNoneAccepted(recipients) : status,
                recipients: recipients, reply: nil, command: nil, error: error)))
        }
        active = []
        unsent = []
        outstanding = []
        for transaction in pending { actions.append(.transactionNotAttempted(transaction)) }
        pending = []
        output = OutputBuffer()
        unwrittenExpectations = 0
        timerChange = .cancel
        actions.append(.close(error))
        timerArmed = false
    }

    /// Settles the transactions finished earlier in this event again, without their replies
    /// (see ``fail(_:closingReply:)``).
    private mutating func settleAgainWithoutReplies(_ error: SMTPSessionError?) {
        for (index, contentSent) in settledThisEvent {
            guard case .transactionFinished(let outcome) = actions[index] else { continue }
            let status: DeliveryStatus = contentSent ? .unknown : .deferred
            actions[index] = .transactionFinished(TransactionOutcome(
                id: outcome.id, status: status,
                recipients: outcome.recipients.map { RecipientOutcome(address: $0.address, status: status, reply: nil) },
                reply: nil, command: nil, error: error))
        }
        settledThisEvent.removeAll()
    }

    // MARK: Output

    private mutating func write(command: SMTPCommand, timeout: Duration) {
        output.append(command)
        sessionCommandUnwritten = true
        timerChange = .arm(timeout)
        timerArmed = true
        armedFor = nil
    }

    private mutating func write(command: SMTPCommand, expecting expectation: Expectation) {
        output.append(command)
        expect(expectation)
    }

    /// Awaits a reply to something just put in `output`.
    private mutating func expect(_ expectation: Expectation) {
        outstanding.append(expectation)
        unwrittenExpectations += 1
    }

    /// What the machine has to write in this event: content pieces, and the command bytes
    /// after the last of them, gathered in place.
    ///
    /// ``take()`` hands the pieces over (in a `.write` action) and the buffers are emptied
    /// only when the next event writes: by then the caller has carried the action out and
    /// dropped it, so the storage is unique again and is kept. Emptying them at once, while
    /// the action still shared them, would allocate two new buffers per event (two events per
    /// message). Were a copy still alive, emptying would simply allocate, as value semantics say.
    private struct OutputBuffer {
        private var pieces: [ClientOutput] = []
        /// Command bytes written after the last entry of `pieces`.
        private var bytes: [UInt8] = []
        /// `pieces` (and `bytes`, if not empty) went out in the last ``take()``.
        private var handedOver = false

        mutating func append(_ command: SMTPCommand) {
            reclaim()
            if bytes.capacity == 0 { bytes.reserveCapacity(256) }  // a MAIL, its RCPTs and DATA: about 100 bytes
            command.encode(into: &bytes)
        }

        /// A lone terminator (a 354 that came with no recipient accepted).
        mutating func appendTerminator() {
            reclaim()
            bytes += [UInt8(ascii: "."), 13, 10]
        }

        /// A piece that is not command bytes, after the commands gathered so far.
        mutating func append(_ piece: ClientOutput) {
            reclaim()
            sealBytes()
            appendPiece(piece)
        }

        /// Everything written since the last take, or nil if nothing was.
        mutating func take() -> [ClientOutput]? {
            reclaim()
            // `bytes` is not emptied here: the piece shares its storage until reclaimed.
            if !bytes.isEmpty { appendPiece(.bytes(bytes)) }
            guard !pieces.isEmpty else { return nil }
            handedOver = true
            return pieces
        }

        private mutating func reclaim() {
            guard handedOver else { return }
            handedOver = false
            pieces.removeAll(keepingCapacity: true)
            bytes.removeAll(keepingCapacity: true)
        }

        private mutating func sealBytes() {
            guard !bytes.isEmpty else { return }
            appendPiece(.bytes(bytes))
            bytes.removeAll(keepingCapacity: true)
        }

        private mutating func appendPiece(_ piece: ClientOutput) {
            if pieces.capacity == 0 { pieces.reserveCapacity(4) }  // one allocation, not one per doubling
            pieces.append(piece)
        }
    }

    private mutating func updateTimer() {
        guard let head = outstanding.first else {
            if timerArmed, case .ready = state {
                timerChange = .cancel
                timerArmed = false
                armedFor = nil
            }
            return
        }
        guard head != armedFor || !timerArmed else { return }
        timerChange = .arm(timeout(for: head))
        armedFor = head
        timerArmed = true
    }

    private func timeout(for expectation: Expectation) -> Duration {
        switch expectation {
        case .reset, .probe, .quit: configuration.timeouts.command
        case .mail: configuration.timeouts.mail
        case .recipient: configuration.timeouts.recipient
        case .data: configuration.timeouts.data
        case .content, .bdat: configuration.timeouts.dataTermination
        }
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
        if let pieces = output.take() {
            // The write goes first: outcomes and timers describe the state after it.
            actions.insert(.write(pieces), at: 0)
        }
        // From here every command in the write is the connection's: replies may answer it.
        unwrittenExpectations = 0
        sessionCommandUnwritten = false
        settledThisEvent.removeAll(keepingCapacity: true)
        if let timerChange {
            // Last: a close among the actions stops the timer anyway.
            actions.append(timerChange.action)
            self.timerChange = nil
        }
        if result.isEmpty {
            swap(&result, &actions)
        } else {
            result.append(contentsOf: actions)
        }
        actions.removeAllKeepingCapacity()
    }

    private static func verb(_ expectation: Expectation) -> String {
        switch expectation {
        case .reset, .probe: "RSET"
        case .mail: "MAIL"
        case .recipient: "RCPT"
        case .data: "DATA"
        case .content: "end of data"
        case .bdat: "BDAT"
        case .quit: "QUIT"
        }
    }

    private var phaseName: String {
        switch state {
        case .awaitingGreeting: "the greeting"
        case .awaitingEHLO: "EHLO"
        case .awaitingHELO: "HELO"
        case .awaitingStartTLS: "STARTTLS"
        case .tlsHandshake: "the TLS handshake"
        case .authenticating: "AUTH"
        case .idle, .ready, .quitting, .closed: "the server"
        }
    }
}

/// A piece of what the client writes: command bytes, or a message's prepared content.
public enum ClientOutput: Hashable, Sendable {
    /// Command lines (or a lone terminator).
    case bytes([UInt8])
    /// The transaction's content, dot-stuffed with its terminator (after 354).
    case data(transactionID: Int)
    /// The transaction's content, CRLF-normalised (after `BDAT n LAST`).
    case chunk(transactionID: Int)
}
