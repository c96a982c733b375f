/// A SASL mechanism SMTP AUTH can use (RFC 4954).
public enum SASLMechanism: String, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// RFC 4616.
    case plain = "PLAIN"
    /// The de-facto LOGIN mechanism (user name, then password, each as a challenge answer).
    case login = "LOGIN"
    /// RFC 2195.
    case cramMD5 = "CRAM-MD5"
    /// Google's and Microsoft's XOAUTH2.
    case xoauth2 = "XOAUTH2"
    /// RFC 7628.
    case oauthBearer = "OAUTHBEARER"
    /// RFC 5802.
    case scramSHA1 = "SCRAM-SHA-1"
    /// RFC 7677.
    case scramSHA256 = "SCRAM-SHA-256"

    public var description: String { rawValue }

    /// Whether the mechanism takes a bearer token rather than a password.
    public var usesBearerToken: Bool { self == .xoauth2 || self == .oauthBearer }

    /// Password mechanisms, strongest first.
    static let passwordPreference: [SASLMechanism] = [.scramSHA256, .scramSHA1, .cramMD5, .plain, .login]
    /// Token mechanisms, standard first.
    static let tokenPreference: [SASLMechanism] = [.oauthBearer, .xoauth2]

    /// The mechanism to use: `forced` if given (and offered), else the strongest one that both
    /// the server offers and the credentials can use.
    public static func choose(
        offered: [String], credentials: SASLCredentials, forced: SASLMechanism? = nil
    ) throws(SASLError) -> SASLMechanism {
        let offered = Set(offered.map { $0.uppercased() })
        if let forced {
            guard forced.usesBearerToken == credentials.isBearerToken else {
                throw SASLError(.noCommonMechanism, "\(forced) needs \(forced.usesBearerToken ? "a bearer token" : "a password")")
            }
            guard offered.contains(forced.rawValue) else {
                throw SASLError(.noCommonMechanism, "the server does not offer \(forced) (it offers \(offered.sorted().joined(separator: " ")))")
            }
            return forced
        }
        let preference = credentials.isBearerToken ? tokenPreference : passwordPreference
        guard let chosen = preference.first(where: { offered.contains($0.rawValue) }) else {
            throw SASLError(.noCommonMechanism,
                            "the server offers \(offered.isEmpty ? "no mechanism" : offered.sorted().joined(separator: " ")); these credentials need one of \(preference.map(\.rawValue).joined(separator: " "))")
        }
        return chosen
    }
}
