public import SluiceCore
import SluiceTransport

/// How often a fault fires: with a probability, or on every Nth occasion.
public struct FaultRate: Hashable, Sendable, CustomStringConvertible {
    enum Rule: Hashable, Sendable {
        case probability(Double)
        case everyNth(Int)
    }
    let rule: Rule

    /// Fires with probability `p` (0 through 1).
    public static func probability(_ p: Double) -> FaultRate {
        precondition((0...1).contains(p), "a probability is between 0 and 1")
        return FaultRate(rule: .probability(p))
    }

    /// Fires on the Nth, 2Nth, … occasion.
    public static func everyNth(_ n: Int) -> FaultRate {
        precondition(n > 0, "N is positive")
        return FaultRate(rule: .everyNth(n))
    }

    /// Parses `0.25` (a probability) or `1/4` (every 4th).
    public init?(_ text: some StringProtocol) {
        if text.hasPrefix("1/"), let n = Int(text.dropFirst(2)), n > 0 {
            rule = .everyNth(n)
        } else if let p = Double(text), (0...1).contains(p) {
            rule = .probability(p)
        } else {
            return nil
        }
    }

    private init(rule: Rule) { self.rule = rule }

    public var description: String {
        switch rule {
        case .probability(let p): "\(p)"
        case .everyNth(let n): "1/\(n)"
        }
    }
}

/// Where a scripted disconnect happens.
public enum DisconnectPhase: String, Hashable, Sendable, CaseIterable {
    /// Instead of the greeting: 421 and close.
    case greeting
    /// At EHLO/HELO: 421 and close.
    case ehlo
    /// At MAIL: 421 and close.
    case mail
    /// At RCPT: 421 and close.
    case rcpt
    /// At the DATA command: 421 and close.
    case data
    /// After the end of the data, before its reply: close without a word (the client cannot
    /// know whether the message was taken).
    case afterData = "after-data"
}

/// The faults a sink injects. Every decision comes from one generator seeded with ``seed``
/// and one set of counters for the whole sink, so a run with one client connection repeats
/// exactly.
public struct SinkFaults: Hashable, Sendable {
    /// RCPT answered 5xx (``rejectRecipientCode``).
    public var rejectRecipients: FaultRate?
    /// The 5xx code for rejected recipients.
    public var rejectRecipientCode = 550
    /// RCPT answered 450.
    public var deferRecipients: FaultRate?
    /// The end of data answered 554.
    public var rejectData: FaultRate?
    /// The end of data answered 451.
    public var deferData: FaultRate?
    /// A disconnect at ``disconnectPhase``.
    public var disconnect: FaultRate?
    /// Where disconnects happen.
    public var disconnectPhase = DisconnectPhase.mail
    /// A close without a reply after the end of data, whatever ``disconnectPhase`` is (so a
    /// run can have 421s mid-session and drops after the terminator together).
    public var dropAfterData: FaultRate?
    /// Replies by recipient domain, as a mailbox provider gives them (`--replies FILE`): the
    /// first rule whose domain matches and whose rate fires answers the RCPT.
    public var replies: [ReplyRule] = []
    /// Greylisting, as Postgrey does it: the first RCPT of a new (client address, sender,
    /// recipient) triplet is answered `450 4.7.1`, and so is every retry until this long has
    /// passed since; after that the triplet passes, then and later.
    public var greylist: Duration?
    /// A tarpit: every RCPT's reply (and what follows it) is held this long.
    public var tarpit: Duration?
    /// The generator's seed.
    public var seed: UInt64 = 1

    /// No faults.
    public init() {}

    /// Whether any fault is configured.
    public var isEmpty: Bool {
        rejectRecipients == nil && deferRecipients == nil && rejectData == nil && deferData == nil && disconnect == nil
            && dropAfterData == nil && replies.isEmpty && greylist == nil && tarpit == nil
    }
}

/// A reply some of one domain's recipients get: a line of `sluice sink --replies FILE`.
public struct ReplyRule: Hashable, Sendable {
    /// The recipient domain (lower-case), or `*` for every domain.
    public var domain: String
    /// How often it answers a recipient of that domain.
    public var rate: FaultRate
    /// The reply: a 421 also closes the connection, as a provider's rate limit does.
    public var reply: SMTPReply

    public init(domain: String, rate: FaultRate, reply: SMTPReply) {
        self.domain = domain.lowercased()
        self.rate = rate
        self.reply = reply
    }

    /// Parses rules, one a line: `DOMAIN RATE CODE [ENHANCED] TEXT`, with RATE a probability
    /// (`0.02`), a percentage (`2%`) or `1/N`, CODE a 4xx or 5xx. Blank lines and `#` comments
    /// are skipped; a line that does not parse is an error naming it.
    public static func parse(_ text: String) throws -> [ReplyRule] {
        var rules: [ReplyRule] = []
        for (index, raw) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = raw.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false)[0]
            let words = line.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\r" })
            guard !words.isEmpty else { continue }
            func failure(_ why: String) -> ReplyRuleError { ReplyRuleError(line: index + 1, text: String(raw), reason: why) }
            guard words.count >= 4 else { throw failure("expected DOMAIN RATE CODE [ENHANCED] TEXT") }
            let rateText = words[1]
            let rate: FaultRate? =
                if rateText.hasSuffix("%"), let percent = Double(rateText.dropLast()), (0...100).contains(percent) {
                    .probability(percent / 100)
                } else {
                    FaultRate(rateText)
                }
            guard let rate else { throw failure("'\(rateText)' is not a rate (0.02, 2% or 1/50)") }
            guard let number = Int(words[2]), (400...599).contains(number), let code = SMTPStatusCode(rawValue: number) else {
                throw failure("'\(words[2])' is not a 4xx or 5xx reply code")
            }
            var rest = words[3...]
            let enhanced = EnhancedStatusCode(String(rest.first!))
            if enhanced != nil {
                guard String(rest.first!.prefix(1)) == String(words[2].prefix(1)) else {
                    throw failure("the enhanced code \(rest.first!) does not have the reply code's class")
                }
                rest = rest.dropFirst()
            }
            guard !rest.isEmpty else { throw failure("the reply has no text") }
            let domain = String(words[0])
            guard domain == "*" || (domain.contains(".") && !domain.contains("@")) else {
                throw failure("'\(domain)' is not a domain (example.com) or *")
            }
            rules.append(ReplyRule(domain: domain, rate: rate, reply: SMTPReply(code, enhanced, rest.joined(separator: " "))))
        }
        return rules
    }
}

/// A line of a replies file that does not parse.
public struct ReplyRuleError: Error, CustomStringConvertible {
    public let line: Int
    public let text: String
    public let reason: String
    public var description: String { "line \(line) ('\(text)'): \(reason)" }
}

/// The shared generator and counters behind every connection's ``FaultPolicy``, and the
/// greylist's triplets.
final class FaultState: Sendable {
    private struct State {
        var random: SplitMix64
        var counts: [String: Int] = [:]
    }
    private let state: Locked<State>
    let faults: SinkFaults
    /// When each greylisted triplet was first seen.
    private let greylist = Locked<[String: ContinuousClock.Instant]>([:])
    /// Past this many triplets, the older half is forgotten (their senders are greylisted
    /// again, as Postgrey does with entries past their age).
    static let greylistCapacity = 1_000_000

    init(_ faults: SinkFaults) {
        self.faults = faults
        state = Locked(State(random: SplitMix64(seed: faults.seed)))
    }

    /// How long the triplet must still wait, if it must: seen first less than the greylist's
    /// delay ago (now, if it is new); nil once it may pass.
    func greylistWait(client: String, sender: String, recipient: String, delay: Duration) -> Duration? {
        let key = client + "\u{0}" + sender + "\u{0}" + recipient
        let now = ContinuousClock.now
        return greylist.withLock { seen in
            if let first = seen[key] {
                let waited = now - first
                return waited < delay ? delay - waited : nil
            }
            if seen.count >= Self.greylistCapacity {
                let newest = seen.values.sorted()[seen.count / 2]
                seen = seen.filter { $0.value >= newest }
            }
            seen[key] = now
            return delay
        }
    }

    /// Whether `rate` fires on this occasion of `counter`.
    func fires(_ rate: FaultRate?, _ counter: String) -> Bool {
        guard let rate else { return false }
        return state.withLock { state in
            state.counts[counter, default: 0] += 1
            switch rate.rule {
            case .probability(let p): return state.random.nextFraction() < p
            case .everyNth(let n): return state.counts[counter]! % n == 0
            }
        }
    }
}

/// The sink's fault policy for one connection.
struct FaultPolicy: ServerPolicy {
    let state: FaultState
    /// The client's address, for greylisting.
    let client: String

    mutating func decide(_ event: ServerPolicyEvent) -> ServerFault? {
        let faults = state.faults
        let closing = ServerFault.replyAndClose(SMTPReply(.serviceNotAvailable, EnhancedStatusCode("4.3.2"),
                                                          "Service shutting down (injected)"))
        switch event {
        case .connected:
            if faults.disconnectPhase == .greeting, state.fires(faults.disconnect, "disconnect") { return closing }
        case .command(let verb):
            let phase: DisconnectPhase? = switch verb {
            case "EHLO", "HELO": .ehlo
            case "MAIL": .mail
            case "RCPT": .rcpt
            case "DATA", "BDAT": .data
            default: nil
            }
            if let phase, phase == faults.disconnectPhase, state.fires(faults.disconnect, "disconnect") { return closing }
        case .recipient(let address, let sender):
            if !faults.replies.isEmpty {
                let domain = address.domain.lowercased()
                for (index, rule) in faults.replies.enumerated() where rule.domain == "*" || rule.domain == domain {
                    if state.fires(rule.rate, "reply \(index)") {
                        return rule.reply.code == .serviceNotAvailable ? .replyAndClose(rule.reply) : .reply(rule.reply)
                    }
                }
            }
            if let delay = faults.greylist,
               let wait = state.greylistWait(client: client, sender: sender?.address ?? "", recipient: address.address.lowercased(),
                                             delay: delay) {
                // What is left of the wait, in whole seconds rounded up: never "0 seconds".
                let (whole, fraction) = wait.components
                let seconds = max(1, Int(whole) + (fraction > 0 ? 1 : 0))
                return .reply(SMTPReply(.mailboxBusy, EnhancedStatusCode("4.7.1"),
                                        "Greylisted, try again in \(seconds) second\(seconds == 1 ? "" : "s") (injected)"))
            }
            if state.fires(faults.rejectRecipients, "reject-rcpt") {
                let code = SMTPStatusCode(rawValue: faults.rejectRecipientCode) ?? .mailboxUnavailable
                return .reply(SMTPReply(code, EnhancedStatusCode("5.1.1"), "Recipient rejected (injected)"))
            }
            if state.fires(faults.deferRecipients, "defer-rcpt") {
                return .reply(SMTPReply(.mailboxBusy, EnhancedStatusCode("4.2.1"), "Recipient deferred (injected)"))
            }
            if let tarpit = faults.tarpit { return .delay(tarpit) }
        case .endOfData:
            if faults.disconnectPhase == .afterData, state.fires(faults.disconnect, "disconnect") { return .closeWithoutReply }
            if state.fires(faults.dropAfterData, "drop-after-data") { return .closeWithoutReply }
            if state.fires(faults.rejectData, "reject-data") {
                return .reply(SMTPReply(.transactionFailed, EnhancedStatusCode("5.7.1"), "Message rejected (injected)"))
            }
            if state.fires(faults.deferData, "defer-data") {
                return .reply(SMTPReply(.localErrorInProcessing, EnhancedStatusCode("4.3.0"), "Message deferred (injected)"))
            }
        }
        return nil
    }
}

/// SplitMix64: a small, fast, seedable generator (for repeatable fault runs and the bench's
/// per-message draws, not secrets).
package struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64
    package init(seed: UInt64) { state = seed }
    package mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A uniform value in 0..<1, from the top 53 bits.
    package mutating func nextFraction() -> Double {
        Double(next() >> 11) / Double(UInt64(1) << 53)
    }
}
