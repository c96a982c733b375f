/// The opening of a client session, up to the moment transactions can run: the greeting
/// (220; anything else refuses), EHLO with a HELO fallback, STARTTLS by policy and a new EHLO
/// after the handshake, and AUTH (never over plaintext unless allowed).
///
/// It is fed the replies of the opening one at a time and says what comes next, as a
/// ``Step``. ``ClientStateMachine`` carries it: it parses the replies, writes the commands,
/// runs the timers, and owns the checks that hold in every phase (a 421, a reply that comes
/// before its command was written, bytes injected after the 220 to STARTTLS).
struct OpeningStateMachine: Sendable {
    /// Where the opening is.
    enum Phase: Sendable {
        case awaitingGreeting
        case awaitingEHLO
        case awaitingHELO
        case awaitingStartTLS
        case tlsHandshake
        case authenticating(SASLClient)
        /// The session is ready (``Step/ready(_:)`` was returned).
        case done
    }

    /// What the session does next.
    enum Step: Sendable {
        /// Write this command and wait for its reply (the command timeout).
        case write(SMTPCommand)
        /// Start the TLS handshake (the 220 to STARTTLS came); nothing is written meanwhile.
        case startTLS
        /// The opening is over: transactions can run, with these capabilities.
        case ready(SMTPCapabilities)
        /// The session failed.
        case fail(SMTPSessionError)
    }

    private let configuration: ClientStateMachine.Configuration
    private let cryptography: any SASLCryptography
    private(set) var phase = Phase.awaitingGreeting
    /// Whether the connection is encrypted (implicit TLS, or STARTTLS done).
    private(set) var isSecure: Bool
    /// The capabilities of the last EHLO (or HELO: none).
    private(set) var capabilities = SMTPCapabilities()
    private var authenticated = false
    /// Our reason for cancelling an AUTH exchange, reported when the server answers the `*`.
    private var authenticationCancellation: SMTPSessionError?
    /// The 334 challenges of the current AUTH exchange so far.
    private var authenticationChallenges = 0
    /// The most 334 challenges one AUTH exchange may bring: SCRAM needs two, LOGIN two, an
    /// XOAUTH2 error one. A server that goes on is holding the client, not authenticating it.
    static let maximumAuthenticationChallenges = 5

    /// An opening that waits for the greeting.
    init(configuration: ClientStateMachine.Configuration, cryptography: any SASLCryptography) {
        self.configuration = configuration
        self.cryptography = cryptography
        isSecure = configuration.tls == .implicit
    }

    /// Whether the TLS handshake after STARTTLS is under way: no plaintext may arrive.
    var isInTLSHandshake: Bool {
        if case .tlsHandshake = phase { return true }
        return false
    }

    /// The part of the opening the session is in, which the client times.
    var setupPhase: ClientStateMachine.SetupPhase? {
        switch phase {
        case .awaitingGreeting: .greeting
        case .awaitingEHLO, .awaitingHELO: .ehlo
        case .awaitingStartTLS: .startTLS
        case .tlsHandshake: .tlsHandshake
        case .authenticating: .authentication
        case .done: nil
        }
    }

    /// What is awaited, in words, for errors.
    var awaitedName: String {
        switch phase {
        case .awaitingGreeting: "the greeting"
        case .awaitingEHLO: "EHLO"
        case .awaitingHELO: "HELO"
        case .awaitingStartTLS: "STARTTLS"
        case .tlsHandshake: "the TLS handshake"
        case .authenticating: "AUTH"
        case .done: "the server"
        }
    }

    // MARK: Events

    /// A reply of the opening arrived.
    mutating func replyReceived(_ reply: SMTPReply) -> Step {
        switch phase {
        case .awaitingGreeting:
            guard reply.code == .serviceReady else {
                return .fail(SMTPSessionError(.greetingRefused, "the server refused the session", reply: reply))
            }
            return sayEHLO()
        case .awaitingEHLO:
            if reply.code.isPositiveCompletion {
                capabilities = SMTPCapabilities(ehloReply: reply)
                return afterHello()
            }
            if reply.code.isPermanent {
                // RFC 5321 §3.2: an old server; fall back to HELO (no extensions).
                phase = .awaitingHELO
                return .write(.helo(configuration.ehloName))
            }
            return .fail(SMTPSessionError(.ehloRejected, "EHLO failed", reply: reply, command: "EHLO"))
        case .awaitingHELO:
            guard reply.code.isPositiveCompletion else {
                return .fail(SMTPSessionError(.ehloRejected, "EHLO and HELO were refused", reply: reply, command: "HELO"))
            }
            capabilities = SMTPCapabilities(serverName: reply.firstLine)
            return afterHello()
        case .awaitingStartTLS:
            if reply.code == .serviceReady {
                phase = .tlsHandshake
                return .startTLS
            }
            if configuration.tls == .startTLSRequired {
                return .fail(SMTPSessionError(.tlsRequired, "the server refused STARTTLS", reply: reply, command: "STARTTLS"))
            }
            return afterTLSDecision()
        case .authenticating(var exchange):
            let step = authenticationReply(reply, &exchange)
            if case .authenticating = phase { phase = .authenticating(exchange) }
            return step
        case .tlsHandshake, .done:
            return .fail(SMTPSessionError(.protocolViolation, "a reply arrived when none was expected", reply: reply))
        }
    }

    /// The TLS handshake finished: everything learned before it is forgotten, and EHLO is
    /// said again. Nil if no handshake was under way.
    mutating func tlsEstablished() -> Step? {
        guard isInTLSHandshake else { return nil }
        isSecure = true
        capabilities = SMTPCapabilities()
        return sayEHLO()
    }

    // MARK: Steps

    private mutating func sayEHLO() -> Step {
        phase = .awaitingEHLO
        return .write(.ehlo(configuration.ehloName))
    }

    /// After EHLO or HELO: STARTTLS by policy, else AUTH, else ready.
    private mutating func afterHello() -> Step {
        if !isSecure {
            switch configuration.tls {
            case .startTLSRequired:
                guard capabilities.startTLS else {
                    return .fail(SMTPSessionError(.tlsRequired, "the server does not offer STARTTLS and TLS is required"))
                }
                phase = .awaitingStartTLS
                return .write(.startTLS)
            case .startTLSOpportunistic where capabilities.startTLS:
                phase = .awaitingStartTLS
                return .write(.startTLS)
            case .startTLSOpportunistic, .none, .implicit:
                break
            }
        }
        return afterTLSDecision()
    }

    private mutating func afterTLSDecision() -> Step {
        guard let credentials = configuration.credentials, !authenticated else { return finished() }
        guard isSecure || configuration.allowPlaintextAuthentication else {
            return .fail(SMTPSessionError(.authenticationNotAllowed,
                                          "credentials are never sent over a connection that is not encrypted"))
        }
        let mechanism: SASLMechanism
        do {
            mechanism = try SASLMechanism.choose(offered: capabilities.authenticationMechanisms, credentials: credentials,
                                                 forced: configuration.forcedMechanism)
        } catch {
            return .fail(SMTPSessionError(.authenticationNotAllowed, error.reason))
        }
        var exchange = SASLClient(mechanism: mechanism, credentials: credentials, cryptography: cryptography,
                                  host: configuration.serverHost, port: configuration.serverPort)
        let command = exchange.start()
        phase = .authenticating(exchange)
        return .write(command)
    }

    private mutating func authenticationReply(_ reply: SMTPReply, _ exchange: inout SASLClient) -> Step {
        switch reply.code {
        case .authenticationSucceeded:
            do {
                try exchange.succeeded()
            } catch {
                return .fail(SMTPSessionError(.authenticationFailed, error.reason, reply: reply, command: "AUTH"))
            }
            authenticated = true
            return finished()
        case .serverChallenge:
            authenticationChallenges += 1
            if authenticationCancellation != nil {
                // We cancelled with `*`: the only valid answer is a final reply (501).
                return .fail(SMTPSessionError(.authenticationFailed, "the server challenged again after the client cancelled",
                                              reply: reply, command: "AUTH"))
            }
            guard authenticationChallenges <= Self.maximumAuthenticationChallenges else {
                return .fail(SMTPSessionError(
                    .authenticationFailed, "the server sent more than \(Self.maximumAuthenticationChallenges) challenges",
                    reply: reply, command: "AUTH"))
            }
            switch exchange.challengeReceived(reply.firstLine) {
            case .respond(let response):
                return .write(.authResponse(response))
            case .cancel(let error):
                // Cancel, and fail with our reason when the server answers (501).
                authenticationCancellation = SMTPSessionError(.authenticationFailed, error.reason, reply: reply,
                                                              command: "AUTH")
                return .write(.authCancel)
            }
        default:
            return .fail(authenticationCancellation
                ?? SMTPSessionError(.authenticationFailed, "the server refused authentication", reply: reply, command: "AUTH"))
        }
    }

    private mutating func finished() -> Step {
        phase = .done
        return .ready(capabilities)
    }
}
