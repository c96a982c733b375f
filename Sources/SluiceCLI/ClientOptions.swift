import ArgumentParser
import Foundation
import Sluice

/// The connection, TLS and AUTH flags `send` and `bench` share.
struct ClientOptions: ParsableArguments {
    @Option(help: "starttls (required; the default), starttls-opportunistic, tls (implicit, port 465) or none.")
    var security: SecurityMode?

    /// The security asked for, starttls when none was.
    var securityMode: SecurityMode { security ?? .starttls }
    @Option(name: .customLong("ca-file"), help: "Trust the CA certificates in this PEM file (besides the system's).")
    var caFile: String?
    @Flag(name: .customLong("insecure-skip-verify"), help: "Do not verify the server's certificate (tests only).")
    var insecureSkipVerify = false
    @Option(help: "The name to send in EHLO.")
    var helo = "localhost"
    @Option(help: "User name for AUTH.")
    var user: String?
    @Option(name: .customLong("password-env"), help: "Read the password from this environment variable.")
    var passwordEnv: String?
    @Option(name: .customLong("password-file"), help: "Read the password from the first line of this file.")
    var passwordFile: String?
    @Option(name: .customLong("oauth2-token-env"), help: "Read an OAuth 2.0 bearer token from this environment variable.")
    var oauth2TokenEnv: String?
    @Option(help: "auto, plain, login, cram-md5, xoauth2, oauthbearer, scram-sha-1 or scram-sha-256.")
    var auth = "auto"
    @Flag(name: .customLong("allow-plaintext-auth"), help: "Allow AUTH over a connection that is not encrypted.")
    var allowPlaintextAuth = false
    @Option(name: .customLong("dkim-domain"), help: "Sign with DKIM for this domain (d=).")
    var dkimDomain: String?
    @Option(name: .customLong("dkim-selector"), help: "The DKIM selector (s=); repeatable, one per --dkim-key.")
    var dkimSelector: [String] = []
    @Option(name: .customLong("dkim-key"), help: "A DKIM private key, RSA or Ed25519 PEM; repeatable for several signatures.")
    var dkimKey: [String] = []
    @Option(name: .customLong("bounce-rules"),
            help: "Bounce class rules, one a line (CLASS CODE ENHANCED REGEX), tried before the standard ones.")
    var bounceRules: String?

    enum SecurityMode: String, ExpressibleByArgument, CaseIterable {
        case starttls, starttlsOpportunistic = "starttls-opportunistic", tls, none

        var security: SMTPClient.Security {
            switch self {
            case .starttls: .startTLS
            case .starttlsOpportunistic: .opportunisticStartTLS
            case .tls: .implicitTLS
            case .none: .none
            }
        }
    }

    /// Splits `HOST[:PORT]` (IPv6 as `[::1]:PORT`); nil port when none is given.
    static func parseServer(_ text: String) throws -> (host: String, port: Int?) {
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]") else { throw ValidationError("'\(text)' has no closing ']'") }
            let host = String(text[text.index(after: text.startIndex)..<close])
            let rest = text[text.index(after: close)...]
            if rest.isEmpty { return (host, nil) }
            guard rest.hasPrefix(":"), let port = Int(rest.dropFirst()), (1...65535).contains(port) else {
                throw ValidationError("'\(text)' is not [HOST]:PORT")
            }
            return (host, port)
        }
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count <= 2, let host = parts.first, !host.isEmpty else { throw ValidationError("'\(text)' is not HOST[:PORT]") }
        guard parts.count == 2 else { return (String(host), nil) }
        guard let port = Int(parts[1]), (1...65535).contains(port) else {
            throw ValidationError("'\(parts[1])' is not a port (1–65535)")
        }
        return (String(host), port)
    }

    /// A client configuration for `host` from these flags.
    func configuration(host: String, port: Int?) throws -> SMTPClient.Configuration {
        var configuration = SMTPClient.Configuration(host: host, port: port, security: securityMode.security)
        configuration.ehloName = helo
        configuration.tls = .client(
            trustRoots: caFile.map { .systemAnd(pemFile: $0) } ?? .system,
            certificateVerification: insecureSkipVerify ? .none : .fullVerification)
        configuration.allowPlaintextAuthentication = allowPlaintextAuth
        configuration.dkim = try dkimSigners()
        if let bounceRules {
            do {
                configuration.bounceClassifier = try BounceClassifier(parsing: try readTextFile(bounceRules, flag: "--bounce-rules"))
            } catch let error as BounceRuleError {
                throw ValidationError("--bounce-rules \(bounceRules): \(error)")
            }
        }
        if auth != "auto" {
            guard let mechanism = SASLMechanism.allCases.first(where: { $0.rawValue.lowercased() == auth.lowercased() }) else {
                throw ValidationError("--auth \(auth) is not one of auto, "
                                      + SASLMechanism.allCases.map { $0.rawValue.lowercased() }.joined(separator: ", "))
            }
            configuration.authenticationMechanism = mechanism
        }
        if let user {
            if let variable = oauth2TokenEnv {
                guard let token = ProcessInfo.processInfo.environment[variable], !token.isEmpty else {
                    throw ValidationError("--oauth2-token-env: $\(variable) is not set")
                }
                configuration.credentials = .oauth2(username: user, token: { token })
            } else if let variable = passwordEnv {
                guard let password = ProcessInfo.processInfo.environment[variable] else {
                    throw ValidationError("--password-env: $\(variable) is not set")
                }
                configuration.credentials = .password(username: user, password: password)
            } else if let file = passwordFile {
                let text = try readTextFile(file, flag: "--password-file")
                let password = text.split(separator: "\n", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
                configuration.credentials = .password(username: user, password: password.trimmingCharacters(in: ["\r"]))
            } else {
                throw ValidationError("--user needs --password-env, --password-file or --oauth2-token-env")
            }
        } else if passwordEnv != nil || passwordFile != nil || oauth2TokenEnv != nil {
            throw ValidationError("a password or token needs --user")
        }
        return configuration
    }
}

extension ClientOptions {
    /// The DKIM signers the flags ask for: one per --dkim-selector/--dkim-key pair.
    func dkimSigners() throws -> [DKIMSigner] {
        guard dkimDomain != nil || !dkimSelector.isEmpty || !dkimKey.isEmpty else { return [] }
        guard let dkimDomain, !dkimKey.isEmpty, dkimSelector.count == dkimKey.count else {
            throw ValidationError("DKIM needs --dkim-domain and one --dkim-selector for each --dkim-key")
        }
        return try zip(dkimSelector, dkimKey).map { selector, key in
            do {
                return try DKIMSigner(domain: dkimDomain, selector: selector, privateKeyFile: key)
            } catch {
                throw ValidationError("--dkim-key \(key): \(error)")
            }
        }
    }
}
