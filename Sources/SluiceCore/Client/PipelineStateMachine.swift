/// The transactions of a ready client session: what is queued, started, written and
/// awaited, and how each reply settles them.
///
/// - With PIPELINING, `MAIL`, every `RCPT` and `DATA` go in one write, and the previous
///   message's content and terminator at the head of the next group.
/// - With CHUNKING too, whole transactions (`MAIL`, `RCPT`s, `BDAT n LAST` and content) go
///   back to back, several in flight.
/// - Without PIPELINING, one command, one reply.
///
/// Every recipient is judged on its own `RCPT` reply; a message is accepted only on a 2xx to
/// the end of its data; a session that fails after the terminator was written leaves the
/// outcome unknown. ``ClientStateMachine`` carries it: transactions queue here from the
/// start, and they are pumped once the opening is over.
struct PipelineStateMachine: Sendable {
    /// A reply the machine is waiting for, in the order the commands were written.
    enum Expectation: Hashable, Sendable {
        /// An RSET sent alone to check that a connection that sat idle is still alive.
        case probe
        case reset
        case mail(Int)
        case recipient(Int, Int)
        case data(Int)
        case content(Int)
        case bdat(Int)
        case quit
    }

    /// A command of a started transaction not yet written.
    private enum Step: Hashable, Sendable {
        case reset
        case mail(Int)
        case recipient(Int, Int)
        case data(Int)
        case bdat(Int)
    }

    /// A transaction whose MAIL is queued or written.
    private struct Active: Sendable {
        var transaction: SMTPTransaction
        var parameters: MailParameters
        var mailReply: SMTPReply?
        var recipientReplies: [SMTPReply?]
        var terminatorWritten = false
        /// The 354 came although no recipient was accepted: only the terminator was sent.
        var emptyTerminator = false
        /// Cancelled before the end of its data: it will never send content.
        var cancelled = false

        var id: Int { transaction.id }
        var anyRecipientAccepted: Bool { recipientReplies.contains { $0?.code.isPositiveCompletion == true } }
    }

    /// What a reply did to the session.
    enum ReplyVerdict: Sendable {
        /// The pipeline goes on: pump it.
        case next
        /// QUIT was answered: close.
        case quitAnswered
        /// The session fails with this error (nil: closed by our own choice, e.g. a 354 to
        /// a transaction cancelled before it).
        case fail(SMTPSessionError?)
    }

    /// What the transactions use of the server's capabilities, read once per EHLO.
    var features = Features()
    private let maximumTransactionsInFlight: Int
    private let timeouts: SMTPTimeouts

    /// Transactions not started yet, oldest first.
    private var pending: [SMTPTransaction] = []
    /// Started transactions, oldest first. A few at most (two without CHUNKING), so a
    /// search beats hashing, and an entry changes in place.
    private var active: [Active] = []
    /// Commands of started transactions not written yet.
    private var unsent: [Step] = []
    /// Replies awaited, in the order their commands were written.
    private var outstanding: [Expectation] = []
    /// How many entries at the end of `outstanding` belong to commands still in the output,
    /// not yet handed to the connection: a reply to one of them would answer a command the
    /// server has not seen, and is a protocol error.
    private var unwrittenExpectations = 0
    private var needsReset = false
    /// Check the connection with a lone RSET before the next transaction's content goes on it.
    private var needsProbe = false
    /// The probe's RSET already reset the session for the next transaction.
    private var probeReset = false
    private var transactionsStarted = 0

    /// A pipeline with nothing queued.
    init(configuration: ClientStateMachine.Configuration) {
        maximumTransactionsInFlight = configuration.maximumTransactionsInFlight
        timeouts = configuration.timeouts
    }

    struct Features: Sendable {
        var pipelining = false
        var chunking = false
        var smtpUTF8 = false
        var eightBitMIME = false
        var binaryMIME = false
        var deliveryStatusNotifications = false
        var maximumMessageSize: Int?

        init() {}

        init(_ capabilities: SMTPCapabilities, _ configuration: ClientStateMachine.Configuration) {
            pipelining = configuration.usePipelining && capabilities.pipelining
            chunking = pipelining && configuration.useChunking && capabilities.chunking
            smtpUTF8 = capabilities.smtpUTF8
            eightBitMIME = capabilities.eightBitMIME
            binaryMIME = capabilities.binaryMIME
            deliveryStatusNotifications = capabilities.deliveryStatusNotifications
            maximumMessageSize = capabilities.maximumMessageSize
        }
    }
    // MARK: What it holds

    /// Whether nothing is queued, unsent or awaited.
    var isIdle: Bool { outstanding.isEmpty && unsent.isEmpty && pending.isEmpty }

    /// Transactions queued or in flight.
    var load: Int { pending.count + active.count }

    /// The reply awaited first, if any.
    var awaited: Expectation? { outstanding.first }

    /// The command whose reply is awaited first, in words.
    var awaitedCommand: String? { outstanding.first.map(Self.verb) }

    /// Whether nothing but QUIT's reply (or nothing at all) is awaited.
    var awaitsOnlyQuit: Bool { outstanding.isEmpty || outstanding == [.quit] }

    /// Every command in the output was handed to the connection: replies may answer it.
    mutating func outputWritten() { unwrittenExpectations = 0 }

    // MARK: Requests

    /// Queues a transaction; it starts when ``pump(quitting:into:)`` finds room.
    mutating func enqueue(_ transaction: consuming SMTPTransaction) {
        pending.append(transaction)
    }

    /// Hands every transaction not started back, unattempted.
    mutating func returnPending(into effects: inout ClientEffects) {
        for transaction in pending { effects.actions.append(.transactionNotAttempted(transaction)) }
        pending = []
    }

    /// Removes a transaction that has not started; returns false if it already has.
    mutating func cancelPending(id: Int) -> Bool {
        guard let index = pending.firstIndex(where: { $0.id == id }) else { return false }
        pending.remove(at: index)
        return true
    }

    /// Marks a started transaction whose end of data has not been written as cancelled (see
    /// ``ClientStateMachine/cancelStarted(id:)``).
    mutating func cancelStarted(id: Int) {
        guard let index = activeIndex(id), !active[index].terminatorWritten else { return }
        active[index].cancelled = true
    }

    /// The next transaction waits for a lone RSET to be answered before any of it is written
    /// (see ``ClientStateMachine/idleConnectionReused()``). Only when nothing is in flight.
    mutating func probeBeforeNextTransaction() {
        guard outstanding.isEmpty, unsent.isEmpty, active.isEmpty else { return }
        needsProbe = true
    }

    // MARK: Transactions

    private var pipelining: Bool { features.pipelining }
    private var chunking: Bool { features.chunking }

    /// Writes whatever may be written now; `quitting` sends QUIT once nothing is in flight.
    mutating func pump(quitting: Bool, into effects: inout ClientEffects) {
        while true {
            if unsent.isEmpty {
                guard !quitting, !pending.isEmpty,
                      active.count < (chunking ? maximumTransactionsInFlight : 2)
                else { break }
                if needsProbe {
                    needsProbe = false
                    needsReset = false
                    probeReset = true
                    write(&effects, command: .reset, expecting: .probe)
                }
                if outstanding.contains(.probe) { break }
                // In DATA mode, start the next transaction once the previous one has written
                // its content, so its envelope rides in the same write as that content.
                if !chunking, active.contains(where: { !$0.terminatorWritten }) { break }
                start(&effects, pending.removeFirst())
                continue
            }
            if !pipelining, !outstanding.isEmpty { break }
            if outstanding.contains(where: { if case .data = $0 { return true } else { return false } }) { break }
            send(&effects, unsent.removeFirst())
        }
        if quitting, unsent.isEmpty, outstanding.isEmpty {
            write(&effects, command: .quit, expecting: .quit)
        }
    }

    private mutating func start(_ effects: inout ClientEffects, _ transaction: consuming SMTPTransaction) {
        var parameters = transaction.parameters
        if !features.deliveryStatusNotifications, parameters.hasDeliveryStatusParameters
            || transaction.recipients.contains(where: { $0.parameters != RecipientParameters() }) {
            // RFC 3461 §5.2: a server that does not offer DSN is not sent its parameters (it
            // would refuse them with a 555); the relay sends its own notifications.
            parameters.removeDeliveryStatusParameters()
            for index in transaction.recipients.indices { transaction.recipients[index].parameters = RecipientParameters() }
        }
        if transaction.requiresSMTPUTF8 {
            guard features.smtpUTF8 else {
                finishLocally(&effects, transaction, "an address needs SMTPUTF8, which the server does not offer",
                              code: EnhancedStatusCode(statusClass: 5, subject: 6, detail: 7))
                return
            }
            parameters.smtpUTF8 = true
        }
        if transaction.content.requires8BitMIME {
            guard features.eightBitMIME || chunking && features.binaryMIME else {
                finishLocally(&effects, transaction, "the content is 8-bit and the server does not offer 8BITMIME",
                              code: EnhancedStatusCode(statusClass: 5, subject: 6, detail: 3))
                return
            }
            if parameters.body == nil { parameters.body = .eightBitMIME }
        }
        if let limit = features.maximumMessageSize {
            let size = transaction.content.chunkLength
            if limit > 0, size > limit {
                finishLocally(&effects, transaction, "the message is \(size) octets; the server takes at most \(limit)",
                              code: EnhancedStatusCode(statusClass: 5, subject: 3, detail: 4))
                return
            }
            parameters.size = size
        }
        let id = transaction.id
        let recipients = transaction.recipients.count
        active.append(Active(transaction: transaction, parameters: parameters, recipientReplies: Array(nils: recipients)))
        if !probeReset, needsReset || (chunking && transactionsStarted > 0) {
            unsent.append(.reset)
        }
        needsReset = false
        probeReset = false
        transactionsStarted += 1
        unsent.append(.mail(id))
        for index in 0..<recipients { unsent.append(.recipient(id, index)) }
        unsent.append(chunking ? .bdat(id) : .data(id))
    }

    private mutating func send(_ effects: inout ClientEffects, _ step: Step) {
        switch step {
        case .reset:
            write(&effects, command: .reset, expecting: .reset)
        case .mail(let id):
            guard let i = activeIndex(id) else { return }
            if active[i].cancelled {
                finishCancelled(&effects, id)  // nothing of it was sent
                return
            }
            write(&effects, command: .mail(from: active[i].transaction.from, active[i].parameters), expecting: .mail(id))
        case .recipient(let id, let index):
            guard let i = activeIndex(id) else { return }
            if !pipelining, active[i].cancelled {
                needsReset = true
                finishCancelled(&effects, id)
                return
            }
            let recipient = active[i].transaction.recipients[index]
            write(&effects, command: .recipient(recipient.address, recipient.parameters), expecting: .recipient(id, index))
        case .data(let id):
            guard let i = activeIndex(id) else { return }
            if !pipelining, active[i].cancelled {
                needsReset = true
                finishCancelled(&effects, id)
                return
            }
            if !pipelining, !anyRecipientAccepted(at: i) {
                needsReset = true
                finishTransaction(&effects, id)  // no recipient: never send DATA
                return
            }
            write(&effects, command: .data, expecting: .data(id))
        case .bdat(let id):
            guard let i = activeIndex(id) else { return }
            if !pipelining, !anyRecipientAccepted(at: i) {
                needsReset = true
                finishTransaction(&effects, id)
                return
            }
            write(&effects, command: .bdat(size: active[i].transaction.content.chunkLength, last: true), expecting: .bdat(id))
            effects.output.append(.chunk(transactionID: id))
            active[i].terminatorWritten = true
        }
    }


    /// A reply arrived for a command of the pipeline (or QUIT).
    mutating func replyReceived(_ reply: SMTPReply, into effects: inout ClientEffects) -> ReplyVerdict {
        // Every reply answers the oldest command written and not yet answered. A reply with
        // no such command is not guessed at: the pairing of everything after it is in doubt.
        guard outstanding.count > unwrittenExpectations else {
            let detail = outstanding.isEmpty
                ? "a reply arrived with no command to answer"
                : "a reply arrived before its command (\(Self.verb(outstanding[0]))) was written"
            return .fail(SMTPSessionError(.protocolViolation, detail, reply: reply,
                                          command: outstanding.first.map(Self.verb)))
        }
        let expectation = outstanding.removeFirst()
        // 354 answers DATA and nothing else; a 3xx anywhere else means the replies and the
        // commands are out of step.
        if reply.code.kind == .positiveIntermediate, expectation != .quit {
            if case .data = expectation {} else {
                return .fail(SMTPSessionError(
                    .protocolViolation, "\(Self.verb(expectation)) was answered with \(reply.code.rawValue)",
                    reply: reply, command: Self.verb(expectation)))
            }
        }
        switch expectation {
        case .quit:
            return .quitAnswered
        case .reset, .probe:
            break  // whatever it says, the next MAIL tells
        case .mail(let id):
            if let i = activeIndex(id) { active[i].mailReply = reply }
            if !reply.code.isPositiveCompletion {
                needsReset = true
                if !pipelining { finishTransaction(&effects, id) }
            }
        case .recipient(let id, let index):
            if let i = activeIndex(id) { active[i].recipientReplies[index] = reply }
        case .data(let id):
            guard let i = activeIndex(id) else { break }
            if reply.code == .startMailInput, active[i].cancelled {
                // Content cannot be withheld after 354 (a lone terminator would deliver an
                // empty message): the only way out is to close.
                finishCancelled(&effects, id)
                return .fail(nil)
            }
            if reply.code == .startMailInput {
                if wasAccepted(at: i) {
                    effects.output.append(.data(transactionID: id))
                } else {
                    // A lenient server said 354 with no recipient: send only the terminator.
                    effects.output.appendTerminator()
                    active[i].emptyTerminator = true
                }
                active[i].terminatorWritten = true
                // DATA ends a group and nothing is written after it until it is answered, so
                // the content's reply is the only one awaited.
                assert(outstanding.isEmpty, "DATA is the last command awaiting a reply")
                expect(&effects, .content(id))
            } else if reply.code.isPositiveCompletion || reply.code.kind == .positiveIntermediate {
                // Only 354 lets content go; a 250 here would accept a message never sent.
                return .fail(SMTPSessionError(.protocolViolation, "DATA was answered with \(reply.code.rawValue), not 354",
                                              reply: reply, command: "DATA"))
            } else {
                needsReset = true
                finishTransaction(&effects, id, dataReply: reply, dataCommand: "DATA")
            }
        case .content(let id):
            finishTransaction(&effects, id, dataReply: reply, dataCommand: "DATA", contentSent: true)
        case .bdat(let id):
            if !reply.code.isPositiveCompletion { needsReset = true }
            finishTransaction(&effects, id, dataReply: reply, dataCommand: "BDAT", contentSent: true)
        }
        return .next
    }

    /// Reports a transaction from its replies and forgets it.
    private mutating func finishTransaction(_ effects: inout ClientEffects, _ id: Int, dataReply: SMTPReply? = nil,
                                            dataCommand: String? = nil, contentSent: Bool = false) {
        guard let entry = forget(id) else { return }
        effects.settledThisEvent.append((effects.actions.count, contentSent && !entry.emptyTerminator))
        effects.actions.append(.transactionFinished(Self.outcome(of: entry, dataReply: dataReply, dataCommand: dataCommand)))
    }

    private static func status(of reply: SMTPReply) -> DeliveryStatus {
        switch reply.code.kind {
        case .positiveCompletion: .accepted
        case .transientNegative: .deferred
        case .permanentNegative, .positiveIntermediate: .rejected
        }
    }

    /// An outcome in which every recipient shares the message's status and reply.
    private static func uniformOutcome(
        _ transaction: SMTPTransaction, _ status: DeliveryStatus, reply: SMTPReply?, command: String? = nil,
        error: SMTPSessionError?
    ) -> TransactionOutcome {
        TransactionOutcome(
            id: transaction.id, status: status,
            recipients: transaction.recipients.map { RecipientOutcome(address: $0.address, status: status, reply: reply) },
            reply: reply, command: reply == nil ? nil : command, error: error)
    }

    /// The message's status when no recipient was accepted: rejected only if every refusal is
    /// permanent; any 4xx makes it worth retrying.
    private static func statusWhenNoneAccepted(_ recipients: [RecipientOutcome]) -> DeliveryStatus {
        recipients.contains { $0.status == .deferred } ? .deferred : .rejected
    }

    private static func outcome(of entry: Active, dataReply: SMTPReply?, dataCommand: String?) -> TransactionOutcome {
        if let mailReply = entry.mailReply, !mailReply.code.isPositiveCompletion {
            return uniformOutcome(entry.transaction, status(of: mailReply), reply: mailReply, command: "MAIL", error: nil)
        }
        // Read in place, by index: a copy of the transaction, or zipping its arrays, retains
        // and releases every reference it holds, once a message.
        let count = min(entry.transaction.recipients.count, entry.recipientReplies.count)
        var recipients: [RecipientOutcome] = []
        recipients.reserveCapacity(count)
        for i in 0..<count {
            let address = entry.transaction.recipients[i].address
            if let reply = entry.recipientReplies[i], !reply.code.isPositiveCompletion {
                recipients.append(RecipientOutcome(address: address, status: status(of: reply), reply: reply))
            } else if let dataReply, entry.recipientReplies[i] != nil, !entry.emptyTerminator {
                recipients.append(RecipientOutcome(address: address, status: status(of: dataReply), reply: dataReply))
            } else {
                recipients.append(RecipientOutcome(address: address, status: .deferred, reply: entry.recipientReplies[i]))
            }
        }
        let status: DeliveryStatus
        let decidingReply: SMTPReply?
        let command: String?
        if !entry.anyRecipientAccepted {
            status = statusWhenNoneAccepted(recipients)
            // The reply that makes the status: the last transient refusal when one makes the
            // message worth retrying, else the last refusal.
            let refusals = entry.recipientReplies.compactMap { $0 }
            let lastRefusal = status == .deferred ? refusals.last { $0.code.isTransient } : refusals.last
            decidingReply = lastRefusal ?? dataReply
            command = lastRefusal != nil ? "RCPT" : dataReply == nil ? nil : dataCommand
        } else if let dataReply {
            status = Self.status(of: dataReply)
            decidingReply = dataReply
            command = dataCommand
        } else {
            status = .deferred
            decidingReply = nil
            command = nil
        }
        return TransactionOutcome(id: entry.id, status: status, recipients: recipients, reply: decidingReply,
                                  command: command, error: nil)
    }

    /// Whether started transaction `i` has a recipient accepted so far, read in place:
    /// reading `active[i]`'s replies through the array copies the whole entry first (a
    /// retain and a release of each of its references, once per message).
    private func anyRecipientAccepted(at i: Int) -> Bool {
        active.withUnsafeBufferPointer { $0[i].anyRecipientAccepted }
    }

    /// Whether started transaction `i`'s MAIL and at least one recipient were accepted, read
    /// in place (as ``anyRecipientAccepted(at:)`` is).
    private func wasAccepted(at i: Int) -> Bool {
        active.withUnsafeBufferPointer { $0[i].mailReply?.code.isPositiveCompletion == true && $0[i].anyRecipientAccepted }
    }

    /// Where transaction `id` is in `active`, if it is there.
    private func activeIndex(_ id: Int) -> Int? {
        active.firstIndex { $0.id == id }
    }

    /// Removes a transaction and its unsent commands; returns what was known of it.
    private mutating func forget(_ id: Int) -> Active? {
        guard let index = activeIndex(id) else { return nil }
        let entry = active.remove(at: index)
        unsent.removeAll { step in
            switch step {
            case .mail(let other), .recipient(let other, _), .data(let other), .bdat(let other): other == id
            case .reset: false
            }
        }
        return entry
    }

    /// Reports a cancelled transaction: nothing was delivered; every recipient refused by
    /// the server keeps its reply, the rest are deferred.
    private mutating func finishCancelled(_ effects: inout ClientEffects, _ id: Int) {
        guard let entry = forget(id) else { return }
        let error = SMTPSessionError(.cancelled, "the send was cancelled before the end of its data")
        let recipients = zip(entry.transaction.recipients, entry.recipientReplies).map { recipient, reply in
            if let reply, !reply.code.isPositiveCompletion {
                return RecipientOutcome(address: recipient.address, status: Self.status(of: reply), reply: reply)
            }
            return RecipientOutcome(address: recipient.address, status: .deferred, reply: nil)
        }
        effects.actions.append(.transactionFinished(TransactionOutcome(
            id: id, status: .deferred, recipients: recipients, reply: nil, command: nil, error: error)))
    }

    private mutating func finishLocally(_ effects: inout ClientEffects, _ transaction: SMTPTransaction, _ reason: String,
                                        code: EnhancedStatusCode?) {
        let error = SMTPSessionError(.refusedLocally, reason, command: "MAIL", enhancedCode: code)
        effects.actions.append(.transactionFinished(Self.uniformOutcome(transaction, .rejected, reply: nil, error: error)))
    }


    // MARK: Failure

    /// The session failed with `error`: settles every transaction. An unanswered one whose
    /// end of data was written is unknown, any other deferred, and those not started go
    /// elsewhere.
    ///
    /// After a protocol error no reply of this session can be trusted to answer the command
    /// it was paired with: the unfinished transactions are settled without their replies, and
    /// those settled earlier in this same event are settled again the same way (content sent:
    /// unknown; not sent: deferred), so an extra or early reply can never make one accepted.
    mutating func settle(after error: SMTPSessionError?, closingReply: SMTPReply?, into effects: inout ClientEffects) {
        let repliesTrusted = error?.kind != .protocolViolation
        if !repliesTrusted { Self.settleAgainWithoutReplies(error, &effects) }
        // A terminator still in `output` never reached the connection: nothing was sent.
        let unwritten = outstanding.suffix(unwrittenExpectations)
        func contentSent(_ entry: Active) -> Bool {
            entry.terminatorWritten && !entry.emptyTerminator
                && !unwritten.contains(.content(entry.id)) && !unwritten.contains(.bdat(entry.id))
        }
        if let closingReply, let first = outstanding.first {
            switch first {
            case .mail(let id), .recipient(let id, _), .data(let id), .content(let id), .bdat(let id):
                if let index = activeIndex(id) {
                    let entry = active.remove(at: index)
                    effects.actions.append(.transactionFinished(
                        Self.uniformOutcome(entry.transaction, .deferred, reply: closingReply, command: Self.verb(first),
                                            error: error)))
                }
            case .reset, .probe, .quit:
                break
            }
        }
        for entry in active {
            let id = entry.id
            if closingReply != nil, entry.mailReply == nil {
                // A 421 answers one command and the server processes none after it: a
                // transaction with no reply yet was never seen, and can go elsewhere.
                effects.actions.append(.transactionNotAttempted(entry.transaction))
                continue
            }
            let status: DeliveryStatus = contentSent(entry) ? .unknown : .deferred
            guard repliesTrusted else {
                effects.actions.append(.transactionFinished(Self.uniformOutcome(entry.transaction, status, reply: nil, error: error)))
                continue
            }
            let recipients = zip(entry.transaction.recipients, entry.recipientReplies).map { recipient, reply in
                if let reply, !reply.code.isPositiveCompletion {
                    return RecipientOutcome(address: recipient.address, status: Self.status(of: reply), reply: reply)
                }
                return RecipientOutcome(address: recipient.address, status: status, reply: reply)
            }
            let allRefused = !entry.anyRecipientAccepted && entry.recipientReplies.allSatisfy { $0 != nil }
            effects.actions.append(.transactionFinished(TransactionOutcome(
                id: id, status: allRefused ? Self.statusWhenNoneAccepted(recipients) : status,
                recipients: recipients, reply: nil, command: nil, error: error)))
        }
        active = []
        unsent = []
        outstanding = []
        for transaction in pending { effects.actions.append(.transactionNotAttempted(transaction)) }
        pending = []
        unwrittenExpectations = 0
    }

    /// Settles the transactions finished earlier in this event again, without their replies
    /// (see ``settle(after:closingReply:into:)``).
    private static func settleAgainWithoutReplies(_ error: SMTPSessionError?, _ effects: inout ClientEffects) {
        for (index, contentSent) in effects.settledThisEvent {
            guard case .transactionFinished(let outcome) = effects.actions[index] else { continue }
            let status: DeliveryStatus = contentSent ? .unknown : .deferred
            effects.actions[index] = .transactionFinished(TransactionOutcome(
                id: outcome.id, status: status,
                recipients: outcome.recipients.map { RecipientOutcome(address: $0.address, status: status, reply: nil) },
                reply: nil, command: nil, error: error))
        }
        effects.settledThisEvent.removeAll()
    }

    // MARK: Output

    private mutating func write(_ effects: inout ClientEffects, command: SMTPCommand, expecting expectation: Expectation) {
        effects.output.append(command)
        expect(&effects, expectation)
    }

    /// Awaits a reply to something just put in the output.
    private mutating func expect(_ effects: inout ClientEffects, _ expectation: Expectation) {
        outstanding.append(expectation)
        unwrittenExpectations += 1
    }

    /// How long the reply to `expectation` may take.
    func timeout(for expectation: Expectation) -> Duration {
        switch expectation {
        case .reset, .probe, .quit: timeouts.command
        case .mail: timeouts.mail
        case .recipient: timeouts.recipient
        case .data: timeouts.data
        case .content, .bdat: timeouts.dataTermination
        }
    }

    private static func verb(_ expectation: Expectation) -> String {
        switch expectation {
        case .reset, .probe: "RSET"
        case .mail: "MAIL"
        case .recipient: "RCPT"
        case .data: "DATA"
        case .content: "end of data"
        case .bdat: "BDAT"
        case .quit: "QUIT"
        }
    }

}
