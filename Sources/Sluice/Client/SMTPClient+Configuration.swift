public import Logging
import SluiceCore
import SluiceTransport
#if DistributedTracingSupport
public import Tracing
#endif

extension SMTPClient {
    /// How the connection is secured.
    public enum Security: String, Sendable, Hashable, CaseIterable {
        /// STARTTLS, required: a server that does not offer it, refuses it or fails the
        /// handshake is never used in plaintext. The default (port 587).
        case startTLS
        /// STARTTLS when the server offers it; plaintext otherwise.
        case opportunisticStartTLS
        /// TLS from the first byte (port 465, RFC 8314).
        case implicitTLS
        /// No TLS (port 25 on a trusted network, or a local sink).
        case none

        /// The port a server usually listens on for this mode.
        public var defaultPort: Int {
            switch self {
            case .startTLS, .opportunisticStartTLS: 587
            case .implicitTLS: 465
            case .none: 25
            }
        }
    }

    /// What the client authenticates with.
    public enum Credentials: Sendable {
        /// A user name and password (PLAIN, LOGIN, CRAM-MD5, SCRAM-SHA-1/256).
        case password(username: String, password: String)
        /// An OAuth 2.0 bearer token (XOAUTH2, OAUTHBEARER), asked for once per connection
        /// so a provider can refresh it.
        case oauth2(username: String, token: @Sendable () async throws -> String)
    }

    /// Connection pool limits.
    public struct Pool: Sendable, Hashable {
        /// The most connections open (or opening) at once. They are shared out among the
        /// event loops (8 over 2 loops: 4 each), each loop's share pooled on its own.
        public var maximumConnections = 8
        /// A connection is retired (QUIT) after this many messages.
        public var maximumMessagesPerConnection = 1_000
        /// An idle connection is closed (QUIT) after this long.
        public var idleTimeout: Duration = .seconds(30)
        /// A connection idle for longer than this is checked with a lone `RSET` before a
        /// message goes on it (as Postfix checks cached connections), so a server that closed
        /// it meanwhile never costs a message an attempt.
        public var checkAfterIdle: Duration = .seconds(1)
        /// A connection is retired after this long, even if busy (once its work is done).
        public var maximumConnectionLifetime: Duration = .seconds(600)
        /// The most a connect (TCP, TLS, greeting, EHLO, AUTH) may take.
        public var connectTimeout: Duration = .seconds(30)
        /// After this many connects in a row fail, waiting messages fail with the last
        /// error (a permanent failure — a certificate, a refused login — fails them at once),
        /// unless another loop's share of the pool has a connection ready: they go there.
        public var connectAttempts = 3
        /// The delay between failed connects.
        public var connectBackoff = Backoff(initial: .milliseconds(200), maximum: .seconds(10))

        /// The defaults.
        public init() {}
    }

    /// How transactions are pipelined.
    public struct Pipelining: Sendable, Hashable {
        /// Use PIPELINING (RFC 2920) when the server offers it.
        public var enabled = true
        /// Use CHUNKING (`BDAT`, RFC 3030) when offered together with PIPELINING.
        public var chunking = true
        /// The most transactions in flight on one connection with CHUNKING (with DATA, at
        /// most two: one awaiting its final reply and the next one's envelope).
        public var transactionsPerConnection = 8

        /// The defaults.
        public init() {}
    }

    /// A limit on messages per second across the whole pool (a token bucket).
    public struct RateLimit: Sendable, Hashable {
        /// The sustained rate.
        public var messagesPerSecond: Double
        /// How many may start at once after a quiet spell (at least 1). Over any interval
        /// of T seconds at most `burst + messagesPerSecond × T` messages start.
        public var burst: Int

        /// A rate limit; `burst` defaults to 10 ms worth of messages (at least one), small
        /// enough not to matter and large enough for the loop's millisecond timers to keep up.
        public init(messagesPerSecond: Double, burst: Int? = nil) {
            precondition(messagesPerSecond > 0, "a rate limit must be positive")
            self.messagesPerSecond = messagesPerSecond
            self.burst = max(1, burst ?? Int(messagesPerSecond / 100))
        }
    }

    /// Which failures are tried again, how often and how long after.
    ///
    /// Only transient failures are retried: 4xx replies (for the recipients they concern)
    /// and connections lost before the end of the data. A 5xx never is, and an unknown
    /// outcome (no reply after the end of the data) never is, since that could deliver the
    /// message twice.
    public struct RetryPolicy: Sendable, Hashable {
        /// Tries in all, the first included (1: never retry).
        public var maximumAttempts = 3
        /// The delay before each retry.
        public var backoff = Backoff(initial: .seconds(1), maximum: .seconds(60))
        /// Retry recipients and messages refused with a 4xx reply.
        public var retriesTransientReplies = true
        /// Retry messages whose connection was lost (or timed out) before the end of the data.
        public var retriesConnectionFailures = true

        /// The defaults: three tries, one second then two seconds apart (with jitter).
        public init() {}

        /// Never retry.
        public static var none: RetryPolicy {
            var policy = RetryPolicy()
            policy.maximumAttempts = 1
            return policy
        }
    }

    /// Everything a client needs to know.
    public struct Configuration: Sendable {
        /// The server (relay) to send through.
        public var host: String
        /// Its port; by default the usual one for ``security``.
        public var port: Int
        /// How the connection is secured; STARTTLS is required by default.
        public var security: Security
        /// How the server's certificate is checked and what this side presents. By default
        /// the system's roots are trusted and the host name is verified; turning
        /// verification off is an explicit, per-client choice.
        public var tls: TLSConfiguration
        /// The name the certificate must carry and SNI sends; by default ``host``.
        public var tlsServerName: String?
        /// Credentials for AUTH, if the server requires it.
        public var credentials: Credentials?
        /// A mechanism to use instead of the strongest one both sides know.
        public var authenticationMechanism: SASLMechanism?
        /// Whether credentials may go over a connection that is not encrypted (default false).
        public var allowPlaintextAuthentication = false
        /// The name sent in EHLO (default `localhost`); checked when the client is made.
        public var ehloName = "localhost"
        /// Pool limits.
        public var pool = Pool()
        /// Pipelining and CHUNKING.
        public var pipelining = Pipelining()
        /// A limit on messages per second, if any.
        public var rateLimit: RateLimit?
        /// Retries of transient failures.
        public var retry = RetryPolicy()
        /// How each refused or deferred recipient's ``DeliveryReport/Recipient/bounceClass`` is
        /// decided: the standard rules, or a user's in front of them.
        public var bounceClassifier = BounceClassifier.standard
        /// How long each reply may take (RFC 5321 defaults).
        public var timeouts = SMTPTimeouts()
        /// DKIM signers, applied in order to every ``Message`` and ``RawMessage`` sent (once per
        /// message, before any attempt). An ``EncodedMessage`` is sent as it was prepared.
        public var dkim: [DKIMSigner] = []
        /// Event loops to run on; nil makes the client own a group (one loop per core),
        /// which ``SMTPClient/shutdown()`` stops.
        public var eventLoopGroup: EventLoopGroup?
        /// Where the client logs: a relay it cannot connect to at `.warning` (with the
        /// cause), connections at `.debug`, the SMTP transcript at `.trace` (AUTH payloads
        /// redacted). A message's own events go to the logger given to its `send`, if any.
        public var logger = Logger(label: "sluice.client")
        /// Where the metrics go and the dimensions they carry (see ``MetricsOptions``). The
        /// client's metrics; each also carries `server.address` and `server.port` (unless
        /// left out) and the dimensions added:
        ///
        /// | Metric | Kind | Dimensions besides the server's |
        /// |---|---|---|
        /// | `messaging.client.sent.messages` | counter | `messaging.system`, `smtp.outcome` |
        /// | `messaging.client.operation.duration` | timer (seconds) | `messaging.system`, `messaging.operation.name` |
        /// | `smtp.client.recipients` | counter | `smtp.recipient.status` |
        /// | `smtp.client.bounces` | counter | `smtp.recipient.status`, `smtp.bounce.class` |
        /// | `smtp.client.connections.opened` / `.failed` / `.closed` | counter | |
        /// | `smtp.client.connection.setup.duration` | timer (seconds) | `smtp.setup.phase`: `connect`, `greeting`, `ehlo`, `starttls`, `tls`, `auth` |
        /// | `smtp.client.transaction.duration` | timer (seconds) | `smtp.transaction.phase`: `envelope`, `data` (with ``MetricsOptions/timesTransactionPhases``) |
        public var metrics = MetricsOptions()
        #if DistributedTracingSupport
        /// The tracer for a span per send and per attempt; nil takes
        /// `InstrumentationSystem.tracer` when the client is made. With the no-op tracer no
        /// span is made at all.
        public var tracer: (any Tracer)?
        #endif

        /// A configuration for `host`; the port defaults to the one for `security`.
        public init(host: String, port: Int? = nil, security: Security = .startTLS) {
            self.host = host
            self.port = port ?? security.defaultPort
            self.security = security
            tls = .client()
        }
    }
}

/// A delay that grows exponentially with each try, with random jitter so that many clients
/// do not retry in step.
public struct Backoff: Sendable, Hashable {
    /// The first delay.
    public var initial: Duration
    /// No delay is longer than this.
    public var maximum: Duration
    /// Each delay is this many times the one before.
    public var multiplier: Double = 2
    /// The fraction of each delay that is random: 0.2 means ±10 %.
    public var jitter: Double = 0.2

    /// A backoff from `initial` doubling up to `maximum`.
    public init(initial: Duration, maximum: Duration) {
        self.initial = initial
        self.maximum = max(initial, maximum)
    }

    /// The delay before try `attempt + 1` (attempt ≥ 1), with `random` in 0..<1 choosing
    /// the jitter.
    public func delay(afterAttempt attempt: Int, random: Double) -> Duration {
        let exponent = Double(max(0, attempt - 1))
        let base = min(initial.seconds * pow(multiplier, exponent), maximum.seconds)
        let jittered = base * (1 - jitter / 2 + jitter * random)
        return .nanoseconds(Int64(min(jittered, maximum.seconds) * 1e9))
    }

    private func pow(_ base: Double, _ exponent: Double) -> Double {
        var result = 1.0
        var remaining = Int(exponent)
        while remaining > 0 && result < 1e12 {
            result *= base
            remaining -= 1
        }
        return result
    }
}
