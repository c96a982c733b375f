import SluiceCore
import Synchronization

/// One message on its way: its envelope and content, every recipient's outcome so far, and
/// the callback that receives the report once.
final class DeliveryJob: @unchecked Sendable {
    // `attempts`, `results`, `remaining` and `lastError` are touched by one party
    // at a time, and each handoff is ordered by a lock or a loop hop: the pool (under the
    // shard's lock) while the job waits, the connection's loop while the job is on it, a
    // retry timer in between. `connectionID` is guarded by the lock of the pool shard the
    // job was last submitted to (`shard`). The atomics are safe from anywhere.
    let id: Int
    let message: EncodedMessage
    let envelope: Envelope
    let startedAt: Moment
    /// The client the job belongs to, which counts its report and hands it to `completion`
    /// (held here rather than captured in a closure made per message).
    private let client: SMTPClient
    private let completion: @Sendable (consuming DeliveryReport) -> Void
    /// The caller's logger and the message's spans; nil when nobody watches.
    let observation: MessageObservation?

    var attempts = 0
    /// Each recipient's outcome so far, in the envelope's order: deferred with no reply until
    /// a try decides it (which is what the report says of one never decided). The report
    /// takes this array as it is.
    private var results: [DeliveryReport.Recipient]
    /// The recipients still to try (indices into the envelope); nil while that is all of them.
    private var remaining: [Int]?
    /// The first try's transaction (every recipient), made once.
    private let firstTransaction: SMTPTransaction
    private var lastError: SMTPError?
    /// The connection the job is on, while it is on one (its shard's lock).
    var connectionID: Int?
    /// Its connection sat idle long enough that it is checked (RSET) before this job starts:
    /// the pool's decision, carried out by the connection.
    var probeFirst = false
    /// With transaction phases timed: when its attempt began on a connection, and when its
    /// content was written. Touched on that connection's loop only.
    var phaseTimes: (started: Moment, contentWritten: Moment?)?
    /// The pool shard the job was last submitted to.
    let shard = Atomic<Int>(0)
    /// The task that sent it was cancelled.
    let cancelRequested = Atomic<Bool>(false)
    private let finished = Atomic<Bool>(false)

    init(id: Int, message: EncodedMessage, envelope: Envelope, startedAt: Moment,
         client: SMTPClient, observation: MessageObservation? = nil,
         completion: @escaping @Sendable (consuming DeliveryReport) -> Void) {
        self.id = id
        self.observation = observation
        self.message = message
        self.envelope = envelope
        self.startedAt = startedAt
        self.client = client
        self.completion = completion
        results = envelope.recipients.map { DeliveryReport.Recipient(address: $0.address, status: .deferred, reply: nil) }
        firstTransaction = SMTPTransaction(id: id, from: envelope.from, recipients: envelope.recipients,
                                           parameters: envelope.parameters, content: message.info)
    }

    /// The transaction for the next try: the recipients not yet decided.
    var transaction: SMTPTransaction {
        guard let remaining else { return firstTransaction }
        precondition(!remaining.isEmpty, "a job with no recipient left to try was sent again")
        var transaction = firstTransaction
        transaction.recipients = remaining.map { envelope.recipients[$0] }
        return transaction
    }

    /// Records a try's outcome and keeps, in ``remaining``, the recipients the policy says
    /// to try again. Returns whether there are any.
    func record(_ outcome: TransactionOutcome, policy: SMTPClient.RetryPolicy) -> Bool {
        attempts += 1
        if let error = outcome.error {
            lastError = SMTPError(error)
        } else if outcome.status != .accepted, let reply = outcome.reply {
            let what = outcome.command == "RCPT" ? "the server refused every recipient" : "the server refused the message"
            lastError = SMTPError(outcome.status == .deferred ? .deferred : .rejected, what,
                                  reply: reply, command: outcome.command, isTransient: reply.code.isTransient)
        }
        let connectionFailed = outcome.error.map { $0.isTransient && $0.reply == nil } ?? false
        var retry: [Int] = []
        for (index, recipient) in outcome.recipients.enumerated() {
            guard index < remaining?.count ?? results.count else { break }
            let slot = remaining?[index] ?? index
            results[slot] = DeliveryReport.Recipient(address: recipient.address, status: recipient.status, reply: recipient.reply)
            guard recipient.status == .deferred, attempts < policy.maximumAttempts else { continue }
            let byReply = recipient.reply.map { $0.code.isTransient } ?? false
            if byReply ? policy.retriesTransientReplies : (connectionFailed && policy.retriesConnectionFailures) {
                retry.append(slot)
            }
        }
        remaining = retry
        return !retry.isEmpty
    }

    /// The recipients still to try, as indices into the envelope.
    private var remainingSlots: [Int] { remaining ?? Array(envelope.recipients.indices) }

    /// Ends the job with `error` for every recipient not yet decided; their status is what
    /// the error means for them (``SMTPError/status``).
    func fail(_ error: SMTPError, now: Moment) {
        lastError = error
        let status = error.status
        for slot in remainingSlots where results[slot].status == .deferred {
            results[slot] = DeliveryReport.Recipient(address: envelope.recipients[slot].address, status: status,
                                                     reply: error.reply ?? results[slot].reply)
        }
        remaining = []
        complete(now: now)
    }

    /// Delivers the report, once.
    func complete(now: Moment) {
        guard finished.compareExchange(expected: false, desired: true, ordering: .acquiringAndReleasing).exchanged
        else { return }
        var report = DeliveryReport(recipients: results, messageID: message.messageID, envelope: envelope,
                                    attempts: attempts, elapsed: now - startedAt, error: nil)
        if report.outcome != .accepted {
            let classifier = client.configuration.bounceClassifier
            let error = lastError ?? SMTPError(.deferred, "the message was not delivered")
            let kind: SMTPError.Kind? =
                switch report.outcome {
                case .unknown: .unknownOutcome
                case .rejected where error.kind == .deferred: .rejected
                default: nil
                }
            let final = kind.map { SMTPError($0, error.detail, reply: error.reply, command: error.command,
                                             isTransient: $0 != .rejected && error.isTransient,
                                             sessionError: error.sessionError, transportError: error.transportError) }
                ?? error
            for slot in results.indices where results[slot].status != .accepted {
                let recipient = results[slot]
                results[slot] = DeliveryReport.Recipient(
                    address: recipient.address, status: recipient.status, reply: recipient.reply,
                    bounceClass: classifier.classify(recipient.reply, error: final))
            }
            report = DeliveryReport(recipients: results, messageID: message.messageID, envelope: envelope,
                                    attempts: attempts, elapsed: now - startedAt, error: final)
        }
        observation?.finished(report, job: id)
        client.deliver(consume report, to: completion)
    }

    var isFinished: Bool { finished.load(ordering: .acquiring) }
}
