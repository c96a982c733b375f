import Foundation
public import Logging
import Metrics
public import Sluice
import SluiceCore
import SluiceMIME
import SluiceTransport
import Synchronization
#if ServiceLifecycleSupport
public import ServiceLifecycle
#endif

/// Delivers an outbox: claims due messages in batches, sends them through one
/// ``Sluice/SMTPClient`` (its pool and pipelining), and writes every recipient's outcome back
/// in batches.
///
/// ```swift
/// let worker = OutboxWorker(outbox: outbox, client: client)
/// try await worker.run()  // until the task is cancelled
/// ```
///
/// - A claim is a lease that expires: a worker that crashes loses nothing, its messages are
///   taken over by another worker once the lease is up. The lease is renewed while the worker
///   holds the messages.
/// - A recipient refused with a 4xx, or not tried because the connection or session failed,
///   is deferred and tried again on the ``Configuration/retry`` schedule, alone with the other
///   deferred recipients of its message; past ``Configuration/maximumAge`` it expires.
/// - Delivered is written only after the server's 2xx to the end of the data. When no reply
///   came, ``Configuration/unknownOutcome`` decides.
/// - Cancelling the task that runs ``run()`` stops claiming; what is in flight finishes and is
///   recorded before `run()` returns.
public final class OutboxWorker: Sendable {
    /// What to do with a recipient whose outcome is unknown (the end of the data was written
    /// and no reply came: it may have been delivered).
    public enum UnknownOutcomePolicy: String, Sendable, Hashable, CaseIterable {
        /// Send it again later: at-least-once. A duplicate password reset is better than a
        /// lost one. The attempt is counted in ``OutboxRecipient/unknownOutcomes``.
        case retry
        /// Leave it as ``RecipientState/unknown`` for an operator (``Outbox/retry(_:)``).
        case hold
    }

    /// How a worker works.
    public struct Configuration: Sendable {
        /// Messages claimed at once.
        public var batchSize = 200
        /// Messages in flight at once, at most.
        public var concurrency = 2_000
        /// How long a claim holds without renewal; renewed every third of it.
        public var lease: Duration = .seconds(60)
        /// The delay before each retry of a deferred recipient: from 1 minute, doubling,
        /// capped at 1 hour, with 20 % jitter.
        public var retry = Backoff(initial: .seconds(60), maximum: .seconds(3_600))
        /// A deferred recipient is given up (expired) once this much time has passed since its
        /// message was first due.
        public var maximumAge: Duration = .seconds(5 * 86_400)
        /// What a recipient whose outcome is unknown becomes.
        public var unknownOutcome = UnknownOutcomePolicy.retry
        /// A limit summed over every worker of the store; nil for none.
        public var rateLimit: OutboxRateLimit?
        /// The longest the worker sleeps before looking for due work again (new messages wake
        /// it sooner when the store can say so).
        public var pollInterval: Duration = .seconds(1)
        /// How long a stopping worker keeps trying to record what it holds while the store
        /// does not answer. Then it returns and leaves those messages leased: their leases
        /// expire and a worker sends them again (a duplicate for what was delivered, never a
        /// loss).
        public var stoppingPatience: Duration = .seconds(20)
        /// Return from ``OutboxWorker/run()`` once no recipient is queued, leased or deferred.
        public var exitWhenIdle = false
        /// Finished messages are deleted this long after they finished; nil to keep them.
        public var retention: Duration? = .seconds(7 * 86_400)
        /// The name this worker claims under: unique per worker.
        public var owner = OutboxWorker.defaultOwner()
        /// The logger.
        public var logger = Logger(label: "sluice.outbox")
        /// Where the metrics go and the dimensions added to each. The worker's metrics,
        /// named in the style of the client's (see ``Sluice/MetricsOptions``):
        ///
        /// | Metric | Kind | Dimensions |
        /// |---|---|---|
        /// | `smtp.outbox.recipients` | counter | `smtp.outcome`: delivered, deferred, failed, expired, suppressed |
        /// | `smtp.outbox.claimed` | counter | |
        /// | `smtp.outbox.suppressions.added` | counter | |
        /// | `smtp.outbox.unknown_outcomes` | counter | |
        /// | `smtp.outbox.leases.lost` | counter | |
        /// | `smtp.outbox.attempt.duration` | timer (seconds) | |
        /// | `smtp.outbox.in_flight` | gauge | |
        /// | `smtp.outbox.waiting` | gauge: due and not held | |
        /// | `smtp.outbox.oldest_waiting.age` | gauge (seconds) | |
        public var metrics = MetricsOptions()
        /// A recipient refused for good (a 5xx) with one of these bounce classes joins the
        /// suppression list, with the class as its reason: by default the address does not
        /// exist, its domain does not, or it is disabled. Empty to add none.
        public var suppressOn: Set<BounceClass> = BounceClassifier.hardClasses
        /// How long an address added for a hard bounce stays on the list; nil for good.
        public var suppressionLifetime: Duration?
        /// A per-recipient return path (VERP), opt-in: each recipient is sent in a transaction
        /// of its own from `LOCAL+ID-POSITION-MAC@DOMAIN`, so that a bounce names its
        /// recipient even when the report does not. Nil sends each message from its own sender
        /// in one transaction.
        public var verp: VERP?

        /// The defaults.
        public init() {}
    }

    /// What a worker has done since it started.
    public struct Statistics: Sendable, Hashable {
        /// Messages claimed (a message claimed again for a retry counts again).
        public var claimed = 0
        /// Recipients delivered.
        public var delivered = 0
        /// Recipients deferred for a later attempt.
        public var deferred = 0
        /// Recipients failed for good.
        public var failed = 0
        /// Recipients given up after the maximum age.
        public var expired = 0
        /// Recipients not sent because they were on the suppression list when claimed.
        public var suppressed = 0
        /// Addresses this worker added to the suppression list (hard bounces).
        public var addedToSuppressionList = 0
        /// Attempts whose outcome was unknown (retried or held, by the policy).
        public var unknown = 0
        /// Messages whose claim was taken over by another worker before their outcome was
        /// written (their lease had expired); the other worker sends them again.
        public var leasesLost = 0
        /// Messages deleted by retention.
        public var purged = 0
    }

    /// The outbox.
    public let outbox: Outbox
    /// The client that sends.
    public let client: SMTPClient
    /// How it works.
    public let configuration: Configuration

    private let state = Locked(State())
    private let wakeup = Wakeup()
    private let stopRequested = Atomic<Bool>(false)
    private let metrics: WorkerMetrics

    /// A worker for `outbox` that sends through `client`.
    public init(outbox: Outbox, client: SMTPClient, configuration: Configuration = Configuration()) {
        self.outbox = outbox
        self.client = client
        var configuration = configuration
        configuration.batchSize = max(1, configuration.batchSize)
        configuration.concurrency = max(1, configuration.concurrency)
        self.configuration = configuration
        metrics = WorkerMetrics(options: configuration.metrics)
    }

    /// A name unique to this process and worker: host, process id and a random suffix.
    public static func defaultOwner() -> String {
        let host = ProcessInfo.processInfo.hostName
        return "\(host):\(ProcessInfo.processInfo.processIdentifier):\(UInt32.random(in: 0...UInt32.max))"
    }

    /// What the worker has done so far.
    public var statistics: Statistics { state.withLock { $0.statistics } }

    /// Wakes the worker to look for due work now (after an enqueue in this process, say).
    public func wake() { wakeup.signal() }

    // MARK: The loop

    private struct InHand: Sendable {
        /// The message, with only the recipients sent to.
        let message: ClaimedMessage
        /// Its recipients found on the suppression list at the claim, not sent to.
        let suppressed: [(position: Int, entry: Suppression)]
        let started: ContinuousClock.Instant
    }

    private struct State: Sendable {
        /// Claimed and not yet recorded.
        var inHand: [Int64: InHand] = [:]
        /// Attempts waiting to be recorded.
        var done: [(id: Int64, attempt: Attempt)] = []
        /// How many attempts the store is writing now, taken out of `done`.
        var recording = 0
        var statistics = Statistics()
        /// The outbox's secret as an HMAC key (made once), for each message's ENVID.
        var key: Digest.HMACKey?
    }

    /// Asks the worker to stop as cancelling its task does: it claims nothing more, finishes
    /// and records what it holds, and ``run()`` returns.
    public func stop() {
        stopRequested.store(true, ordering: .relaxed)
        wakeup.signal()
    }

    /// Works until the task is cancelled, ``stop()`` is called or (in a swift-service-lifecycle
    /// `ServiceGroup`) a graceful shutdown begins — or, with ``Configuration/exitWhenIdle``,
    /// until no work is left; then finishes and records what it holds, and returns.
    /// - Throws: ``OutboxError`` when the store cannot be used at the start (no schema, a
    ///   schema too new, unreachable). Later store errors are logged and retried.
    public func run() async throws {
        #if ServiceLifecycleSupport
        try await withGracefulShutdownHandler {
            try await work()
        } onGracefulShutdown: { [self] in
            stop()
        }
        #else
        try await work()
        #endif
    }

    private func work() async throws {
        try await outbox.store.checkSchema()
        let key = Digest.HMACKey(.sha256, key: try await outbox.store.secret())
        state.withLock { $0.key = key }
        let logger = configuration.logger
        do {
            try await outbox.store.subscribe { [weak self] in self?.wake() }
        } catch {
            logger.warning("no notifications of new messages (polling every \(configuration.pollInterval)): \(error)")
        }
        logger.info("outbox worker started", metadata: ["owner": "\(configuration.owner)"])
        var lastRenewal = ContinuousClock.now
        var lastHousekeeping = ContinuousClock.now - .seconds(3_600)
        /// Whether the last housekeeping left finished messages past their retention.
        var purgeBehind = false
        var claimedAtHousekeeping = 0
        var storeFailures = 0
        /// Since when the store has failed without a success between, and since when the
        /// worker has been stopping (nil: it is not): it gives up recording once both are
        /// older than its patience.
        var failingSince: ContinuousClock.Instant?
        var stoppingSince: ContinuousClock.Instant?
        /// The last batch claimed, being prepared and handed to the client.
        var handing: Task<Void, Never>?
        while true {
            var stopping: Bool { stoppingSince != nil }
            if Task.isCancelled || stopRequested.load(ordering: .relaxed), !stopping {
                stoppingSince = .now
                logger.info("outbox worker stopping: finishing what it holds")
            }
            do {
                var claimedFull = false
                // The store writes the outcomes that came in while it claims the next batch,
                // and while this task hands that batch over: a store that can (PostgreSQL,
                // over two connections) does both at once.
                async let recording: Void = recordDone()
                let batch: ClaimedBatch?
                do {
                    batch = stopping ? nil : try await claim()
                } catch {
                    // Outcomes are written even while claims fail.
                    try await recording
                    throw error
                }
                if let batch {
                    // Handed over beside the next record and claim: a store on one thread
                    // (SQLite) runs those one after the other, and sat idle while the batch
                    // was prepared and submitted. One batch at a time.
                    await handing?.value
                    handing = Task { [self] in handOver(batch) }
                    claimedFull = batch.full
                }
                try await recording
                if ContinuousClock.now - lastRenewal >= configuration.lease / 3 {
                    try await renewLeases()
                    lastRenewal = .now
                }
                if !stopping, ContinuousClock.now - lastHousekeeping >= (purgeBehind ? .seconds(1) : .seconds(10)) {
                    let claimed = state.withLock { $0.statistics.claimed }
                    purgeBehind = try await housekeeping(claimedSince: claimed - claimedAtHousekeeping)
                    claimedAtHousekeeping = claimed
                    lastHousekeeping = .now
                }
                storeFailures = 0
                failingSince = nil
                let (holding, recordable) = state.withLock { ($0.inHand.count, $0.done.count) }
                if holding == 0 && recordable == 0 {
                    if stopping { break }
                    if configuration.exitWhenIdle, try await !outbox.store.hasPendingWork() { break }
                }
                if claimedFull || recordable > 0 { continue }
                await wakeup.wait(timeout: holding > 0 ? .milliseconds(20) : try await idleWait())
            } catch {
                // The store is unreachable or busy: keep the reports, try again shortly.
                storeFailures += 1
                logger.error("outbox store error (try \(storeFailures)): \(error)")
                let since = failingSince ?? .now
                failingSince = since
                if let stoppingSince, ContinuousClock.now - max(since, stoppingSince) >= configuration.stoppingPatience {
                    // Stopping, and the store will not take the outcomes: leave them. The
                    // leases expire and another worker sends those messages again (a
                    // duplicate for what was delivered, never a loss).
                    let held = state.withLock { $0.inHand.count }
                    logger.error("outbox worker stopping without recording \(held) message(s): the store is unavailable")
                    break
                }
                await wakeup.wait(timeout: .milliseconds(min(5_000, 100 * (1 << min(storeFailures, 6)))))
            }
        }
        await handing?.value
        logger.info("outbox worker stopped", metadata: ["owner": "\(configuration.owner)"])
    }

    /// How long to sleep with nothing in hand: until the next message is due, at most the
    /// poll interval.
    private func idleWait() async throws -> Duration {
        guard let next = try await outbox.store.nextDueAt() else { return configuration.pollInterval }
        let until = next.timeIntervalSince(outbox.clock.now())
        return min(configuration.pollInterval, .milliseconds(max(1, Int64(until * 1000) + 1)))
    }

    /// A claim: the messages with their recipients on the suppression list taken out, and
    /// whether it was full (more may be waiting).
    private struct ClaimedBatch: Sendable {
        var held: [(ClaimedMessage, [(position: Int, entry: Suppression)])]
        var full: Bool
    }

    /// Claims what there is room for and takes it in hand; nil when there is no room or nothing
    /// was due.
    private func claim() async throws(OutboxError) -> ClaimedBatch? {
        let holding = state.withLock { $0.inHand.count }
        let room = configuration.concurrency - holding
        // Claim in whole batches once there is room for half of one: fewer, fuller claims.
        let wanted = min(configuration.batchSize, room)
        guard wanted > 0, wanted >= min(configuration.batchSize, configuration.concurrency) / 2 else { return nil }
        let now = outbox.clock.now()
        let claimed = try await outbox.store.claim(
            owner: configuration.owner, limit: wanted, now: now,
            leaseUntil: now.addingTimeInterval(configuration.lease.seconds), rateLimit: configuration.rateLimit)
        guard !claimed.isEmpty else { return nil }
        let held = try await withoutSuppressed(claimed, now: now)
        let started = ContinuousClock.now
        state.withLock { state in
            state.statistics.claimed += claimed.count
            for (message, suppressed) in held {
                state.inHand[message.id] = InHand(message: message, suppressed: suppressed, started: started)
            }
        }
        metrics.claimed.increment(by: claimed.count)
        return ClaimedBatch(held: held, full: claimed.count == wanted)
    }

    /// Hands a claimed batch to the client.
    private func handOver(_ batch: ClaimedBatch) {
        let key = self.key
        for (message, _) in batch.held {
            if message.recipients.isEmpty {
                finished(message.id, .notSent)
            } else {
                send(message, key: key)
            }
        }
    }

    /// Takes out of each claimed message the recipients on the suppression list now (added
    /// since it was enqueued): they are recorded as suppressed and not sent.
    private func withoutSuppressed(_ claimed: [ClaimedMessage], now: Date) async throws(OutboxError)
        -> [(ClaimedMessage, [(position: Int, entry: Suppression)])]
    {
        let active = try await outbox.store.activeSuppressions(
            forAddresses: claimed.flatMap { $0.recipients.map(\.address) }, now: now)
        guard !active.isEmpty else { return claimed.map { ($0, []) } }
        return claimed.map { message in
            var kept = message
            var suppressed: [(position: Int, entry: Suppression)] = []
            kept.recipients = message.recipients.filter { recipient in
                guard let entry = active[recipient.address] else { return true }
                suppressed.append((recipient.position, entry))
                return false
            }
            return (kept, suppressed)
        }
    }

    /// Prepares one message and hands it to the client.
    private func send(_ message: ClaimedMessage, key: Digest.HMACKey) {
        let mail: OutgoingMail
        do {
            mail = try prepare(message, key: key)
        } catch {
            // Unsendable as stored (a DKIM key that cannot sign it, say): every recipient fails.
            finished(message.id, .unsendable("not sent: \(error)"))
            return
        }
        guard let verp = configuration.verp else {
            client.submit(mail) { [self] report in finished(message.id, .sent(report)) }
            return
        }
        // VERP: a transaction a recipient, each from its own return path; the message's
        // outcome is written once every one has reported.
        let reports = Locked([DeliveryReport?](repeating: nil, count: mail.envelope.recipients.count))
        for (index, recipient) in mail.envelope.recipients.enumerated() {
            var single = mail
            let position = message.recipients[index].position
            single.envelope = Envelope(
                from: try? EnvelopeAddress(verp.address(message: message.id, position: position, key: key)),
                recipients: [recipient], parameters: mail.envelope.parameters)
            client.submit(single) { [self] report in
                let all = reports.withLock { reports -> [DeliveryReport]? in
                    reports[index] = report
                    let done = reports.compactMap { $0 }
                    return done.count == reports.count ? done : nil
                }
                if let all { finished(message.id, .sentEach(all)) }
            }
        }
    }

    /// The outbox's secret as an HMAC key: read at the start of ``run()``, before any claim.
    private var key: Digest.HMACKey {
        guard let key = state.withLock({ $0.key }) else {
            preconditionFailure("the worker claims only after it has read the outbox's secret")
        }
        return key
    }

    private func prepare(_ message: ClaimedMessage, key: Digest.HMACKey) throws -> OutgoingMail {
        let sender = message.sender.isEmpty ? nil : try EnvelopeAddress(message.sender)
        // ENVID names the message (authenticated), ORCPT each recipient as enqueued, and only
        // the headers come back: a report that comes back later is matched by them (RFC 3461).
        // A relay without DSN is sent none of them.
        var parameters = MailParameters()
        try parameters.setEnvelopeID(EnvelopeToken.envelopeID(for: message.id, key: key))
        parameters.returnContent = .headers
        let recipients = try message.recipients.map { recipient throws(AddressError) in
            let address = try EnvelopeAddress(recipient.address)
            var original = RecipientParameters()
            try original.setOriginalRecipient(address)
            return SMTPTransaction.Recipient(address, parameters: original)
        }
        let encoded: EncodedMessage
        if client.configuration.dkim.isEmpty {
            encoded = try EncodedMessage(bytes: message.content, messageID: nil)
        } else {
            let signed = try DKIMSigner.sign(try RawMessage(message.content), with: client.configuration.dkim)
            encoded = EncodedMessage(signed)
        }
        return OutgoingMail(envelope: Envelope(from: sender, recipients: recipients, parameters: parameters), message: encoded)
    }

    /// A message's report (on an event loop thread).
    private func finished(_ id: Int64, _ result: Attempt) {
        let wake = state.withLock { state in
            state.done.append((id, result))
            return state.done.count >= configuration.batchSize / 2 || state.done.count + state.recording == state.inHand.count
        }
        if wake { wakeup.signal() }
    }

    /// Writes the outcomes of the reports that came in, in one transaction.
    private func recordDone() async throws(OutboxError) {
        // Taken out whole: the loops append what comes in meanwhile to an empty list, and the
        // attempts are let go after the lock, not copied or destroyed under it.
        let (done, inHand) = state.withLock { state in
            let done = state.done
            state.done = []
            state.recording = done.count
            return (done, done.map { state.inHand[$0.id] })
        }
        guard !done.isEmpty else { return }
        let now = outbox.clock.now()
        var outcomes: [MessageOutcome] = []
        outcomes.reserveCapacity(done.count)
        var tally = Statistics()
        for (index, entry) in done.enumerated() {
            guard let held = inHand[index] else { continue }
            let outcome = outcome(of: held, entry.attempt, now: now)
            for recipient in outcome.recipients {
                switch recipient.state {
                case .delivered: tally.delivered += 1
                case .deferred: tally.deferred += 1
                case .expired: tally.expired += 1
                case .failed: tally.failed += 1
                case .suppressed: tally.suppressed += 1
                default: break
                }
                if recipient.unknownOutcome { tally.unknown += 1 }
            }
            tally.addedToSuppressionList += outcome.suppress.count
            outcomes.append(outcome)
            metrics.attemptDuration.recordNanoseconds(
                (ContinuousClock.now - held.started).wholeNanoseconds)
        }
        let lost: [Int64]
        do {
            lost = try await outbox.store.record(outcomes, owner: configuration.owner, now: now)
        } catch {
            // Not written: back ahead of any that came in meanwhile, for the next try.
            state.withLock { state in
                state.done.insert(contentsOf: done, at: 0)
                state.recording = 0
            }
            throw error
        }
        if !lost.isEmpty {
            configuration.logger.warning("\(lost.count) message(s) were taken over by another worker before their outcome was written; they will be sent again")
        }
        state.withLock { state in
            state.recording = 0
            for entry in done { state.inHand[entry.id] = nil }
            state.statistics.delivered += tally.delivered
            state.statistics.deferred += tally.deferred
            state.statistics.failed += tally.failed
            state.statistics.expired += tally.expired
            state.statistics.unknown += tally.unknown
            state.statistics.suppressed += tally.suppressed
            state.statistics.addedToSuppressionList += tally.addedToSuppressionList
            state.statistics.leasesLost += lost.count
        }
        metrics.record(tally, leasesLost: lost.count)
    }

    /// Each recipient's new state, from the report.
    private func outcome(of held: InHand, _ attempt: Attempt, now: Date) -> MessageOutcome {
        var outcome = outcome(of: held.message, attempt, now: now)
        for (position, entry) in held.suppressed {
            outcome.recipients.append(.init(position: position, state: .suppressed,
                                            reply: "on the suppression list (\(entry.reason))"))
        }
        return outcome
    }

    private func outcome(of message: ClaimedMessage, _ attempt: Attempt, now: Date) -> MessageOutcome {
        let report: DeliveryReport
        var each: [DeliveryReport]?
        switch attempt {
        case .sent(let sent):
            report = sent
        case .sentEach(let reports):
            report = reports[0]
            each = reports
        case .unsendable(let reason):
            return MessageOutcome(
                id: message.id,
                recipients: message.recipients.map { .init(position: $0.position, state: .failed, reply: reason) },
                nextAttemptAt: nil, error: reason)
        case .notSent:
            return MessageOutcome(id: message.id, recipients: [], nextAttemptAt: nil, error: nil)
        }
        // When a deferred recipient is tried next: drawn only if one is, since the jitter's
        // random number is a system call (getrandom), and most attempts defer nothing.
        var drawn: Date?
        var next: Date {
            get {
                if let drawn { return drawn }
                let delay = configuration.retry.delay(afterAttempt: max(1, message.attempts), random: Double.random(in: 0..<1))
                let next = now.addingTimeInterval(delay.seconds)
                drawn = next
                return next
            }
        }
        let expires = message.firstDueAt.addingTimeInterval(configuration.maximumAge.seconds)
        var recipients: [MessageOutcome.Recipient] = []
        recipients.reserveCapacity(message.recipients.count)
        var anyDeferred = false
        var suppress: [Suppression] = []
        for (index, recipient) in message.recipients.enumerated() {
            // With VERP each recipient has a report of its own, about it alone.
            let report = each.map { index < $0.count ? $0[index] : report } ?? report
            let resultIndex = each == nil ? index : 0
            let result = resultIndex < report.recipients.count ? report.recipients[resultIndex] : nil
            let reply = result?.reply
            var entry = MessageOutcome.Recipient(
                position: recipient.position, state: .deferred, code: reply?.code.rawValue,
                enhancedCode: reply?.enhancedCode.map { "\($0)" },
                reply: reply.map { $0.text } ?? report.error.map { "\($0)" }, bounceClass: result?.bounceClass)
            switch result?.status {
            case .accepted?:
                entry.state = .delivered
            case .rejected?:
                entry.state = .failed
                if let bounceClass = result?.bounceClass, configuration.suppressOn.contains(bounceClass),
                   let added = try? Suppression(
                       target: recipient.address, reason: bounceClass.rawValue, detail: reply.map { "\($0)" },
                       createdAt: now, expiresAt: configuration.suppressionLifetime.map { now.addingTimeInterval($0.seconds) }) {
                    suppress.append(added)
                }
            case .unknown?:
                // The reply kept is the RCPT's 250, which says nothing of the message: keep
                // the error instead.
                (entry.code, entry.enhancedCode) = (nil, nil)
                entry.reply = report.error.map { "\($0)" } ?? "no reply after the end of the data"
                entry.unknownOutcome = true
                entry.state = configuration.unknownOutcome == .hold ? .unknown : .deferred
            case .deferred?, .failed?, nil:
                // A session that failed (a refused login, an untrusted certificate) is not the
                // recipient's doing: it waits for the operator to mend it, until it expires.
                entry.state = .deferred
            }
            if entry.state == .deferred, next >= expires { entry.state = .expired }
            if entry.state == .deferred { anyDeferred = true }
            recipients.append(entry)
        }
        let error = (each?.lazy.compactMap(\.error).first ?? report.error).map { "\($0)" }
        return MessageOutcome(id: message.id, recipients: recipients, nextAttemptAt: anyDeferred ? next : nil, error: error,
                              suppress: suppress)
    }

    /// Extends the lease of everything in hand.
    private func renewLeases() async throws(OutboxError) {
        let ids = state.withLock { Array($0.inHand.keys) }
        guard !ids.isEmpty else { return }
        let until = outbox.clock.now().addingTimeInterval(configuration.lease.seconds)
        let held = try await outbox.store.renew(owner: configuration.owner, ids: ids, until: until)
        if held.count < ids.count {
            configuration.logger.warning("\(ids.count - held.count) claim(s) expired before renewal: another worker may send them too")
        }
    }

    /// Retention and the gauges: every ten seconds, or every second while retention is behind.
    /// Returns whether finished messages past their retention are left.
    ///
    /// Retention deletes in steps of ``purgeStep`` messages, each its own short transaction,
    /// until none past retention is left, or for ``purgeBudget`` once it has deleted twice
    /// what this worker claimed since the last time: a queue drained at thousands of messages
    /// a second finishes that many, and one step every ten seconds (50 a second) let the
    /// tables grow without bound. Twice the claims lets retention catch up while it keeps pace.
    private func housekeeping(claimedSince claimed: Int) async throws(OutboxError) -> Bool {
        var behind = false
        if let retention = configuration.retention {
            let before = outbox.clock.now().addingTimeInterval(-retention.seconds)
            let started = ContinuousClock.now
            var purged = 0
            repeat {
                let step = try await outbox.store.purge(finishedBefore: before, limit: Self.purgeStep)
                purged += step
                behind = step == Self.purgeStep
            } while behind && (purged < 2 * claimed || ContinuousClock.now - started < Self.purgeBudget)
            if purged > 0 { state.withLock { $0.statistics.purged += purged } }
        }
        metrics.inFlight.record(state.withLock { $0.inHand.count })
        let now = outbox.clock.now()
        let waiting = try await outbox.store.waiting(now: now)
        metrics.waiting.record(waiting.count)
        metrics.oldestWaiting.record(waiting.oldestDueAt.map { max(0, now.timeIntervalSince($0)) } ?? 0)
        return behind
    }

    /// Messages one retention step deletes, in one transaction.
    static let purgeStep = 500
    /// The longest one housekeeping spends deleting once it has kept pace.
    static let purgeBudget = Duration.milliseconds(250)

    /// What came of handing a message to the client.
    private enum Attempt: Sendable {
        /// The client's report.
        case sent(DeliveryReport)
        /// It could not be prepared for sending, for this reason; nothing was sent.
        case unsendable(String)
        /// Every recipient was on the suppression list: nothing was sent.
        case notSent
        /// Sent a recipient a transaction (VERP): each recipient's report, in order.
        case sentEach([DeliveryReport])
    }
}

/// The worker's metrics (see ``OutboxWorker/Configuration-swift.struct/metrics``).
private struct WorkerMetrics: Sendable {
    let claimed: Counter
    let delivered: Counter
    let deferred: Counter
    let failed: Counter
    let expired: Counter
    let suppressed: Counter
    let addedToSuppressionList: Counter
    let unknown: Counter
    let leasesLost: Counter
    let attemptDuration: Metrics.Timer
    let inFlight: Gauge
    /// Messages due and not held by any worker (the store's, not this worker's).
    let waiting: Gauge
    /// Seconds since the oldest waiting message became due.
    let oldestWaiting: Gauge

    init(options: MetricsOptions) {
        let factory = options.factory ?? MetricsSystem.factory
        let base = options.dimensions
        func counter(_ label: String, _ dimensions: [(String, String)] = []) -> Counter {
            Counter(label: label, dimensions: base + dimensions, factory: factory)
        }
        func gauge(_ label: String) -> Gauge { Gauge(label: label, dimensions: base, factory: factory) }
        func outcome(_ name: String) -> Counter { counter("smtp.outbox.recipients", [("smtp.outcome", name)]) }
        claimed = counter("smtp.outbox.claimed")
        delivered = outcome("delivered")
        deferred = outcome("deferred")
        failed = outcome("failed")
        expired = outcome("expired")
        suppressed = outcome("suppressed")
        addedToSuppressionList = counter("smtp.outbox.suppressions.added")
        unknown = counter("smtp.outbox.unknown_outcomes")
        leasesLost = counter("smtp.outbox.leases.lost")
        attemptDuration = Metrics.Timer(label: "smtp.outbox.attempt.duration", dimensions: base,
                                        preferredDisplayUnit: .seconds, factory: factory)
        inFlight = gauge("smtp.outbox.in_flight")
        waiting = gauge("smtp.outbox.waiting")
        oldestWaiting = gauge("smtp.outbox.oldest_waiting.age")
    }

    func record(_ tally: OutboxWorker.Statistics, leasesLost lost: Int) {
        if tally.delivered > 0 { delivered.increment(by: tally.delivered) }
        if tally.deferred > 0 { deferred.increment(by: tally.deferred) }
        if tally.failed > 0 { failed.increment(by: tally.failed) }
        if tally.expired > 0 { expired.increment(by: tally.expired) }
        if tally.suppressed > 0 { suppressed.increment(by: tally.suppressed) }
        if tally.addedToSuppressionList > 0 { addedToSuppressionList.increment(by: tally.addedToSuppressionList) }
        if tally.unknown > 0 { unknown.increment(by: tally.unknown) }
        if lost > 0 { leasesLost.increment(by: lost) }
    }
}

/// Wakes a waiting loop: a signal that arrives while nobody waits is kept for the next wait.
final class Wakeup: Sendable {
    private struct State {
        var pending = false
        var waiter: CheckedContinuation<Void, Never>?
    }
    private let state = Locked(State())

    func signal() {
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard let waiter = state.waiter else {
                state.pending = true
                return nil
            }
            state.waiter = nil
            return waiter
        }
        waiter?.resume()
    }

    /// Returns on a signal, on cancellation, or after `timeout`.
    func wait(timeout: Duration) async {
        let timer = Task { [self] in
            // Only a timeout signals: a timer cancelled because the wait is over must not
            // leave a signal behind, or every later wait would return at once and the idle
            // worker would spin, asking the store for work hundreds of times a second.
            guard (try? await Task.sleep(for: timeout)) != nil else { return }
            signal()
        }
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let ready = state.withLock { state -> Bool in
                    if state.pending {
                        state.pending = false
                        return true
                    }
                    state.waiter = continuation
                    return false
                }
                if ready { continuation.resume() }
            }
        } onCancel: {
            signal()
        }
        // A signal from the timer after this is a spurious wake-up later: harmless, where
        // clearing it here could lose a real one.
        timer.cancel()
    }
}

#if ServiceLifecycleSupport
/// An ``OutboxWorker`` is a swift-service-lifecycle `Service`: on a graceful shutdown it
/// stops claiming, finishes and records what it holds, and ``OutboxWorker/run()`` returns.
/// Put it after its ``SMTPClient`` in the group, so the client outlives it.
extension OutboxWorker: Service {}
#endif
