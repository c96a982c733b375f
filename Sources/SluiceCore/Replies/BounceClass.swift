/// Why a recipient was refused or deferred, in the terms a bulk sender acts on: remove the
/// address, fix the authentication, slow down, shrink the message, or wait.
///
/// Every refused or deferred recipient gets one, from its reply (``BounceClassifier``) or,
/// when no reply came, from the failure. The raw values are the names in JSON, metrics and
/// the outbox.
public enum BounceClass: String, Sendable, Hashable, Codable, CaseIterable, CustomStringConvertible {
    /// The mailbox does not exist (`5.1.1`, "user unknown").
    case invalidRecipient = "invalid-recipient"
    /// The domain does not exist or takes no mail (`5.1.2`, null MX, `5.1.10`).
    case badDomain = "bad-domain"
    /// The mailbox exists but is disabled or no longer used (`5.2.1`).
    case inactiveMailbox = "inactive-mailbox"
    /// The mailbox is over its quota (`4.2.2`, `5.2.2`).
    case mailboxFull = "mailbox-full"
    /// The message is larger than the server takes (`5.2.3`, `5.3.4`).
    case messageTooLarge = "message-too-large"
    /// The content was refused: spam, a virus, an attachment, a media type (`5.6.x`).
    case content
    /// The sender's policy or reputation: a block list, a refused IP address, "not
    /// authorized" (`5.7.x` otherwise unexplained).
    case policy
    /// The sender's domain failed SPF, DKIM or DMARC (`5.7.20`–`5.7.26`, "DMARC policy").
    case authentication
    /// Too much too fast: rate limits, too many connections, congestion (`4.4.5`, `4.7.28`).
    case rateLimited = "rate-limited"
    /// The mail could not be routed: relaying denied, no route, a loop (`5.4.x`).
    case routing
    /// A protocol error: a command or parameter the server did not take (`5.5.x`, `500`–`504`).
    case `protocol`
    /// TLS was required, failed, or a certificate did not verify (`5.7.10`, `5.7.11`).
    case tls
    /// No reply came: the connection failed, broke, or timed out.
    case connection
    /// None of the above.
    case other

    public var description: String { rawValue }
}

/// One rule of a ``BounceClassifier``: a reply that matches every part given has its class.
///
/// Codes are patterns with `x` for any digit: `"550"`, `"55x"`, `"5xx"` for the reply code;
/// `"5.1.1"`, `"x.7.x"`, `"x.7.20"` for the enhanced code (a rule with an enhanced pattern never
/// matches a reply without one). The text is a regular expression, matched without regard to
/// case anywhere in the reply's text (every line, the enhanced code left out).
public struct BounceRule: Sendable, CustomStringConvertible {
    /// The class a matching reply gets.
    public let bounceClass: BounceClass
    /// The reply code pattern, or nil for any code.
    public let code: String?
    /// The enhanced code pattern, or nil for any (or none).
    public let enhancedCode: String?
    /// The regular expression on the text, or nil for any text.
    public let text: String?

    private let codePattern: CodePattern?
    private let enhancedPattern: EnhancedPattern?
    private let expression: TextExpression?

    /// A rule; throws ``BounceRuleError`` when a pattern is not valid.
    public init(_ bounceClass: BounceClass, code: String? = nil, enhancedCode: String? = nil, text: String? = nil)
        throws(BounceRuleError) {
        self.bounceClass = bounceClass
        self.code = code
        self.enhancedCode = enhancedCode
        self.text = text
        if let code {
            guard let pattern = CodePattern(code) else {
                throw BounceRuleError("the reply code pattern \"\(code)\" is not three digits or x, such as 5xx or 550")
            }
            codePattern = pattern
        } else {
            codePattern = nil
        }
        if let enhancedCode {
            guard let pattern = EnhancedPattern(enhancedCode) else {
                throw BounceRuleError(
                    "the enhanced code pattern \"\(enhancedCode)\" is not class.subject.detail with x for any, such as x.7.1")
            }
            enhancedPattern = pattern
        } else {
            enhancedPattern = nil
        }
        if let text {
            do {
                expression = try TextExpression(text)
            } catch {
                throw BounceRuleError("the text \"\(text)\" is not a regular expression: \(error)")
            }
        } else {
            expression = nil
        }
    }

    /// Whether the reply matches: the cheap parts first, the text last.
    public func matches(code: Int, enhancedCode: EnhancedStatusCode?, text: String) -> Bool {
        if let codePattern, !codePattern.matches(code) { return false }
        if let enhancedPattern {
            guard let enhancedCode, enhancedPattern.matches(enhancedCode) else { return false }
        }
        if let expression, !expression.matches(text) { return false }
        return true
    }

    /// The rule in the form ``BounceClassifier/init(parsing:)`` reads.
    public var description: String {
        [bounceClass.rawValue, code ?? "-", enhancedCode ?? "-", text ?? ""].joined(separator: " ")
            .trimmingTrailingSpaces()
    }
}

/// A rule that could not be made or read, and why.
public struct BounceRuleError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What is wrong, in words.
    public let message: String
    init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// Gives each refused or deferred recipient its ``BounceClass``: the first rule that matches
/// its reply decides.
///
/// ``standard`` holds the rules Sluice ships: texts that mailbox providers and common servers
/// are known to send (Gmail, Yahoo, Microsoft, Postfix) before the enhanced codes of RFC 3463
/// and IANA's registry, then the bare reply codes of RFC 5321. A user's rules go in front:
///
/// ```swift
/// let classifier = try BounceClassifier(rules: [
///     BounceRule(.policy, code: "5xx", text: "listed at .*blocklist\\.example"),
/// ])
/// ```
public struct BounceClassifier: Sendable {
    /// The rules, in the order they are tried.
    public var rules: [BounceRule] { includesStandard ? ownRules + Self.standardRules : ownRules }

    private let ownRules: [BounceRule]
    /// The standard rules are compiled the first time a reply is classified, not when a
    /// classifier (or a client's configuration, which holds one) is made.
    private let includesStandard: Bool

    /// A classifier that tries `rules`, then (unless `standard` is false) the standard ones.
    public init(rules: [BounceRule], standard: Bool = true) {
        ownRules = rules
        includesStandard = standard
    }

    /// Reads rules, one a line, in front of the standard ones: a class, a reply code pattern,
    /// an enhanced code pattern (`-` for any), and the rest of the line as a regular
    /// expression on the text (nothing for any). Blank lines and lines starting with `#` are
    /// skipped.
    ///
    /// ```text
    /// # class      code  enhanced  text
    /// policy       5xx   -         listed at .*blocklist\.example
    /// rate-limited 4xx   x.7.x     slow down
    /// ```
    /// - Throws: ``BounceRuleError`` naming the line that is wrong.
    public init(parsing text: String, standard: Bool = true) throws(BounceRuleError) {
        var rules: [BounceRule] = []
        for (index, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.drop { $0 == " " || $0 == "\t" }
            if trimmed.isEmpty || trimmed.first == "#" || trimmed.allSatisfy({ $0 == " " || $0 == "\t" || $0 == "\r" }) {
                continue
            }
            var rest = Substring(trimmed)
            func field() -> Substring? {
                rest = rest.drop { $0 == " " || $0 == "\t" }
                guard !rest.isEmpty else { return nil }
                let end = rest.firstIndex { $0 == " " || $0 == "\t" } ?? rest.endIndex
                defer { rest = rest[end...] }
                return rest[..<end]
            }
            let lineNumber = index + 1
            guard let name = field(), let code = field(), let enhanced = field() else {
                throw BounceRuleError("line \(lineNumber): a rule is a class, a code, an enhanced code and a text")
            }
            guard let bounceClass = BounceClass(rawValue: String(name)) else {
                throw BounceRuleError("line \(lineNumber): \"\(name)\" is not a class; the classes are "
                    + BounceClass.allCases.map(\.rawValue).joined(separator: ", "))
            }
            var expression = String(rest.drop { $0 == " " || $0 == "\t" })
            while expression.last == "\r" || expression.last == " " { expression.removeLast() }
            do {
                rules.append(try BounceRule(bounceClass, code: code == "-" ? nil : String(code),
                                            enhancedCode: enhanced == "-" ? nil : String(enhanced),
                                            text: expression.isEmpty ? nil : expression))
            } catch {
                throw BounceRuleError("line \(lineNumber): \(error.message)")
            }
        }
        self.init(rules: rules, standard: standard)
    }

    /// The rules Sluice ships, alone.
    public static let standard = BounceClassifier(rules: [], standard: true)

    /// The class of a reply.
    public func classify(_ reply: SMTPReply) -> BounceClass {
        classify(code: reply.code.rawValue, enhancedCode: reply.enhancedCode, text: reply.text)
    }

    /// The class of a reply given by its parts.
    public func classify(code: Int, enhancedCode: EnhancedStatusCode?, text: String) -> BounceClass {
        for rule in ownRules where rule.matches(code: code, enhancedCode: enhancedCode, text: text) {
            return rule.bounceClass
        }
        if includesStandard {
            for rule in Self.standardRules where rule.matches(code: code, enhancedCode: enhancedCode, text: text) {
                return rule.bounceClass
            }
        }
        return .other
    }

    /// The classes an address is suppressed for when a refusal of that class is permanent
    /// (5xx): the address itself is bad, and mailing it again only costs reputation.
    public static let hardClasses: Set<BounceClass> = [.invalidRecipient, .badDomain, .inactiveMailbox]
}

// MARK: The standard rules

extension BounceClassifier {
    /// Texts first (a server's words are more specific than its enhanced code, which many set
    /// to 5.0.0 or 5.7.1 for everything), then enhanced codes, then bare reply codes.
    static let standardRules: [BounceRule] = {
        let table: [(BounceClass, String?, String?, String?)] = [
            // Texts. Authentication before policy and content: Gmail's DMARC refusals are 5.7.1
            // and mention spam.
            // The sender refused (at MAIL): a matter of the sender's, never the recipient's.
            (.policy, nil, nil,
             #"sender (address|domain) (rejected|refused|not)|sender .*(denied|blocked|not allowed)|excessive unknown recipients|open relay"#),
            (.authentication, nil, nil,
             #"dmarc|\bspf\b|\bdkim\b|unauthenticated|authentication (checks|information|level|requirements)"#),
            // Size before rate: "message size limit exceeded" is not a rate.
            (.messageTooLarge, nil, nil,
             #"(message|size) .*(exceeds|too (big|large))|exceeds .*size|too large|message size limit"#),
            (.rateLimited, nil, nil,
             #"rate[ -]?limit|unusual rate|at a rate|too quickly|too many (connections|messages|mails|emails|login|concurrent|sessions)|throttl|unexpected volume|temporarily deferred|slow down|server busy|max(imum)? (number of )?(messages?|(concurrent )?connections?) per|limit exceeded|exceeded a limit"#),
            (.policy, nil, nil, #"greylist|graylist|try again later, closing connection"#),
            (.badDomain, nil, nil,
             #"domain not found|host not found|no such domain|domain (does not|doesn't) exist|unrouteable domain|null mx|does not accept mail"#),
            (.mailboxFull, nil, nil,
             #"over ?quota|quota exceeded|exceeded .*quota|mailbox (is )?full|mailbox full|storage allocation|out of storage space"#),
            (.inactiveMailbox, nil, nil,
             #"(account|mailbox|user|address) (is |has been )?(disabled|inactive|deactivated|suspended|expired)|no longer (active|in use)|dormant|mailbox is disabled"#),
            (.invalidRecipient, nil, nil,
             #"user unknown|unknown (user|recipient|mailbox)|no such (user|mailbox|recipient|person)|(does not|doesn't|not) exist|invalid (recipient|mailbox)|mailbox (unavailable|not found)|user not found|recipient not found|unrouteable address|no mailbox here|doesn't have an? .* account|not a valid (mailbox|recipient)|mailbox name not allowed|address rejected"#),
            (.routing, nil, nil,
             #"relay(ing)? (access )?(denied|not permitted|prohibited)|unable to relay|not permitted to relay|relay not allowed|no route|routing loop|mail loop|too many hops"#),
            (.tls, nil, nil, #"starttls|\btls\b|\bssl\b|encryption (required|needed)|certificate"#),
            (.connection, nil, nil, #"timed out|connection (refused|reset|lost|closed)|no answer from host"#),
            (.policy, nil, nil,
             #"block ?list|black ?list|blocked using|listed (at|on|in|by)|spamhaus|barracuda|\brbl\b|dnsbl|reputation|banned|poor sender"#),
            (.content, nil, nil,
             #"spam|unsolicited|virus|malware|phish|content|attachment|bulk mail|suspicious"#),
            (.policy, nil, nil, #"policy|not authorized|not allowed|administrative|prohibited"#),

            // Enhanced codes (RFC 3463, RFC 7372, RFC 7505, IANA's registry).
            (.policy, nil, "x.1.7", nil),
            (.policy, nil, "x.1.8", nil),
            (.invalidRecipient, nil, "x.1.1", nil),
            (.badDomain, nil, "x.1.2", nil),
            (.invalidRecipient, nil, "x.1.3", nil),
            (.inactiveMailbox, nil, "x.1.6", nil),
            (.badDomain, nil, "x.1.10", nil),
            (.inactiveMailbox, nil, "x.2.1", nil),
            (.mailboxFull, nil, "x.2.2", nil),
            (.messageTooLarge, nil, "x.2.3", nil),
            (.messageTooLarge, nil, "x.3.4", nil),
            (.rateLimited, nil, "x.4.5", nil),
            (.routing, nil, "x.4.x", nil),
            (.protocol, nil, "x.5.x", nil),
            (.content, nil, "x.6.x", nil),
            (.tls, nil, "x.7.5", nil),
            (.tls, nil, "x.7.10", nil),
            (.tls, nil, "x.7.11", nil),
            (.inactiveMailbox, nil, "x.7.13", nil),
            (.inactiveMailbox, nil, "x.7.17", nil),
            (.badDomain, nil, "x.7.18", nil),
            (.authentication, nil, "x.7.20", nil),
            (.authentication, nil, "x.7.21", nil),
            (.authentication, nil, "x.7.22", nil),
            (.authentication, nil, "x.7.23", nil),
            (.authentication, nil, "x.7.24", nil),
            (.authentication, nil, "x.7.25", nil),
            (.authentication, nil, "x.7.26", nil),
            (.rateLimited, nil, "x.7.28", nil),
            (.policy, nil, "x.7.x", nil),

            // Bare reply codes (RFC 5321, RFC 7504).
            (.protocol, "50x", nil, nil),
            (.protocol, "555", nil, nil),
            (.badDomain, "521", nil, nil),
            (.badDomain, "556", nil, nil),
            (.policy, "53x", nil, nil),
            (.routing, "551", nil, nil),
            (.mailboxFull, "552", nil, nil),
            (.invalidRecipient, "553", nil, nil),
        ]
        return table.map { bounceClass, code, enhanced, text in
            do {
                return try BounceRule(bounceClass, code: code, enhancedCode: enhanced, text: text)
            } catch {
                preconditionFailure("a standard bounce rule is not valid: \(error)")
            }
        }
    }()
}

// MARK: Patterns

/// A reply code with `x` for any digit.
private struct CodePattern: Sendable {
    let digits: [UInt8?]
    init?(_ text: String) {
        let characters = Array(text.lowercased().utf8)
        guard characters.count == 3 else { return nil }
        var digits: [UInt8?] = []
        for character in characters {
            if character == UInt8(ascii: "x") {
                digits.append(nil)
            } else if (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(character) {
                digits.append(character - UInt8(ascii: "0"))
            } else {
                return nil
            }
        }
        self.digits = digits
    }
    func matches(_ code: Int) -> Bool {
        guard (100...999).contains(code) else { return false }
        let actual = [code / 100, code / 10 % 10, code % 10]
        return zip(digits, actual).allSatisfy { pattern, digit in pattern.map { Int($0) == digit } ?? true }
    }
}

/// An enhanced code with `x` for any part.
private struct EnhancedPattern: Sendable {
    let parts: [Int?]
    init?(_ text: String) {
        let pieces = text.lowercased().split(separator: ".", omittingEmptySubsequences: false)
        guard pieces.count == 3 else { return nil }
        var parts: [Int?] = []
        for piece in pieces {
            if piece == "x" {
                parts.append(nil)
            } else if let value = Int(piece), (0...999).contains(value), piece.count <= 3 {
                parts.append(value)
            } else {
                return nil
            }
        }
        self.parts = parts
    }
    func matches(_ code: EnhancedStatusCode) -> Bool {
        zip(parts, [code.statusClass, code.subject, code.detail]).allSatisfy { pattern, value in pattern.map { $0 == value } ?? true }
    }
}

/// A compiled regular expression, matched without regard to case.
///
/// `Regex` is not declared `Sendable`, but a compiled one is immutable (its lowered program is
/// published once, atomically), so sharing it between threads only reads it.
private struct TextExpression: @unchecked Sendable {
    let regex: Regex<AnyRegexOutput>
    init(_ pattern: String) throws {
        regex = try Regex(pattern).ignoresCase()
        _ = "".contains(regex)  // compiled now, once, rather than on the first refusal
    }
    func matches(_ text: String) -> Bool { text.contains(regex) }
}

extension String {
    fileprivate func trimmingTrailingSpaces() -> String {
        var text = self
        while text.last == " " { text.removeLast() }
        return text
    }
}
