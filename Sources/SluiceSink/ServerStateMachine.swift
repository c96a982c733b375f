public import SluiceCore
import CScan

/// The server side of one SMTP connection, as a state machine: fed the client's bytes, it
/// returns the replies to write and what to do. The sink runs on it.
///
/// Commands are read strictly in order and answered one reply each, however many arrive in
/// one read (RFC 2920 §3.2); the replies of one read go out in one write. Every buffer is
/// bounded: a command line longer than the limit is answered 500 and discarded, content over
/// the size limit is counted but not kept (552 at the end), recipients past the limit get
/// 452. Only CRLF ends a line: a bare CR or LF in DATA content is refused and the connection
/// closed, so a smuggled second message is never taken. BDAT content is framed by its
/// length, so a bare CR or LF there cannot smuggle anything into this session, but unless the
/// transaction declared BODY=BINARYMIME such a message is refused (554 5.6.0) rather than
/// stored, so it cannot smuggle one when it is relayed on. Nothing read before the 354 is
/// content, and plaintext buffered behind STARTTLS is discarded.
///
/// A message is answered only after the driver says it is stored
/// (``deliveryFinished(_:)``), so no message is acknowledged and lost.
public struct ServerStateMachine: Sendable {
    /// What the connection should do.
    public enum Action: Hashable, Sendable {
        /// Write these replies.
        case write([UInt8])
        /// Start server TLS now; everything buffered was discarded.
        case startTLS
        /// Store this message, then call ``deliveryFinished(_:)``.
        case deliver(ReceivedMessage)
        /// Close the connection (after any write above).
        case close
        /// An AUTH attempt failed: the `failures`-th on this connection. Unless a close
        /// follows, input is held until ``holdEnded()``: the driver slows a guesser down by
        /// holding the reply and the next command for a while.
        case authenticationFailed(failures: Int)
        /// Hold the writes that follow (and read nothing more) for this long, then call
        /// ``holdEnded()``: a policy's tarpit (``ServerFault/delay(_:)``).
        case hold(Duration)
    }

    /// What this server offers and enforces.
    public struct Configuration: Hashable, Sendable {
        /// The name in the greeting and EHLO reply.
        public var hostname: String = "localhost"
        /// Offer PIPELINING.
        public var pipelining = true
        /// Offer CHUNKING (BDAT) and BINARYMIME.
        public var chunking = true
        /// Offer 8BITMIME.
        public var eightBitMIME = true
        /// Offer SMTPUTF8.
        public var smtpUTF8 = true
        /// Offer ENHANCEDSTATUSCODES (the codes are sent either way).
        public var enhancedStatusCodes = true
        /// Offer DSN.
        public var deliveryStatusNotifications = true
        /// Offer STARTTLS (the driver must have a certificate).
        public var startTLS = false
        /// Users for AUTH PLAIN and LOGIN; empty: AUTH is not offered.
        public var users: [String: String] = [:]
        /// Refuse MAIL until authenticated.
        public var requireAuthentication = false
        /// Refuse MAIL and AUTH until TLS is on.
        public var requireTLS = false
        /// Refuse AUTH over plaintext (when STARTTLS is offered).
        public var authenticationRequiresTLS = true
        /// The largest message in octets (advertised with SIZE; 552 beyond).
        public var maximumMessageSize = 64 * 1024 * 1024
        /// The most recipients per message (452 beyond).
        public var maximumRecipients = 1000
        /// The longest command line, CRLF included (RFC 5321 says 512; extensions need more).
        public var maximumCommandLength = 2048
        /// Failed AUTH attempts allowed on one connection: the one that reaches this many is
        /// answered 421 and the connection closed (Postfix counts errors the same way with
        /// `smtpd_hard_error_limit`).
        public var maximumAuthenticationFailures = 5

        /// The defaults: every extension but STARTTLS and AUTH on.
        public init() {}
    }

    private enum Phase: Sendable {
        case greeting
        /// After the 220 to STARTTLS: every plaintext byte is discarded until TLS is up.
        case awaitingTLS
        case command
        /// Reading DATA content after 354.
        case data(DataDecoder)
        /// Reading `remaining` bytes of a BDAT chunk; `last` and `accepted` say what follows.
        case chunk(remaining: Int, last: Bool, accepted: Bool)
        /// AUTH is waiting for a response line.
        case authentication(AuthState)
        /// A message was handed to the driver; input waits until it answers.
        case delivering
        /// An AUTH attempt failed; input waits until the driver calls ``holdEnded()``.
        case held
        /// Discarding the rest of an overlong command line.
        case discardingLine
        case closed
    }

    private enum AuthState: Hashable, Sendable {
        case plain
        case loginUsername
        case loginPassword(String)
    }

    private let configuration: Configuration
    private var policy: any ServerPolicy
    private var phase = Phase.greeting
    private var input: [UInt8] = []
    private var inputIndex = 0
    /// The storage each command line is copied into, kept between lines: a message's MAIL,
    /// RCPT and BDAT or DATA cost no allocation for their text.
    private var lineStorage: [UInt8] = []
    private var output: [UInt8] = []
    private var actions: [Action] = []
    private var isSecure = false
    private var heloName: String?
    private var extended = false
    private var authenticatedUser: String?
    private var transaction: Transaction?
    private var content: [UInt8] = []
    private var contentSize = 0
    /// Whether the client ended the session with QUIT.
    public private(set) var quitReceived = false
    /// AUTH attempts that failed on this connection (each ``Action/authenticationFailed(failures:)``
    /// tells the driver the count).
    private var authenticationFailures = 0
    /// Shutting down: the transaction whose content is arriving may finish, and a QUIT is
    /// answered; nothing else starts.
    private var drain = Drain.no

    /// How far a shutdown has come for this session.
    private enum Drain {
        case no
        /// Draining: the next command decides (QUIT gets its 221, anything else a 421).
        case awaitingNextCommand
        /// The settling time is over: a session between commands is closed at once.
        case closing
    }

    private struct Transaction: Sendable {
        var from: EnvelopeAddress?
        var parameters: MailParameters
        var recipients: [EnvelopeAddress] = []
        var usedBDAT = false
    }

    /// Bytes received and not yet processed (they wait while a message is being stored);
    /// a driver pauses reading while this is large.
    public var bufferedInputCount: Int { input.count - inputIndex }

    /// A machine for one accepted connection.
    public init(configuration: Configuration, policy: any ServerPolicy = NoFaults()) {
        self.configuration = configuration
        self.policy = policy
    }

    // MARK: Events

    /// The connection is up (after the handshake, for implicit TLS): greet.
    public mutating func connected(secure: Bool) -> [Action] {
        isSecure = secure
        if let fault = immediate(policy.decide(.connected)) {
            apply(fault)
        } else {
            reply(.serviceReady, nil, "\(configuration.hostname) ESMTP Sluice")
        }
        phase = .command
        return finish()
    }

    /// Bytes arrived from the client (valid only during the call).
    ///
    /// The concrete overloads matter: a generic collection from another module would be
    /// appended byte by byte, unspecialised.
    public mutating func bytesReceived(_ bytes: UnsafeRawBufferPointer) -> [Action] {
        guard acceptsInput() else { return [] }
        input.append(contentsOf: bytes)
        process()
        return finish()
    }

    /// Bytes arrived from the client.
    public mutating func bytesReceived(_ bytes: [UInt8]) -> [Action] {
        bytes.withUnsafeBytes { bytesReceived($0) }
    }

    /// Bytes arrived from the client.
    public mutating func bytesReceived(_ bytes: ArraySlice<UInt8>) -> [Action] {
        bytes.withUnsafeBytes { bytesReceived($0) }
    }

    private mutating func acceptsInput() -> Bool {
        switch phase {
        case .closed, .awaitingTLS:
            return false  // plaintext after the 220 to STARTTLS is never run as a command
        default:
            break
        }
        if inputIndex > 0, inputIndex == input.count {
            input.removeAll(keepingCapacity: true)
            inputIndex = 0
        }
        return true
    }

    /// TLS is established: forget the EHLO and anything else learned before it.
    public mutating func tlsEstablished() -> [Action] {
        isSecure = true
        heloName = nil
        extended = false
        transaction = nil
        authenticatedUser = nil
        phase = .command
        process()
        return finish()
    }

    /// The driver stored (or failed to store) the message handed to it.
    public mutating func deliveryFinished(_ result: DeliveryResult) -> [Action] {
        guard case .delivering = phase else { return [] }
        phase = .command
        switch result {
        case .stored(let id):
            reply(.ok, EnhancedStatusCode(2, 0, 0), "Ok: queued as ", then: id)
        case .failed(let reply):
            write(reply)
        }
        transaction = nil
        process()
        if drain == .closing, case .command = phase { closeForShutdown() }
        return finish()
    }

    /// What the client is in the middle of sending, for the driver's deadlines: a client
    /// that trickles a command line or a message's content a byte at a time keeps the idle
    /// timer from firing, so a whole line and a whole content each get a deadline of their own.
    public enum InputProgress: Hashable, Sendable {
        /// Nothing half-sent: between commands, or waiting on the server (storing a message,
        /// TLS, a delay).
        case idle
        /// Part of a command line (or an AUTH response) has arrived, not its end.
        case commandLine
        /// A message's content is arriving (after 354, or a BDAT chunk).
        case content
    }

    /// Counts each command line read and each content begun: with ``inputProgress`` it tells
    /// a driver whether the half-sent thing is the one it set its deadline for, or the next.
    public private(set) var inputSequence = 0

    /// ``inputProgress`` and ``inputSequence`` together, read in place. For a driver that keeps
    /// the machine in a class's stored property: there a getter that is not a plain stored
    /// property first copies the whole machine (a retain and a release for each of its
    /// references), and the driver asks after every batch of input.
    public mutating func progress() -> (InputProgress, Int) {
        (inputProgress, inputSequence)
    }

    /// What the client is in the middle of sending.
    public var inputProgress: InputProgress {
        switch phase {
        case .data, .chunk: .content
        case .command, .authentication: inputIndex < input.count ? .commandLine : .idle
        case .discardingLine: .commandLine
        case .greeting, .awaitingTLS, .delivering, .held, .closed: .idle
        }
    }

    /// The client took longer than its deadline to send a whole command line or content:
    /// 421 and close.
    public mutating func deadlineExceeded() -> [Action] {
        if case .closed = phase { return [] }
        let what = inputProgress == .content ? "message content" : "command line"
        reply(.serviceNotAvailable, EnhancedStatusCode(4, 4, 2), "\(configuration.hostname) Error: \(what) took too long")
        close()
        return finish()
    }

    /// The server is shutting down: a transaction whose content is arriving (or being stored)
    /// finishes and gets its reply. The next command decides the rest: QUIT gets its 221, as
    /// RFC 5321 asks, and anything else a 421 and the close. A session in the middle of its
    /// greeting, TLS or AUTH gets the 421 at once.
    ///
    /// A client that has just had its reply is usually about to QUIT; so the driver waits a
    /// moment for that before it calls ``drainSettled()``, which closes a session that is
    /// still between commands.
    public mutating func drainRequested() -> [Action] {
        guard drain == .no else { return [] }
        drain = .awaitingNextCommand
        switch phase {
        case .data, .chunk, .delivering, .command, .closed:
            break  // the end of the content, the next command (or the close) comes first
        case .greeting, .awaitingTLS, .authentication, .discardingLine, .held:
            closeForShutdown()
        }
        return finish()
    }

    /// The moment for a draining session's next command is over: a session between commands
    /// gets its 421 and is closed now; one whose content is still arriving is closed as soon
    /// as that content has its reply.
    public mutating func drainSettled() -> [Action] {
        guard drain != .no else { return [] }
        drain = .closing
        if case .command = phase { closeForShutdown() }
        return finish()
    }

    private mutating func closeForShutdown() {
        if case .closed = phase { return }
        reply(.serviceNotAvailable, EnhancedStatusCode(4, 3, 2), "\(configuration.hostname) Error: shutting down")
        close()
    }

    /// The hold after a failed AUTH is over: read on.
    public mutating func holdEnded() -> [Action] {
        guard case .held = phase else { return [] }
        phase = .command
        process()
        return finish()
    }

    /// The driver ends the session: `reply` (a 421), then close.
    public mutating func closeRequested(_ reply: SMTPReply) -> [Action] {
        if case .closed = phase { return [] }
        write(reply)
        close()
        return finish()
    }

    /// The client was idle too long: 421 and close. While a message is being stored, or an
    /// AUTH penalty holds the session, the wait is the sink's, not the client's: nothing
    /// happens, and the driver arms its idle timer again once the reply is out. A 421 there
    /// would answer content already stored, and the client, rightly reading it as "not
    /// accepted", would send the message again (seen in `sluice soak` under load: 25
    /// recipients stored twice).
    public mutating func timeoutFired() -> [Action] {
        switch phase {
        case .closed, .delivering, .held: return []
        default: break
        }
        reply(.serviceNotAvailable, EnhancedStatusCode(4, 4, 2), "\(configuration.hostname) Error: timeout exceeded")
        close()
        return finish()
    }

    // MARK: Input

    private mutating func process() {
        while inputIndex < input.count {
            switch phase {
            case .closed, .delivering, .held, .greeting, .awaitingTLS:
                return
            case .data(var decoder):
                var consumedAll = true
                let progress = decoder.decode(input[inputIndex...], into: &content)
                switch progress {
                case .needsMoreData:
                    inputIndex = input.count
                    phase = .data(decoder)
                case .complete(let consumed):
                    inputIndex += consumed
                    consumedAll = false
                    contentSize = decoder.size
                    endOfContent(exceeded: decoder.exceededMaximumSize)
                case .bareLineEnding:
                    reply(SMTPStatusCode(rawValue: 521)!, EnhancedStatusCode(5, 5, 2),
                          "Error: bare CR or LF in message content; closing")
                    close()
                    return
                }
                if consumedAll { return }
            case .chunk(let remaining, let last, let accepted):
                let available = min(remaining, input.count - inputIndex)
                if accepted {
                    let room = max(0, configuration.maximumMessageSize - content.count)
                    content.append(contentsOf: input[inputIndex..<inputIndex + min(available, room)])
                }
                contentSize += available
                inputIndex += available
                if available < remaining {
                    phase = .chunk(remaining: remaining - available, last: last, accepted: accepted)
                    return
                }
                phase = .command
                endOfChunk(last: last, accepted: accepted)
            case .discardingLine:
                guard let end = input[inputIndex...].firstIndex(of: 10) else {
                    inputIndex = input.count
                    return
                }
                inputIndex = end + 1
                phase = .command
            case .command, .authentication:
                guard let line = nextLine() else { return }
                switch line {
                case .tooLong:
                    // An overlong AUTH response ends the exchange too.
                    if case .authentication = phase { phase = .command }
                    reply(.commandUnrecognized, EnhancedStatusCode(5, 5, 2), "Error: line too long")
                case .bareLineEnding:
                    reply(.commandUnrecognized, EnhancedStatusCode(5, 5, 2), "Error: bare CR or LF in a command; closing")
                    close()
                    return
                case .line(let range):
                    // Copied out of the input (a command may replace the input), into storage
                    // reused from line to line; it goes back once the line is handled.
                    var text: [UInt8] = []
                    swap(&text, &lineStorage)
                    text.removeAll(keepingCapacity: true)
                    text.append(contentsOf: input[range])
                    if case .authentication(let state) = phase {
                        authenticationLine(text, state)
                    } else {
                        command(text)
                    }
                    swap(&text, &lineStorage)
                }
            }
        }
        compactInput()
    }

    private enum Line {
        /// The line's octets in `input`, without its CRLF.
        case line(Range<Int>)
        case tooLong
        case bareLineEnding
    }

    /// The next command line without its CRLF; nil if incomplete.
    private mutating func nextLine() -> Line? {
        var index = inputIndex
        let limit = configuration.maximumCommandLength
        while index < input.count {
            let byte = input[index]
            if byte == 13 {
                guard index + 1 < input.count else { break }
                guard input[index + 1] == 10 else { return .bareLineEnding }
                let line = inputIndex..<index
                inputIndex = index + 2
                inputSequence &+= 1
                if line.count + 2 > limit { return .tooLong }
                return .line(line)
            }
            if byte == 10 { return .bareLineEnding }
            index += 1
        }
        if input.count - inputIndex >= limit {
            // An endless line: answer once, then drop bytes until its end.
            inputIndex = input.count
            phase = .discardingLine
            return .tooLong
        }
        return nil
    }

    private mutating func compactInput() {
        if inputIndex == input.count {
            input.removeAll(keepingCapacity: input.capacity <= 64 * 1024)
            inputIndex = 0
        } else if inputIndex > 64 * 1024 {
            input.removeFirst(inputIndex)
            inputIndex = 0
        }
    }

    // MARK: Commands

    private mutating func command(_ line: [UInt8]) {
        if drain != .no, Verb(line.prefix { $0 != UInt8(ascii: " ") }) != .quit {
            closeForShutdown()
            return
        }
        if line.contains(0) {
            reply(.commandUnrecognized, EnhancedStatusCode(5, 5, 2), "Error: NUL in command")
            return
        }
        let space = line.firstIndex(of: UInt8(ascii: " ")) ?? line.count
        let known = Verb(line[..<space])
        let verb = known?.rawValue ?? String(decoding: line[..<space], as: UTF8.self).uppercased()
        // The argument stays bytes: MAIL, RCPT and BDAT, three commands a message, are read
        // without a string. It is checked as UTF-8 all the same, so every later cut between
        // ASCII delimiters falls between scalars and each string made from it is exact.
        let argument = space < line.count ? line[(space + 1)...] : line[line.count...]
        guard Self.isValidUTF8(argument) else {
            reply(.commandUnrecognized, EnhancedStatusCode(5, 5, 2), "Error: command is not valid UTF-8")
            return
        }
        if let fault = immediate(policy.decide(.command(verb))) {
            apply(fault)
            return
        }
        switch known {
        case .ehlo, .helo: hello(verb, String(decoding: argument, as: UTF8.self))
        case .mail: mail(argument)
        case .rcpt: recipient(argument)
        case .data: data(argument)
        case .bdat: bdat(argument)
        case .rset:
            transaction = nil
            reply(.ok, EnhancedStatusCode(2, 0, 0), "Ok")
        case .noop: reply(.ok, EnhancedStatusCode(2, 0, 0), "Ok")
        case .quit:
            quitReceived = true
            reply(.serviceClosingTransmissionChannel, EnhancedStatusCode(2, 0, 0), "Bye")
            close()
        case .vrfy: reply(.cannotVerifyUserWillAttemptDelivery, EnhancedStatusCode(2, 5, 2), "Cannot VRFY user")
        case .help: reply(.helpMessage, EnhancedStatusCode(2, 0, 0), "See RFC 5321")
        case .startTLS: startTLS(String(decoding: argument, as: UTF8.self))
        case .auth: auth(String(decoding: argument, as: UTF8.self))
        case nil:
            reply(.commandUnrecognized, EnhancedStatusCode(5, 5, 2), "Error: command not recognized")
        }
    }

    /// The verbs this server knows, matched on the line's bytes (ASCII letters in either
    /// case) so the common commands cost no string work.
    private enum Verb: String, CaseIterable {
        case mail = "MAIL", rcpt = "RCPT", data = "DATA", bdat = "BDAT", rset = "RSET", ehlo = "EHLO"
        case helo = "HELO", noop = "NOOP", quit = "QUIT", vrfy = "VRFY", help = "HELP"
        case startTLS = "STARTTLS", auth = "AUTH"

        /// Each verb's octets packed into an integer, with its length: a command's verb is
        /// packed the same way (ASCII letters upper-cased, nothing else folded) and compared
        /// with each, one integer comparison a verb.
        private static let packed: [(length: Int, key: UInt64, verb: Verb)] = allCases.map { verb in
            let bytes = Array(verb.rawValue.utf8)
            return (bytes.count, ServerStateMachine.packedUppercased(bytes[...])!, verb)
        }

        init?(_ bytes: ArraySlice<UInt8>) {
            guard let key = ServerStateMachine.packedUppercased(bytes) else { return nil }
            for entry in Self.packed where entry.key == key && entry.length == bytes.count {
                self = entry.verb
                return
            }
            return nil
        }
    }

    /// Up to eight octets packed into an integer, ASCII letters upper-cased; nil for more.
    private static func packedUppercased(_ bytes: ArraySlice<UInt8>) -> UInt64? {
        guard bytes.count <= 8 else { return nil }
        var key: UInt64 = 0
        for byte in bytes { key = key << 8 | UInt64(asciiUppercased(byte)) }
        return key
    }

    private static func asciiUppercased(_ byte: UInt8) -> UInt8 {
        (0x61...0x7A).contains(byte) ? byte - 0x20 : byte
    }

    /// Whether `bytes` equal `keyword` (upper case ASCII) with ASCII letters in either case:
    /// Unicode case rules would read "ſize" as SIZE.
    private static func matches(_ bytes: ArraySlice<UInt8>, _ keyword: StaticString) -> Bool {
        guard bytes.count == keyword.utf8CodeUnitCount else { return false }
        let expected = UnsafeBufferPointer(start: keyword.utf8Start, count: keyword.utf8CodeUnitCount)
        return zip(bytes, expected).allSatisfy { asciiUppercased($0) == $1 }
    }

    /// Whether `bytes` are UTF-8: a scan for ASCII, which commands almost always are, and the
    /// standard library's check for the rest.
    private static func isValidUTF8(_ bytes: ArraySlice<UInt8>) -> Bool {
        bytes.allSatisfy { $0 < 0x80 } || String(validating: bytes, as: UTF8.self) != nil
    }

    private mutating func hello(_ verb: String, _ argument: String) {
        let name = argument.trimmingSpaces
        guard !name.isEmpty, !name.contains(" ") else {
            reply(.syntaxError, EnhancedStatusCode(5, 5, 4), "Syntax: \(verb) hostname")
            return
        }
        heloName = name
        transaction = nil
        extended = verb == "EHLO"
        guard extended else {
            reply(.ok, nil, configuration.hostname)
            return
        }
        var lines = [configuration.hostname]
        if configuration.pipelining { lines.append("PIPELINING") }
        lines.append("SIZE \(configuration.maximumMessageSize)")
        if configuration.startTLS, !isSecure { lines.append("STARTTLS") }
        if !configuration.users.isEmpty, authenticatedUser == nil,
           isSecure || !configuration.authenticationRequiresTLS || !configuration.startTLS {
            lines.append("AUTH PLAIN LOGIN")
        }
        if configuration.enhancedStatusCodes { lines.append("ENHANCEDSTATUSCODES") }
        if configuration.eightBitMIME { lines.append("8BITMIME") }
        if configuration.chunking {
            lines.append("CHUNKING")
            lines.append("BINARYMIME")
        }
        if configuration.smtpUTF8 { lines.append("SMTPUTF8") }
        if configuration.deliveryStatusNotifications { lines.append("DSN") }
        write(SMTPReply(code: .ok, lines: lines))
    }

    private mutating func mail(_ argument: ArraySlice<UInt8>) {
        guard heloName != nil else {
            return reply(.badCommandSequence, EnhancedStatusCode(5, 5, 1), "Error: send HELO/EHLO first")
        }
        if configuration.requireTLS, !isSecure {
            return reply(.mustIssueStartTlsFirst, EnhancedStatusCode(5, 7, 0), "Must issue a STARTTLS command first")
        }
        if configuration.requireAuthentication, authenticatedUser == nil {
            return reply(.mustIssueStartTlsFirst, EnhancedStatusCode(5, 7, 0), "Authentication required")
        }
        guard transaction == nil else {
            return reply(.badCommandSequence, EnhancedStatusCode(5, 5, 1), "Error: nested MAIL command")
        }
        guard let (path, parameterText) = Self.path(after: "FROM:", in: argument) else {
            return reply(.syntaxError, EnhancedStatusCode(5, 5, 4), "Syntax: MAIL FROM:<address>")
        }
        var from: EnvelopeAddress?
        if !path.isEmpty {
            do { from = try EnvelopeAddress(String(decoding: path, as: UTF8.self)) } catch {
                return reply(.mailboxNameNotAllowed, EnhancedStatusCode(5, 1, 7), "Bad sender address syntax")
            }
        }
        var parameters = MailParameters()
        // Read as bytes, keywords upper-cased in ASCII only: an esmtp-keyword is ASCII
        // (RFC 5321 §4.1.2), and Unicode case rules would read "ſize" as SIZE.
        var rest = parameterText
        while !rest.isEmpty {
            // The next word, runs of spaces skipped; no array of words is built.
            let end = rest.firstIndex(of: UInt8(ascii: " ")) ?? rest.endIndex
            let parameter = rest[..<end]
            rest = end == rest.endIndex ? rest[end...] : rest[(end + 1)...]
            if parameter.isEmpty { continue }
            // A lone "=" is a key of "" (555), never an empty list.
            let equals = parameter.firstIndex(of: UInt8(ascii: "="))
            let key = parameter[..<(equals ?? parameter.endIndex)]
            let value = equals.map { parameter[($0 + 1)...] }
            if Self.matches(key, "SIZE"), let value {
                guard let size = Int(String(decoding: value, as: UTF8.self)), size >= 0 else {
                    return reply(.syntaxError, EnhancedStatusCode(5, 5, 4), "Bad SIZE parameter")
                }
                guard size <= configuration.maximumMessageSize else {
                    return reply(.exceededStorageAllocation, EnhancedStatusCode(5, 3, 4), "Message size exceeds fixed limit")
                }
                parameters.size = size
            } else if Self.matches(key, "BODY"), let value {
                if Self.matches(value, "7BIT") {
                    parameters.body = .sevenBit
                } else if Self.matches(value, "8BITMIME"), configuration.eightBitMIME {
                    parameters.body = .eightBitMIME
                } else if Self.matches(value, "BINARYMIME"), configuration.chunking {
                    parameters.body = .binaryMIME
                } else {
                    return reply(.commandParameterNotImplemented, EnhancedStatusCode(5, 5, 4), "Unsupported BODY")
                }
            } else if Self.matches(key, "SMTPUTF8"), value == nil, configuration.smtpUTF8 {
                parameters.smtpUTF8 = true
            } else if Self.matches(key, "RET"), let value, configuration.deliveryStatusNotifications {
                parameters.returnContent = Self.matches(value, "HDRS") ? .headers : .full
            } else if Self.matches(key, "ENVID"), let value, configuration.deliveryStatusNotifications {
                try? parameters.setEnvelopeID(String(decoding: value, as: UTF8.self))
            } else if Self.matches(key, "AUTH") {
                // RFC 4954 §5: accepted and ignored
            } else {
                let name = String(decoding: key.map(Self.asciiUppercased), as: UTF8.self)
                return reply(SMTPStatusCode(rawValue: 555)!, EnhancedStatusCode(5, 5, 4), "Unsupported option: \(name)")
            }
        }
        if from?.requiresSMTPUTF8 == true, !parameters.smtpUTF8 {
            return reply(.mailboxNameNotAllowed, EnhancedStatusCode(5, 6, 7), "UTF-8 address without SMTPUTF8")
        }
        transaction = Transaction(from: from, parameters: parameters)
        reply(.ok, EnhancedStatusCode(2, 1, 0), "Ok")
    }

    private mutating func recipient(_ argument: ArraySlice<UInt8>) {
        // The transaction is read and changed in place: a copy of it would retain each of its
        // references, and appending to the copy's recipients would copy their array.
        guard transaction != nil else {
            return reply(.badCommandSequence, EnhancedStatusCode(5, 5, 1), "Error: need MAIL command")
        }
        guard let (path, _) = Self.path(after: "TO:", in: argument), !path.isEmpty else {
            return reply(.syntaxError, EnhancedStatusCode(5, 5, 4), "Syntax: RCPT TO:<address>")
        }
        guard let address = try? EnvelopeAddress(String(decoding: path, as: UTF8.self)) else {
            return reply(.mailboxNameNotAllowed, EnhancedStatusCode(5, 1, 3), "Bad recipient address syntax")
        }
        if address.requiresSMTPUTF8, transaction?.parameters.smtpUTF8 != true {
            return reply(.mailboxNameNotAllowed, EnhancedStatusCode(5, 6, 7), "UTF-8 address without SMTPUTF8")
        }
        guard let count = transaction?.recipients.count, count < configuration.maximumRecipients else {
            return reply(.insufficientStorage, EnhancedStatusCode(4, 5, 3), "Error: too many recipients")
        }
        var delay: Duration?
        switch policy.decide(.recipient(address, sender: transaction?.from)) {
        case .delay(let duration)?:
            delay = duration
        case let fault?:
            apply(fault)
            return
        case nil:
            break
        }
        transaction?.recipients.append(address)
        if let delay { hold(for: delay) }
        reply(.ok, EnhancedStatusCode(2, 1, 5), "Ok")
    }

    /// The text of the 554 that answers `DATA` or `BDAT` when every recipient was refused
    /// (RFC 2920 §3.1): a consequence of refusals already answered, not a refusal of its own.
    public static let noValidRecipientsText = "Error: no valid recipients"

    private mutating func data(_ argument: ArraySlice<UInt8>) {
        guard let current = transaction else {
            return reply(.badCommandSequence, EnhancedStatusCode(5, 5, 1), "Error: need RCPT command")
        }
        guard !current.usedBDAT else {
            return reply(.badCommandSequence, EnhancedStatusCode(5, 5, 1), "Error: DATA after BDAT")
        }
        guard !current.recipients.isEmpty else {
            return reply(.transactionFailed, EnhancedStatusCode(5, 5, 1), Self.noValidRecipientsText)
        }
        guard argument.allSatisfy({ $0 == UInt8(ascii: " ") }) else {
            return reply(.syntaxError, EnhancedStatusCode(5, 5, 4), "Syntax: DATA")
        }
        reply(.startMailInput, nil, "End data with <CR><LF>.<CR><LF>")
        content = []
        contentSize = 0
        inputSequence &+= 1
        phase = .data(DataDecoder(maximumSize: configuration.maximumMessageSize))
    }

    private mutating func bdat(_ argument: ArraySlice<UInt8>) {
        // "size" or "size LAST", one space between: read as bytes, with no array of words.
        let space = argument.firstIndex(of: UInt8(ascii: " ")) ?? argument.endIndex
        let digits = argument[..<space]
        let last = space != argument.endIndex
        // The size is ASCII digits only (RFC 3030): `+5` or `-0` would frame the stream
        // differently from what the client meant, and the next command would be eaten as data.
        // LAST is matched in ASCII only: Unicode case rules would read "laſt" as LAST.
        guard configuration.chunking, !digits.isEmpty, digits.allSatisfy({ (0x30...0x39).contains($0) }),
              !last || Self.matches(argument[(space + 1)...], "LAST")
        else {
            return reply(.syntaxError, EnhancedStatusCode(5, 5, 4), "Syntax: BDAT size [LAST]")
        }
        // Too many digits for an Int is a size past any limit.
        let size = Int(String(decoding: digits, as: UTF8.self)) ?? Int.max
        let sizeSoFar = transaction?.usedBDAT == true ? contentSize : 0
        if size > configuration.maximumMessageSize - sizeSoFar {
            // Refused from its declared size: the chunk is never read, so there is no
            // staying in step with the stream; the connection ends here.
            transaction = nil
            content = []
            reply(.exceededStorageAllocation, EnhancedStatusCode(5, 3, 4), "Error: message too large; closing")
            close()
            return
        }
        // The chunk's bytes follow whatever the verdict: read them, keep them only if valid.
        var accepted = false
        if transaction?.recipients.isEmpty == false {
            if transaction?.usedBDAT == false {
                content = []
                contentSize = 0
            }
            transaction?.usedBDAT = true
            accepted = true
        }
        inputSequence &+= 1
        phase = .chunk(remaining: size, last: last, accepted: accepted)
        if size == 0 {
            phase = .command
            endOfChunk(last: last, accepted: accepted)
        }
    }

    private mutating func endOfChunk(last: Bool, accepted: Bool) {
        guard accepted else {
            if transaction == nil {
                reply(.badCommandSequence, EnhancedStatusCode(5, 5, 1), "Error: need MAIL command")
            } else {
                reply(.transactionFailed, EnhancedStatusCode(5, 5, 1), Self.noValidRecipientsText)
                transaction = nil
            }
            return
        }
        guard last else {
            reply(.ok, EnhancedStatusCode(2, 0, 0), "Ok: \(contentSize) octets")
            return
        }
        let exceeded = contentSize > configuration.maximumMessageSize
        if !exceeded, transaction?.parameters.body != .binaryMIME, Self.containsBareLineEnding(content) {
            transaction = nil
            content = []
            return reply(.transactionFailed, EnhancedStatusCode(5, 6, 0), "Error: bare CR or LF in message content")
        }
        endOfContent(exceeded: exceeded)
    }

    /// Whether `bytes` hold a CR not followed by LF or an LF not preceded by CR.
    ///
    /// Every BDAT message is checked whole, so this is vector code (CScan): sixteen bytes a
    /// step, the CRs and the LFs each marked by a bit, and the LF marks compared with the CR
    /// marks moved on by one byte. A byte-by-byte loop was about half of the sink's CPU for
    /// 100 KB messages; marking eight bytes at a time in a 64-bit word still took 46%.
    static func containsBareLineEnding(_ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBufferPointer { buffer in
            cscan_has_bare_line_ending(buffer.baseAddress, buffer.count) != 0
        }
    }

    /// The end of a message (DATA terminator or BDAT LAST): refuse it, inject a fault, or
    /// hand it over and wait.
    private mutating func endOfContent(exceeded: Bool) {
        phase = .command
        guard let current = transaction else { return }
        if exceeded {
            transaction = nil
            content = []
            return reply(.exceededStorageAllocation, EnhancedStatusCode(5, 3, 4), "Error: message too large")
        }
        if let fault = immediate(policy.decide(.endOfData)) {
            transaction = nil
            content = []
            apply(fault)
            return
        }
        let message = ReceivedMessage(
            from: current.from, recipients: current.recipients, parameters: current.parameters, content: content,
            heloName: heloName ?? "", authenticatedUser: authenticatedUser, wasSecure: isSecure)
        content = []
        phase = .delivering
        if !output.isEmpty {
            act(.write(output))  // replies so far go out before the store begins
            output = []
        }
        act(.deliver(message))
    }

    private mutating func startTLS(_ argument: String) {
        guard configuration.startTLS, !isSecure else {
            return reply(.commandNotImplemented, EnhancedStatusCode(5, 5, 1), "Error: STARTTLS not available")
        }
        guard argument.trimmingSpaces.isEmpty else {
            return reply(.syntaxError, EnhancedStatusCode(5, 5, 4), "Syntax: STARTTLS")
        }
        reply(.serviceReady, EnhancedStatusCode(2, 0, 0), "Ready to start TLS")
        // Whatever the client sent behind STARTTLS is plaintext: it is discarded, never run.
        input.removeAll()
        inputIndex = 0
        act(.write(output))
        output = []
        act(.startTLS)
        phase = .awaitingTLS  // nothing is read until tlsEstablished()
    }

    // MARK: AUTH

    private mutating func auth(_ argument: String) {
        guard !configuration.users.isEmpty, heloName != nil, extended else {
            return reply(.commandNotImplemented, EnhancedStatusCode(5, 5, 1), "Error: AUTH not available")
        }
        guard authenticatedUser == nil else {
            return reply(.badCommandSequence, EnhancedStatusCode(5, 5, 1), "Error: already authenticated")
        }
        guard transaction == nil else {
            return reply(.badCommandSequence, EnhancedStatusCode(5, 5, 1), "Error: AUTH during a transaction")
        }
        if (configuration.requireTLS || (configuration.authenticationRequiresTLS && configuration.startTLS)), !isSecure {
            return reply(.encryptionRequiredForAuthentication, EnhancedStatusCode(5, 7, 11), "Encryption required for requested authentication mechanism")
        }
        let words = argument.split(separator: " ")
        guard let mechanism = words.first?.uppercased(), words.count <= 2 else {
            return reply(.syntaxError, EnhancedStatusCode(5, 5, 4), "Syntax: AUTH mechanism")
        }
        let initial = words.count == 2 ? String(words[1]) : nil
        switch mechanism {
        case "PLAIN":
            if let initial {
                authenticationLine(Array(initial.utf8), .plain)
            } else {
                phase = .authentication(.plain)
                reply(.serverChallenge, nil, "")
            }
        case "LOGIN":
            if let initial {
                authenticationLine(Array(initial.utf8), .loginUsername)
            } else {
                phase = .authentication(.loginUsername)
                reply(.serverChallenge, nil, "VXNlcm5hbWU6")
            }
        default:
            reply(.commandParameterNotImplemented, EnhancedStatusCode(5, 5, 4), "Unsupported authentication mechanism")
        }
    }

    private mutating func authenticationLine(_ line: [UInt8], _ state: AuthState) {
        phase = .command
        if line == [UInt8(ascii: "*")] {
            return authenticationFailed(.syntaxError, EnhancedStatusCode(5, 7, 0), "Authentication cancelled")
        }
        guard let decoded = line == [UInt8(ascii: "=")] ? [] : Base64.decode(line) else {
            return authenticationFailed(.syntaxError, EnhancedStatusCode(5, 5, 2), "Invalid base64 data")
        }
        switch state {
        case .plain:
            let parts = decoded.split(separator: 0, omittingEmptySubsequences: false)
            guard parts.count == 3 else {
                return authenticationFailed(.syntaxError, EnhancedStatusCode(5, 5, 2), "Invalid PLAIN response")
            }
            verify(username: String(decoding: parts[1], as: UTF8.self), password: String(decoding: parts[2], as: UTF8.self))
        case .loginUsername:
            phase = .authentication(.loginPassword(String(decoding: decoded, as: UTF8.self)))
            reply(.serverChallenge, nil, "UGFzc3dvcmQ6")
        case .loginPassword(let username):
            verify(username: username, password: String(decoding: decoded, as: UTF8.self))
        }
    }

    private mutating func verify(username: String, password: String) {
        if let expected = configuration.users[username], expected == password {
            authenticatedUser = username
            reply(.authenticationSucceeded, EnhancedStatusCode(2, 7, 0), "Authentication successful")
        } else {
            authenticationFailed(.authenticationCredentialsInvalid, EnhancedStatusCode(5, 7, 8), "Error: authentication failed")
        }
    }

    /// Answers an AUTH exchange that failed, counting it: the failure that reaches
    /// ``Configuration/maximumAuthenticationFailures`` is answered 421 instead, and the
    /// connection closes. (The driver slows the replies down as the count grows.)
    private mutating func authenticationFailed(_ code: SMTPStatusCode, _ enhanced: EnhancedStatusCode?, _ text: String) {
        authenticationFailures += 1
        act(.authenticationFailed(failures: authenticationFailures))
        guard authenticationFailures < configuration.maximumAuthenticationFailures else {
            reply(.serviceNotAvailable, EnhancedStatusCode(4, 7, 0),
                  "\(configuration.hostname) Error: too many failed authentications; closing")
            close()
            return
        }
        reply(code, enhanced, text)
        phase = .held  // nothing more is read until the driver has held the reply a while
    }

    // MARK: Output

    private mutating func apply(_ fault: ServerFault) {
        switch fault {
        case .reply(let reply):
            write(reply)
        case .replyAndClose(let reply):
            write(reply)
            close()
        case .closeWithoutReply:
            close()
        case .delay:
            break  // filtered out by immediate(_:) and by the recipient's own handling
        }
    }

    /// `fault`, unless it is a ``ServerFault/delay(_:)``: only a recipient's answer can be
    /// held, so elsewhere a delay is the normal answer.
    private func immediate(_ fault: ServerFault?) -> ServerFault? {
        if case .delay = fault { return nil }
        return fault
    }

    /// Holds what is written from here on, and the reading, for `duration`: the replies so
    /// far go out first.
    private mutating func hold(for duration: Duration) {
        if !output.isEmpty {
            act(.write(output))
            output = []
        }
        act(.hold(duration))
        phase = .held
    }

    /// Appends a one-line reply straight to the output (no reply value, no strings).
    private mutating func reply(_ code: SMTPStatusCode, _ enhanced: EnhancedStatusCode?, _ text: String) {
        reserveOutput()
        SMTPReply.encodeLine(code: code, enhancedCode: configuration.enhancedStatusCodes ? enhanced : nil, text: text,
                             isLast: true, into: &output)
    }

    /// A one-line reply whose text is `text` then `detail` (a store's message id), with no
    /// string built for the two.
    private mutating func reply(
        _ code: SMTPStatusCode, _ enhanced: EnhancedStatusCode?, _ text: String, then detail: String
    ) {
        reply(code, enhanced, text)
        output.removeLast(2)  // the CRLF goes after the detail
        output.append(contentsOf: detail.utf8)
        output.append(13)
        output.append(10)
    }

    private mutating func write(_ reply: SMTPReply) {
        reserveOutput()
        reply.encode(into: &output)
    }

    /// Each batch of replies leaves in an array of its own (a write action); room for a
    /// message's replies at once saves growing it from nothing a few octets at a time.
    private mutating func reserveOutput() {
        if output.capacity == 0 { output.reserveCapacity(256) }
    }

    /// Adds an action for the driver. A batch's list leaves with it; most batches end a
    /// message, with a write and a delivery, so the next list starts with room for a few.
    private mutating func act(_ action: Action) {
        if actions.capacity == 0 { actions.reserveCapacity(4) }
        actions.append(action)
    }

    private mutating func close() {
        phase = .closed
        input = []
        inputIndex = 0
        transaction = nil
        content = []
        if !output.isEmpty {
            act(.write(output))
            output = []
        }
        act(.close)
    }

    private mutating func finish() -> [Action] {
        if !output.isEmpty {
            act(.write(output))
            output = []
        }
        defer { actions = [] }
        return actions
    }

    /// `bytes` as a string with the ASCII letters upper-cased and every other byte kept.
    /// Splits `FROM:<path> params` into the path and the parameters.
    private static func path(after keyword: StaticString, in argument: ArraySlice<UInt8>)
        -> (path: ArraySlice<UInt8>, parameters: ArraySlice<UInt8>)?
    {
        // The keyword is matched byte for byte, ASCII letters in either case: uppercasing the
        // whole argument could turn other characters into ASCII ("ı" becomes "I"). Every
        // delimiter is ASCII, so each cut falls between scalars.
        let keywordEnd = argument.startIndex + keyword.utf8CodeUnitCount
        guard argument.count >= keyword.utf8CodeUnitCount, matches(argument[..<keywordEnd], keyword) else { return nil }
        var open = keywordEnd
        while open < argument.endIndex, argument[open] == UInt8(ascii: " ") { open += 1 }  // "FROM: <a@b>"
        guard open < argument.endIndex, argument[open] == UInt8(ascii: "<") else { return nil }
        let start = open + 1
        guard let close = argument[start...].firstIndex(of: UInt8(ascii: ">")) else { return nil }
        var first = close + 1
        var end = argument.endIndex
        while first < end, argument[first] == UInt8(ascii: " ") { first += 1 }
        while first < end, argument[end - 1] == UInt8(ascii: " ") { end -= 1 }
        return (argument[start..<close], argument[first..<end])
    }
}

/// A message the server took: its envelope and content (line endings as sent, CRLF).
public struct ReceivedMessage: Hashable, Sendable {
    /// The reverse path (nil for `<>`).
    public let from: EnvelopeAddress?
    /// The accepted recipients.
    public let recipients: [EnvelopeAddress]
    /// The MAIL parameters.
    public let parameters: MailParameters
    /// The content, unstuffed.
    public let content: [UInt8]
    /// The client's EHLO/HELO name.
    public let heloName: String
    /// The user that authenticated, if any.
    public let authenticatedUser: String?
    /// Whether the message came over TLS.
    public let wasSecure: Bool
}

/// What the driver says after storing a message.
public enum DeliveryResult: Hashable, Sendable {
    /// Stored durably under this id: the client gets 250.
    case stored(id: String)
    /// Not stored: the client gets this reply.
    case failed(SMTPReply)
}

/// A moment at which a ``ServerPolicy`` may inject a fault.
public enum ServerPolicyEvent: Hashable, Sendable {
    /// The connection was accepted (before the greeting).
    case connected
    /// A command arrived (its verb, upper-cased), before it is handled.
    case command(String)
    /// A recipient passed the checks and would be accepted; `sender` is the transaction's
    /// envelope sender (nil for the null sender `<>`), so that a policy can greylist a
    /// sender and recipient pair.
    case recipient(EnvelopeAddress, sender: EnvelopeAddress?)
    /// A message's content ended and would be stored.
    case endOfData
}

/// A fault to inject instead of the normal answer.
public enum ServerFault: Hashable, Sendable {
    /// Answer this instead.
    case reply(SMTPReply)
    /// Answer this (a 421) and close.
    case replyAndClose(SMTPReply)
    /// Close without a word.
    case closeWithoutReply
    /// Answer as normal, but only after this long, and read nothing more meanwhile (a tarpit,
    /// as some providers hold each RCPT). Only for a ``ServerPolicyEvent/recipient(_:sender:)``;
    /// elsewhere it answers at once.
    case delay(Duration)
}

/// Decides faults for tests and load work; the sink's is seeded so runs repeat.
public protocol ServerPolicy: Sendable {
    /// A fault for `event`, or nil for the normal answer.
    mutating func decide(_ event: ServerPolicyEvent) -> ServerFault?
}

/// No faults: every answer is the normal one.
public struct NoFaults: ServerPolicy {
    /// No faults.
    public init() {}
    public mutating func decide(_ event: ServerPolicyEvent) -> ServerFault? { nil }
}

extension StringProtocol {
    /// Without leading and trailing spaces.
    var trimmingSpaces: String {
        var text = Substring(self)
        while text.first == " " { text = text.dropFirst() }
        while text.last == " " { text = text.dropLast() }
        return String(text)
    }
}
