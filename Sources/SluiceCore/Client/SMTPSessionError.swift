/// Why an SMTP session (or a message in it) failed, with the reply and command involved.
public struct SMTPSessionError: Error, Hashable, Sendable, CustomStringConvertible {
    /// The kind of failure, in a form that can be matched.
    public struct Kind: Hashable, Sendable, CustomStringConvertible {
        /// The kind in words, as messages say it.
        public let description: String
        private init(_ description: String) { self.description = description }

        /// The server's greeting was not 220 (e.g. 554: no SMTP service here).
        public static let greetingRefused = Kind("greeting refused")
        /// Both EHLO and HELO were refused.
        public static let ehloRejected = Kind("EHLO rejected")
        /// TLS is required, but the server does not offer STARTTLS or refused it.
        public static let tlsRequired = Kind("TLS required")
        /// Bytes arrived after the 220 to STARTTLS and before the handshake (CVE-2011-0411).
        public static let tlsInjection = Kind("STARTTLS injection")
        /// The TLS handshake failed.
        public static let tlsFailed = Kind("TLS failed")
        /// The server refused the credentials or the exchange (535, 534, 538, 454, …).
        public static let authenticationFailed = Kind("authentication failed")
        /// Credentials would have gone over plaintext, or no common mechanism exists.
        public static let authenticationNotAllowed = Kind("authentication not allowed")
        /// The server said 421 and closed.
        public static let serviceClosing = Kind("service closing")
        /// The server broke the protocol.
        public static let protocolViolation = Kind("protocol violation")
        /// A reply did not come in time.
        public static let timeout = Kind("timeout")
        /// The connection closed or failed.
        public static let connectionLost = Kind("connection lost")
        /// Refused here before any byte was sent (e.g. a UTF-8 address without SMTPUTF8, a
        /// message larger than the server's SIZE).
        public static let refusedLocally = Kind("refused locally")
        /// The transaction was cancelled before the end of its data was sent.
        public static let cancelled = Kind("cancelled")
    }

    /// What failed.
    public let kind: Kind
    /// The server's reply, when one was involved.
    public let reply: SMTPReply?
    /// The command verb that was answered or awaited.
    public let command: String?
    /// What happened, in words.
    public let detail: String
    /// For a refusal made here with no reply (``Kind/refusedLocally``), the RFC 3463 code that
    /// says what is wrong: `5.3.4` for a message larger than the server's SIZE, `5.6.7` for an
    /// address that needs SMTPUTF8, `5.6.3` for 8-bit content without 8BITMIME.
    public let enhancedCode: EnhancedStatusCode?

    /// Creates an error.
    public init(_ kind: Kind, _ detail: String, reply: SMTPReply? = nil, command: String? = nil,
                enhancedCode: EnhancedStatusCode? = nil) {
        self.kind = kind
        self.detail = detail
        self.reply = reply
        self.command = command
        self.enhancedCode = enhancedCode
    }

    /// Whether trying again later (or elsewhere) may succeed.
    ///
    /// RFC 5321 §4.2.1: a 4yz reply is a transient negative completion ("the command was not
    /// accepted … but the error condition is temporary"), a 5yz a permanent one (the client
    /// "is discouraged from repeating the exact request"). So:
    /// - transient: any 4xx (421 and 454 included), a timeout, a lost connection, a TLS
    ///   handshake that broke, and a protocol violation (as Postfix treats a malformed reply:
    ///   the server may be mended or the fault may be the network's; the retry policy bounds
    ///   the retries);
    /// - permanent: any 5xx (to the greeting, EHLO, AUTH, MAIL, RCPT, DATA or BDAT), STARTTLS
    ///   required and not offered, bytes injected after STARTTLS, credentials that may not be
    ///   sent, and a message the server's own limits rule out.
    public var isTransient: Bool {
        if kind == .protocolViolation { return true }
        if let reply { return reply.code.isTransient }
        return kind == .timeout || kind == .connectionLost || kind == .serviceClosing || kind == .tlsFailed
    }

    public var description: String {
        var text = "\(kind)"
        if let command { text += " (\(command))" }
        text += ": \(detail.controlCharactersEscaped)"
        if let reply { text += " [\(reply)]" }
        return text
    }
}

/// How long to wait for each reply (RFC 5321 §4.5.3.2 defaults).
public struct SMTPTimeouts: Hashable, Sendable {
    /// The 220 greeting: 5 minutes.
    public var greeting: Duration = .seconds(300)
    /// EHLO, HELO, STARTTLS, AUTH, RSET, NOOP, QUIT: 5 minutes.
    public var command: Duration = .seconds(300)
    /// The TLS handshake: 2 minutes.
    public var tlsHandshake: Duration = .seconds(120)
    /// MAIL: 5 minutes.
    public var mail: Duration = .seconds(300)
    /// RCPT: 5 minutes.
    public var recipient: Duration = .seconds(300)
    /// The 354 to DATA: 2 minutes.
    public var data: Duration = .seconds(120)
    /// Each data block (a BDAT chunk's reply): 3 minutes.
    public var dataBlock: Duration = .seconds(180)
    /// The reply after the final dot: 10 minutes.
    public var dataTermination: Duration = .seconds(600)

    /// The RFC 5321 defaults.
    public init() {}
}
