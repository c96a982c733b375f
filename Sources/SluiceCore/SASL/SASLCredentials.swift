/// The hash functions SASL needs, injected so that SluiceCore stays pure Swift. The transport
/// layer provides them from OpenSSL.
public protocol SASLCryptography: Sendable {
    /// The digest of `data`.
    func hash(_ algorithm: SASLHashAlgorithm, _ data: [UInt8]) -> [UInt8]
    /// HMAC of `data` under `key`.
    func hmac(_ algorithm: SASLHashAlgorithm, key: [UInt8], data: [UInt8]) -> [UInt8]
    /// PBKDF2 with HMAC (SCRAM's `Hi()`, RFC 5802 §2.2).
    func pbkdf2(_ algorithm: SASLHashAlgorithm, password: [UInt8], salt: [UInt8], iterations: Int, length: Int) -> [UInt8]
    /// Cryptographically random bytes (for nonces).
    func randomBytes(_ count: Int) -> [UInt8]
}

/// A hash algorithm a SASL mechanism uses.
public enum SASLHashAlgorithm: Sendable, Hashable {
    /// MD5 (CRAM-MD5 only).
    case md5
    /// SHA-1 (SCRAM-SHA-1).
    case sha1
    /// SHA-256 (SCRAM-SHA-256).
    case sha256

    /// The digest length in bytes.
    public var digestLength: Int {
        switch self {
        case .md5: 16
        case .sha1: 20
        case .sha256: 32
        }
    }
}

/// What the client authenticates with: a password, or an OAuth 2.0 bearer token.
///
/// Values are checked when made: CR, LF and NUL are refused, since they could end a protocol
/// line or split a SASL message (RFC 4954, RFC 4616).
public struct SASLCredentials: Sendable, Hashable, CustomStringConvertible {
    /// The user name.
    public let username: String
    /// The secret: a password or a bearer token.
    let secret: Secret

    enum Secret: Sendable, Hashable {
        case password(String)
        case bearerToken(String)
    }

    /// A user name and password.
    public static func password(username: String, password: String) throws(SASLError) -> SASLCredentials {
        try SASLCredentials(username: username, secret: .password(password))
    }

    /// A user name and an OAuth 2.0 access token (for XOAUTH2 and OAUTHBEARER).
    public static func bearerToken(username: String, token: String) throws(SASLError) -> SASLCredentials {
        try SASLCredentials(username: username, secret: .bearerToken(token))
    }

    private init(username: String, secret: Secret) throws(SASLError) {
        let value: String
        switch secret {
        case .password(let password): value = password
        case .bearerToken(let token): value = token
        }
        for (what, text) in [("user name", username), ("secret", value)] {
            guard !text.isEmpty else { throw SASLError(.invalidCredentials, "the \(what) is empty") }
            guard !text.utf8.contains(where: { $0 == 0 || $0 == 10 || $0 == 13 }) else {
                throw SASLError(.invalidCredentials, "the \(what) contains CR, LF or NUL")
            }
        }
        self.username = username
        self.secret = secret
    }

    /// Whether these credentials are a bearer token.
    public var isBearerToken: Bool {
        if case .bearerToken = secret { return true }
        return false
    }

    /// Never shows the secret.
    public var description: String { "\(username) (\(isBearerToken ? "bearer token" : "password") redacted)" }
}

/// A SASL failure on our side: bad credentials given to us, no usable mechanism, or a server
/// whose challenge or proof could not be trusted.
public struct SASLError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What kind of failure, in a form that can be matched.
    public struct Kind: Hashable, Sendable, CustomStringConvertible {
        /// The kind in words, as messages say it.
        public let description: String
        private init(_ description: String) { self.description = description }

        /// The credentials cannot be sent (empty, or with CR, LF or NUL).
        public static let invalidCredentials = Kind("invalid credentials")
        /// The server offers no mechanism these credentials can use.
        public static let noCommonMechanism = Kind("no common mechanism")
        /// A 334 challenge was not valid base64 or not what the mechanism expects.
        public static let malformedChallenge = Kind("malformed challenge")
        /// SCRAM: the server's signature did not prove it knows the password.
        public static let serverNotAuthenticated = Kind("server not authenticated")
        /// The server reported an error inside the SASL exchange (SCRAM `e=`, OAuth JSON).
        public static let serverError = Kind("server error")
    }

    /// What failed.
    public let kind: Kind
    /// Why, in words (never containing a secret).
    public let reason: String

    /// Creates an error.
    public init(_ kind: Kind, _ reason: String) {
        self.kind = kind
        self.reason = reason
    }

    public var description: String { "SASL \(kind): \(reason)" }
}
