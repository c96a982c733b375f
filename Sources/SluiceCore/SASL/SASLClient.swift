/// One client-side SASL exchange as a state machine: it gives the `AUTH` command to start,
/// answers each decoded 334 challenge, and checks the outcome. It does no I/O.
///
/// A challenge that is malformed, or more than the mechanism expects, is answered with a
/// cancel (`*`), and no secret is sent after it. SCRAM verifies the server's signature, so a
/// server that does not know the password is not trusted even if it says 235.
public struct SASLClient: Sendable {
    /// What to send next.
    public enum Step: Sendable, Hashable {
        /// Send this response (base64-encoded by ``SMTPCommand/authResponse(_:)``).
        case respond([UInt8])
        /// Send `*` to abandon the exchange, for this reason.
        case cancel(SASLError)
    }

    /// The mechanism in use.
    public let mechanism: SASLMechanism
    private let credentials: SASLCredentials
    private let cryptography: any SASLCryptography
    private let host: String
    private let port: Int
    private var state: State = .initial

    private enum State: Sendable {
        case initial
        case loginSentNothing
        case loginSentUsername
        case awaitingOutcome
        case oauthErrorAnswered
        case scramSentClientFirst(clientFirstBare: String, nonce: String)
        case scramSentClientFinal(serverSignature: [UInt8])
        case scramServerVerified
        case failed
    }

    /// An exchange for `mechanism`. `host` and `port` are sent by OAUTHBEARER.
    public init(mechanism: SASLMechanism, credentials: SASLCredentials, cryptography: any SASLCryptography,
                host: String, port: Int) {
        precondition(mechanism.usesBearerToken == credentials.isBearerToken,
                     "\(mechanism) does not match the kind of credentials")
        self.mechanism = mechanism
        self.credentials = credentials
        self.cryptography = cryptography
        self.host = host
        self.port = port
    }

    private var secret: String {
        switch credentials.secret {
        case .password(let password): password
        case .bearerToken(let token): token
        }
    }

    /// The `AUTH` command that starts the exchange, with an initial response where the
    /// mechanism has one (RFC 4954 §4).
    public mutating func start() -> SMTPCommand {
        guard case .initial = state else { preconditionFailure("a SASL exchange starts once") }
        switch mechanism {
        case .plain:
            state = .awaitingOutcome
            return .auth(mechanism: mechanism.rawValue, initialResponse: [0] + Array(credentials.username.utf8) + [0] + Array(secret.utf8))
        case .login:
            state = .loginSentNothing
            return .auth(mechanism: mechanism.rawValue, initialResponse: nil)
        case .cramMD5:
            state = .loginSentNothing  // awaiting the one challenge
            return .auth(mechanism: mechanism.rawValue, initialResponse: nil)
        case .xoauth2:
            state = .awaitingOutcome
            let response = "user=\(credentials.username)\u{1}auth=Bearer \(secret)\u{1}\u{1}"
            return .auth(mechanism: mechanism.rawValue, initialResponse: Array(response.utf8))
        case .oauthBearer:
            state = .awaitingOutcome
            let response = "n,a=\(Self.saslName(credentials.username)),\u{1}host=\(host)\u{1}port=\(port)\u{1}auth=Bearer \(secret)\u{1}\u{1}"
            return .auth(mechanism: mechanism.rawValue, initialResponse: Array(response.utf8))
        case .scramSHA1, .scramSHA256:
            let nonce = Base64.encode(cryptography.randomBytes(18))
            return startSCRAM(nonce: nonce)
        }
    }

    /// Starts SCRAM with a given client nonce (tests use the RFCs' nonces).
    mutating func startSCRAM(nonce: String) -> SMTPCommand {
        let clientFirstBare = "n=\(Self.saslName(credentials.username)),r=\(nonce)"
        state = .scramSentClientFirst(clientFirstBare: clientFirstBare, nonce: nonce)
        return .auth(mechanism: mechanism.rawValue, initialResponse: Array(("n,," + clientFirstBare).utf8))
    }

    /// Answers a 334 challenge; `text` is the challenge as the server sent it (base64).
    public mutating func challengeReceived(_ text: String) -> Step {
        guard let challenge = text.isEmpty ? [] : Base64.decode(text) else {
            return fail(.malformedChallenge, "the challenge is not valid base64")
        }
        switch (mechanism, state) {
        case (.login, .loginSentNothing):
            state = .loginSentUsername
            return .respond(Array(credentials.username.utf8))
        case (.login, .loginSentUsername):
            state = .awaitingOutcome
            return .respond(Array(secret.utf8))
        case (.cramMD5, .loginSentNothing):
            guard !challenge.isEmpty else { return fail(.malformedChallenge, "an empty CRAM-MD5 challenge") }
            state = .awaitingOutcome
            let digest = cryptography.hmac(.md5, key: Array(secret.utf8), data: challenge)
            return .respond(Array(credentials.username.utf8) + [UInt8(ascii: " ")] + Array(Hex.lowercase(digest).utf8))
        case (.xoauth2, .awaitingOutcome):
            // The server's JSON error; RFC-less but documented: answer with an empty line,
            // the server then fails the exchange.
            state = .oauthErrorAnswered
            return .respond([])
        case (.oauthBearer, .awaitingOutcome):
            state = .oauthErrorAnswered
            return .respond([0x01])  // RFC 7628 §3.2.3: a lone kvsep
        case (.scramSHA1, .scramSentClientFirst(let bare, let nonce)), (.scramSHA256, .scramSentClientFirst(let bare, let nonce)):
            return scramClientFinal(serverFirst: challenge, clientFirstBare: bare, nonce: nonce)
        case (.scramSHA1, .scramSentClientFinal(let expected)), (.scramSHA256, .scramSentClientFinal(let expected)):
            return scramVerify(serverFinal: challenge, expected: expected)
        default:
            return fail(.malformedChallenge, "an unexpected challenge for \(mechanism)")
        }
    }

    /// Checks the exchange at the server's 235: for SCRAM, the server must have proved itself.
    public func succeeded() throws(SASLError) {
        switch state {
        case .awaitingOutcome, .scramServerVerified:
            return
        case .scramSentClientFinal:
            throw SASLError(.serverNotAuthenticated, "the server said 235 without sending its SCRAM signature")
        case .initial, .loginSentNothing, .loginSentUsername, .scramSentClientFirst, .oauthErrorAnswered, .failed:
            throw SASLError(.serverNotAuthenticated, "the server said 235 before the exchange was complete")
        }
    }

    private mutating func fail(_ kind: SASLError.Kind, _ reason: String) -> Step {
        state = .failed
        return .cancel(SASLError(kind, reason))
    }

    // MARK: SCRAM (RFC 5802, RFC 7677)

    /// The most PBKDF2 iterations a server may ask of SCRAM.
    public static let maximumSCRAMIterations = 100_000

    private var scramHash: SASLHashAlgorithm { mechanism == .scramSHA1 ? .sha1 : .sha256 }

    private mutating func scramClientFinal(serverFirst: [UInt8], clientFirstBare: String, nonce: String) -> Step {
        let serverFirstText = String(decoding: serverFirst, as: UTF8.self)
        let attributes = Self.attributes(serverFirstText)
        if let error = attributes["e"] { return fail(.serverError, "the server said e=\(error)") }
        guard let serverNonce = attributes["r"], serverNonce.hasPrefix(nonce), serverNonce.count > nonce.count else {
            return fail(.malformedChallenge, "the server nonce does not extend ours")
        }
        guard let saltText = attributes["s"], let salt = Base64.decode(saltText), !salt.isEmpty else {
            return fail(.malformedChallenge, "no valid salt")
        }
        guard let iterationText = attributes["i"], let iterations = Int(iterationText), iterations >= 1 else {
            return fail(.malformedChallenge, "no valid iteration count")
        }
        // The count is the server's to choose and costs us CPU: a hostile server could make
        // the client spin. RFC 7677 suggests 4,096 as a minimum; common servers use 4,096 to
        // 15,000.
        guard iterations <= Self.maximumSCRAMIterations else {
            return fail(.malformedChallenge,
                        "the server asks for \(iterations) SCRAM iterations; at most \(Self.maximumSCRAMIterations) are done")
        }
        let hash = scramHash
        let salted = cryptography.pbkdf2(hash, password: Array(secret.utf8), salt: salt, iterations: iterations,
                                          length: hash.digestLength)
        let clientKey = cryptography.hmac(hash, key: salted, data: Array("Client Key".utf8))
        let storedKey = cryptography.hash(hash, clientKey)
        let clientFinalWithoutProof = "c=biws,r=\(serverNonce)"
        let authMessage = Array("\(clientFirstBare),\(serverFirstText),\(clientFinalWithoutProof)".utf8)
        let clientSignature = cryptography.hmac(hash, key: storedKey, data: authMessage)
        let proof = zip(clientKey, clientSignature).map { $0 ^ $1 }
        let serverKey = cryptography.hmac(hash, key: salted, data: Array("Server Key".utf8))
        state = .scramSentClientFinal(serverSignature: cryptography.hmac(hash, key: serverKey, data: authMessage))
        return .respond(Array("\(clientFinalWithoutProof),p=\(Base64.encode(proof))".utf8))
    }

    private mutating func scramVerify(serverFinal: [UInt8], expected: [UInt8]) -> Step {
        let attributes = Self.attributes(String(decoding: serverFinal, as: UTF8.self))
        if let error = attributes["e"] { return fail(.serverError, "the server said e=\(error)") }
        guard let verifier = attributes["v"], let signature = Base64.decode(verifier), signature == expected else {
            return fail(.serverNotAuthenticated, "the server's signature does not match")
        }
        state = .scramServerVerified
        return .respond([])
    }

    /// `a=1,b=2` into a dictionary (the first occurrence of each key).
    private static func attributes(_ text: String) -> [String: String] {
        var result: [String: String] = [:]
        for part in text.split(separator: ",") {
            guard let equals = part.firstIndex(of: "="), part.distance(from: part.startIndex, to: equals) == 1 else { continue }
            let key = String(part[..<equals])
            if result[key] == nil { result[key] = String(part[part.index(after: equals)...]) }
        }
        return result
    }

    /// A saslname: `=` as `=3D` and `,` as `=2C` (RFC 5802 §5.1).
    static func saslName(_ name: String) -> String {
        var escaped = ""
        for character in name {
            switch character {
            case "=": escaped += "=3D"
            case ",": escaped += "=2C"
            default: escaped.append(character)
            }
        }
        return escaped
    }
}
