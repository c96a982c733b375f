import SluiceCore
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
    /// The generator's seed.
    public var seed: UInt64 = 1

    /// No faults.
    public init() {}

    /// Whether any fault is configured.
    public var isEmpty: Bool {
        rejectRecipients == nil && deferRecipients == nil && rejectData == nil && deferData == nil && disconnect == nil
            && dropAfterData == nil
    }
}

/// The shared generator and counters behind every connection's ``FaultPolicy``.
final class FaultState: Sendable {
    private struct State {
        var random: SplitMix64
        var counts: [String: Int] = [:]
    }
    private let state: Locked<State>
    let faults: SinkFaults

    init(_ faults: SinkFaults) {
        self.faults = faults
        state = Locked(State(random: SplitMix64(seed: faults.seed)))
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
        case .recipient:
            if state.fires(faults.rejectRecipients, "reject-rcpt") {
                let code = SMTPStatusCode(rawValue: faults.rejectRecipientCode) ?? .mailboxUnavailable
                return .reply(SMTPReply(code, EnhancedStatusCode("5.1.1"), "Recipient rejected (injected)"))
            }
            if state.fires(faults.deferRecipients, "defer-rcpt") {
                return .reply(SMTPReply(.mailboxBusy, EnhancedStatusCode("4.2.1"), "Recipient deferred (injected)"))
            }
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
