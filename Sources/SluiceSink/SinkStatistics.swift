import SluiceCore
import SluiceTransport
import Synchronization

/// What a sink has seen, as a snapshot.
public struct SinkStatistics: Hashable, Sendable, Codable {
    /// Connections accepted (including those refused for the connection limit).
    public var sessions = 0
    /// Connections open now.
    public var activeSessions = 0
    /// Connections refused with 421 because of the connection limit.
    public var refusedSessions = 0
    /// Messages stored (answered 250 at the end of data).
    public var messages = 0
    /// Recipients of stored messages.
    public var recipients = 0
    /// Content bytes of stored messages.
    public var bytes = 0
    /// Sessions that completed a TLS handshake (STARTTLS or implicit).
    public var tlsSessions = 0
    /// 4xx and 5xx replies sent, by code: each refusal once. The 554 that answers the
    /// `DATA` or `BDAT` of a transaction whose every recipient was refused is not counted
    /// here (the refusals were), but in ``transactionsWithoutRecipients``.
    public var rejectionsByCode: [String: Int] = [:]
    /// Transactions whose every recipient was refused and whose `DATA` or `BDAT` came anyway
    /// (pipelined), answered 554 5.5.1.
    public var transactionsWithoutRecipients = 0
    /// Replies 500, 501 and 521: commands or content the sink could not accept as SMTP.
    public var protocolErrors = 0
    /// Sessions the client ended with QUIT (the rest were dropped or closed by the sink).
    public var quits = 0
    /// Sessions closed because a command line or a message's content took longer than its
    /// deadline (a client sending a byte at a time).
    public var slowClientsClosed = 0
    /// Failed AUTH attempts.
    public var authenticationFailures = 0
    /// Times the listener stopped accepting for a while because the process had no file
    /// descriptor left (EMFILE/ENFILE); the clients waited in the backlog meanwhile.
    public var acceptPauses = 0
    /// With ``SinkConfiguration/verifiesChecksums``: messages whose checksum matched.
    public var checksumsVerified = 0
    /// With ``SinkConfiguration/verifiesChecksums``: messages refused because their body did
    /// not match their checksum (corrupted on the way).
    public var checksumMismatches = 0
    /// With ``SinkConfiguration/verifiesChecksums``: messages that had no checksum to check.
    public var checksumsMissing = 0

    /// A one-line summary for logs.
    public var summary: String {
        let rejections = rejectionsByCode.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: " ")
        return "sessions \(sessions) (active \(activeSessions), refused \(refusedSessions)), messages \(messages), "
            + "recipients \(recipients), bytes \(bytes), tls \(tlsSessions), protocol errors \(protocolErrors), "
            + "slow clients closed \(slowClientsClosed), failed AUTH \(authenticationFailures), accept pauses \(acceptPauses)"
            + (rejections.isEmpty ? "" : ", rejections \(rejections)")
            + (transactionsWithoutRecipients == 0 ? "" : ", transactions without recipients \(transactionsWithoutRecipients)")
            + (checksumsVerified + checksumMismatches + checksumsMissing == 0 ? ""
                : ", checksums verified \(checksumsVerified), mismatched \(checksumMismatches), missing \(checksumsMissing)")
    }
}

/// The counters behind ``SinkStatistics``, shared by every connection.
final class SinkCounters: Sendable {
    let sessions = Atomic<Int>(0)
    let activeSessions = Atomic<Int>(0)
    let refusedSessions = Atomic<Int>(0)
    let messages = Atomic<Int>(0)
    let recipients = Atomic<Int>(0)
    let bytes = Atomic<Int>(0)
    let tlsSessions = Atomic<Int>(0)
    let protocolErrors = Atomic<Int>(0)
    let quits = Atomic<Int>(0)
    let slowClientsClosed = Atomic<Int>(0)
    let authenticationFailures = Atomic<Int>(0)
    let transactionsWithoutRecipients = Atomic<Int>(0)
    let checksumsVerified = Atomic<Int>(0)
    let checksumMismatches = Atomic<Int>(0)
    let checksumsMissing = Atomic<Int>(0)
    private let rejections = Locked<[Int: Int]>([:])
    private static let noValidRecipients = Array("554 5.5.1 \(ServerStateMachine.noValidRecipientsText)".utf8)

    /// Counts the 4xx/5xx replies in bytes about to be written.
    func countReplies(in bytes: [UInt8]) {
        var lineStart = 0
        var found: [Int] = []
        for index in bytes.indices where bytes[index] == 10 {
            let line = lineStart
            lineStart = index + 1
            guard index - line >= 4, bytes[line + 3] == UInt8(ascii: " ") else { continue }  // last line of a reply
            let first = bytes[line]
            guard first == UInt8(ascii: "4") || first == UInt8(ascii: "5") else { continue }
            if bytes[line..<index].starts(with: Self.noValidRecipients) {
                transactionsWithoutRecipients.add(1, ordering: .relaxed)
                continue
            }
            let code = Int(first - 48) * 100 + Int(bytes[line + 1] - 48) * 10 + Int(bytes[line + 2] - 48)
            found.append(code)
        }
        guard !found.isEmpty else { return }
        rejections.withLock { table in for code in found { table[code, default: 0] += 1 } }
        let protocolCount = found.filter { $0 == 500 || $0 == 501 || $0 == 521 }.count
        if protocolCount > 0 { protocolErrors.add(protocolCount, ordering: .relaxed) }
    }

    var snapshot: SinkStatistics {
        var statistics = SinkStatistics()
        statistics.sessions = sessions.load(ordering: .relaxed)
        statistics.activeSessions = activeSessions.load(ordering: .relaxed)
        statistics.refusedSessions = refusedSessions.load(ordering: .relaxed)
        statistics.messages = messages.load(ordering: .relaxed)
        statistics.recipients = recipients.load(ordering: .relaxed)
        statistics.bytes = bytes.load(ordering: .relaxed)
        statistics.tlsSessions = tlsSessions.load(ordering: .relaxed)
        statistics.protocolErrors = protocolErrors.load(ordering: .relaxed)
        statistics.quits = quits.load(ordering: .relaxed)
        statistics.slowClientsClosed = slowClientsClosed.load(ordering: .relaxed)
        statistics.authenticationFailures = authenticationFailures.load(ordering: .relaxed)
        statistics.transactionsWithoutRecipients = transactionsWithoutRecipients.load(ordering: .relaxed)
        statistics.checksumsVerified = checksumsVerified.load(ordering: .relaxed)
        statistics.checksumMismatches = checksumMismatches.load(ordering: .relaxed)
        statistics.checksumsMissing = checksumsMissing.load(ordering: .relaxed)
        statistics.rejectionsByCode = Dictionary(uniqueKeysWithValues: rejections.withLock { $0 }.map { (String($0.key), $0.value) })
        return statistics
    }
}
