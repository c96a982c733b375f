/// A three-digit SMTP reply code (RFC 5321 §4.2), with a named constant for each code users
/// of `System.Net.Mail.SmtpStatusCode` know and for the AUTH codes of RFC 4954.
///
/// Any code a server sends is carried as it is; replies are judged by ``kind`` — their first
/// digit — including codes this type has no name for.
public struct SMTPStatusCode: RawRepresentable, Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The code, 200 through 599.
    public let rawValue: Int

    /// A code from 200 through 599; nil otherwise (such a reply is a protocol error).
    public init?(rawValue: Int) {
        guard (200...599).contains(rawValue) else { return nil }
        self.rawValue = rawValue
    }

    private init(_ code: Int) { rawValue = code }

    /// What a reply's first digit says (RFC 5321 §4.2.1).
    public enum Kind: Sendable, Hashable {
        /// 2yz: the command succeeded.
        case positiveCompletion
        /// 3yz: go on (send the data, answer the challenge).
        case positiveIntermediate
        /// 4yz: failed for now; the same command may succeed later.
        case transientNegative
        /// 5yz: failed; do not repeat it unchanged.
        case permanentNegative
    }

    /// The class of the reply, from its first digit.
    public var kind: Kind {
        switch rawValue / 100 {
        case 2: .positiveCompletion
        case 3: .positiveIntermediate
        case 4: .transientNegative
        default: .permanentNegative
        }
    }

    /// 2yz.
    public var isPositiveCompletion: Bool { kind == .positiveCompletion }
    /// 3yz.
    public var isPositiveIntermediate: Bool { kind == .positiveIntermediate }
    /// 4yz.
    public var isTransient: Bool { kind == .transientNegative }
    /// 5yz.
    public var isPermanent: Bool { kind == .permanentNegative }

    public var description: String { String(rawValue) }

    public static func < (lhs: SMTPStatusCode, rhs: SMTPStatusCode) -> Bool { lhs.rawValue < rhs.rawValue }

    // MARK: The codes of .NET's SmtpStatusCode

    /// 211: a system status or system help reply.
    public static let systemStatus = SMTPStatusCode(211)
    /// 214: a help message.
    public static let helpMessage = SMTPStatusCode(214)
    /// 220: the service is ready.
    public static let serviceReady = SMTPStatusCode(220)
    /// 221: the service is closing the transmission channel.
    public static let serviceClosingTransmissionChannel = SMTPStatusCode(221)
    /// 250: the requested action was completed.
    public static let ok = SMTPStatusCode(250)
    /// 251: the user is not local; the server will forward.
    public static let userNotLocalWillForward = SMTPStatusCode(251)
    /// 252: the user cannot be verified, but the server will attempt delivery.
    public static let cannotVerifyUserWillAttemptDelivery = SMTPStatusCode(252)
    /// 354: start mail input; end with `<CRLF>.<CRLF>`.
    public static let startMailInput = SMTPStatusCode(354)
    /// 421: the service is not available and is closing the channel.
    public static let serviceNotAvailable = SMTPStatusCode(421)
    /// 450: the mailbox is unavailable (busy) for now.
    public static let mailboxBusy = SMTPStatusCode(450)
    /// 451: a local error in processing.
    public static let localErrorInProcessing = SMTPStatusCode(451)
    /// 452: insufficient system storage (also: too many recipients).
    public static let insufficientStorage = SMTPStatusCode(452)
    /// 454: TLS not available for now, or a temporary authentication failure.
    public static let clientNotPermitted = SMTPStatusCode(454)
    /// 500: syntax error, command unrecognised.
    public static let commandUnrecognized = SMTPStatusCode(500)
    /// 501: syntax error in parameters or arguments.
    public static let syntaxError = SMTPStatusCode(501)
    /// 502: command not implemented.
    public static let commandNotImplemented = SMTPStatusCode(502)
    /// 503: bad sequence of commands.
    public static let badCommandSequence = SMTPStatusCode(503)
    /// 504: command parameter not implemented.
    public static let commandParameterNotImplemented = SMTPStatusCode(504)
    /// 530: must issue STARTTLS first (also: authentication required).
    public static let mustIssueStartTlsFirst = SMTPStatusCode(530)
    /// 550: the mailbox is unavailable (not found, no access, policy).
    public static let mailboxUnavailable = SMTPStatusCode(550)
    /// 551: the user is not local; try the given path.
    public static let userNotLocalTryAlternatePath = SMTPStatusCode(551)
    /// 552: exceeded storage allocation (message too large).
    public static let exceededStorageAllocation = SMTPStatusCode(552)
    /// 553: the mailbox name is not allowed.
    public static let mailboxNameNotAllowed = SMTPStatusCode(553)
    /// 554: the transaction failed (or, as a greeting, no SMTP service here).
    public static let transactionFailed = SMTPStatusCode(554)

    // MARK: AUTH (RFC 4954)

    /// 235: authentication succeeded.
    public static let authenticationSucceeded = SMTPStatusCode(235)
    /// 334: a server challenge; answer it.
    public static let serverChallenge = SMTPStatusCode(334)
    /// 432: a password transition is needed.
    public static let passwordTransitionNeeded = SMTPStatusCode(432)
    /// 454: a temporary authentication failure.
    public static let temporaryAuthenticationFailure = SMTPStatusCode(454)
    /// 534: the authentication mechanism is too weak.
    public static let authenticationMechanismTooWeak = SMTPStatusCode(534)
    /// 535: the credentials are invalid.
    public static let authenticationCredentialsInvalid = SMTPStatusCode(535)
    /// 538: encryption is required for the requested mechanism.
    public static let encryptionRequiredForAuthentication = SMTPStatusCode(538)
}
