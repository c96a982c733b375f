public import Foundation
public import SluiceCore

/// Where a recipient of an outbox message stands.
///
/// A recipient is *pending* while it is ``queued`` or ``deferred``; every other state but
/// ``leased`` is final until an operator says otherwise (``Outbox/retry(_:)``). ``leased`` is
/// never stored: it is what a pending recipient of a message a worker holds is reported as.
public enum RecipientState: String, Sendable, Hashable, Codable, CaseIterable, CustomStringConvertible {
    /// Waiting for its first attempt.
    case queued
    /// In a worker's hands now.
    case leased
    /// Accepted by the relay: a 2xx to its `RCPT` and to the end of the data.
    case delivered
    /// Refused for a transient reason; waiting for its next attempt.
    case deferred
    /// Refused for good (a 5xx, or a failure that no retry mends).
    case failed
    /// Deferred until the maximum age passed: given up, with the last reply kept.
    case expired
    /// The connection was lost after the end of the data, and the unknown-outcome policy is
    /// ``OutboxWorker/UnknownOutcomePolicy/hold``: left for an operator.
    case unknown
    /// Cancelled before it was delivered.
    case cancelled
    /// On a suppression list: recorded and never sent.
    case suppressed
    /// Accepted by the relay, then reported undeliverable by a delivery status notification
    /// that came back later (``Outbox/ingestReport(_:deliveredTo:suppressOn:classifier:)``).
    case bounced

    /// Whether a worker will still try it.
    public var isPending: Bool { self == .queued || self == .deferred || self == .leased }

    public var description: String { rawValue }
}

/// A message to put in the outbox.
public struct OutboxMessage: Sendable, Hashable {
    /// The envelope sender (`MAIL FROM`); empty for the null reverse path `<>`.
    public var sender: String
    /// The envelope recipients (`RCPT TO`), at least one.
    public var recipients: [String]
    /// The complete RFC 5322 message, stored once however many recipients it has.
    public var content: [UInt8]
    /// Enqueueing a message with a key already in the outbox adds nothing and returns the
    /// first message's id.
    public var idempotencyKey: String?
    /// Not sent before this time (scheduled sending); nil for as soon as possible.
    public var notBefore: Date?

    /// A message for the outbox.
    public init(sender: String, recipients: [String], content: [UInt8], idempotencyKey: String? = nil,
                notBefore: Date? = nil) {
        self.sender = sender
        self.recipients = recipients
        self.content = content
        self.idempotencyKey = idempotencyKey
        self.notBefore = notBefore
    }
}

/// What enqueueing one message did.
public struct EnqueueResult: Sendable, Hashable {
    /// The message's id in the outbox.
    public let id: Int64
    /// True when its idempotency key was already there: nothing was added, and ``id`` is the
    /// first message's.
    public let existed: Bool

    /// A result.
    public init(id: Int64, existed: Bool) {
        self.id = id
        self.existed = existed
    }
}

/// One recipient of a message in the outbox, as the store has it.
public struct OutboxRecipient: Sendable, Hashable, Codable {
    /// The recipient's position in the envelope (from 0).
    public var position: Int
    /// The address.
    public var address: String
    /// Its state.
    public var state: RecipientState
    /// Attempts made for it.
    public var attempts: Int
    /// Attempts whose outcome was unknown (the connection was lost after the end of data).
    public var unknownOutcomes: Int
    /// The reply code of its last attempt, if a reply came.
    public var code: Int?
    /// The enhanced status code of its last attempt (`5.1.1`), if the server sent one.
    public var enhancedCode: String?
    /// The server's text, or the error, of its last attempt.
    public var reply: String?
    /// Why its last attempt did not deliver it (``Sluice/BounceClass``); nil when it did, or
    /// before any attempt.
    public var bounceClass: BounceClass?
    /// When each attempt ended, first first.
    public var attemptTimes: [Date]

    /// A recipient record.
    public init(position: Int, address: String, state: RecipientState, attempts: Int = 0, unknownOutcomes: Int = 0,
                code: Int? = nil, enhancedCode: String? = nil, reply: String? = nil, bounceClass: BounceClass? = nil,
                attemptTimes: [Date] = []) {
        self.position = position
        self.address = address
        self.state = state
        self.attempts = attempts
        self.unknownOutcomes = unknownOutcomes
        self.code = code
        self.enhancedCode = enhancedCode
        self.reply = reply
        self.bounceClass = bounceClass
        self.attemptTimes = attemptTimes
    }
}

/// A message in the outbox, with every recipient's state.
public struct OutboxRecord: Sendable, Hashable {
    /// Its id.
    public var id: Int64
    /// Its idempotency key, if it was given one.
    public var idempotencyKey: String?
    /// The envelope sender; empty for `<>`.
    public var sender: String
    /// Its `Message-ID`, if it has one.
    public var messageID: String?
    /// Its size in octets.
    public var size: Int
    /// When it was enqueued.
    public var createdAt: Date
    /// Not sent before this time.
    public var notBefore: Date
    /// When its pending recipients are next due; nil when none is pending.
    public var dueAt: Date?
    /// Transactions tried for it.
    public var attempts: Int
    /// The worker holding it, while one does.
    public var leaseOwner: String?
    /// Until when that worker's claim holds without renewal.
    public var leaseExpiresAt: Date?
    /// The last error that was not a recipient's own reply (a refused connection, a timeout).
    public var lastError: String?
    /// Its recipients, in the envelope's order.
    public var recipients: [OutboxRecipient]
}

/// A message a worker claimed: what it needs to send it.
public struct ClaimedMessage: Sendable {
    /// Its id.
    public var id: Int64
    /// The envelope sender; empty for `<>`.
    public var sender: String
    /// The message.
    public var content: [UInt8]
    /// When it was enqueued, or its not-before time if later: the age the retry schedule
    /// counts from.
    public var firstDueAt: Date
    /// Transactions tried for it, this one included.
    public var attempts: Int
    /// The pending recipients to send to now: (position, address).
    public var recipients: [(position: Int, address: String)]

    /// A claimed message.
    public init(id: Int64, sender: String, content: [UInt8], firstDueAt: Date, attempts: Int,
                recipients: [(position: Int, address: String)]) {
        self.id = id
        self.sender = sender
        self.content = content
        self.firstDueAt = firstDueAt
        self.attempts = attempts
        self.recipients = recipients
    }
}

/// What a worker learned about one message's recipients, to be written back.
public struct MessageOutcome: Sendable, Hashable {
    /// One recipient's new state and the reply that decided it.
    public struct Recipient: Sendable, Hashable {
        /// Its position in the envelope.
        public var position: Int
        /// Its new state.
        public var state: RecipientState
        /// The reply code, if a reply came.
        public var code: Int?
        /// The enhanced status code, if the server sent one.
        public var enhancedCode: String?
        /// The server's text, or the error.
        public var reply: String?
        /// Why it was not delivered; nil when it was.
        public var bounceClass: BounceClass?
        /// Whether the outcome of this attempt was unknown (counted, whatever the policy did).
        public var unknownOutcome: Bool

        /// A recipient's outcome.
        public init(position: Int, state: RecipientState, code: Int? = nil, enhancedCode: String? = nil,
                    reply: String? = nil, bounceClass: BounceClass? = nil, unknownOutcome: Bool = false) {
            self.position = position
            self.state = state
            self.code = code
            self.enhancedCode = enhancedCode
            self.reply = reply
            self.bounceClass = bounceClass
            self.unknownOutcome = unknownOutcome
        }
    }

    /// The message.
    public var id: Int64
    /// The recipients tried.
    public var recipients: [Recipient]
    /// When the deferred recipients are due again; nil when none is deferred.
    public var nextAttemptAt: Date?
    /// An error that was not a recipient's own reply, if there was one.
    public var error: String?
    /// Addresses to add to the suppression list with the outcome (hard bounces), in the same
    /// transaction.
    public var suppress: [Suppression]

    /// A message's outcome.
    public init(id: Int64, recipients: [Recipient], nextAttemptAt: Date?, error: String?, suppress: [Suppression] = []) {
        self.id = id
        self.recipients = recipients
        self.nextAttemptAt = nextAttemptAt
        self.error = error
        self.suppress = suppress
    }
}

/// Counts and ages of an outbox.
public struct OutboxStatus: Sendable, Hashable {
    /// Recipients by state (every state is present, zero or not).
    public var recipients: [RecipientState: Int]
    /// Messages with a pending recipient: waiting (due now), scheduled (due later), leased.
    public var messagesWaiting: Int
    /// Messages due later (deferred or scheduled).
    public var messagesScheduled: Int
    /// Messages a worker holds.
    public var messagesLeased: Int
    /// Messages with no pending recipient.
    public var messagesFinished: Int
    /// When the oldest message that is due and not held became due; nil when none is.
    public var oldestWaitingSince: Date?
    /// Recipients delivered in the last minute.
    public var deliveredLastMinute: Int

    /// Recipients still to be tried: queued, leased or deferred.
    public var pendingRecipients: Int {
        (recipients[.queued] ?? 0) + (recipients[.leased] ?? 0) + (recipients[.deferred] ?? 0)
    }
}

/// A limit on how many messages every worker of one store claims a second, together.
public struct OutboxRateLimit: Sendable, Hashable {
    /// Messages a second, summed over every worker.
    public var messagesPerSecond: Double
    /// The most claimed at once after a pause (at least one batch).
    public var burst: Int

    /// A limit.
    public init(messagesPerSecond: Double, burst: Int) {
        self.messagesPerSecond = messagesPerSecond
        self.burst = max(1, burst)
    }
}

/// A bounce that came back after delivery, for a store to write.
public struct BounceRecord: Sendable, Hashable {
    /// The outbox message.
    public var messageID: Int64
    /// The recipient's address, as enqueued (compared without ASCII case).
    public var address: String
    /// The reported status (RFC 3463), as text.
    public var enhancedCode: String?
    /// What the remote host said, and which host.
    public var reply: String?
    /// The class the report gives.
    public var bounceClass: BounceClass
    /// The suppression it adds, if the bounce is hard.
    public var suppress: Suppression?

    /// A bounce.
    public init(messageID: Int64, address: String, enhancedCode: String?, reply: String?, bounceClass: BounceClass,
                suppress: Suppression?) {
        self.messageID = messageID
        self.address = address
        self.enhancedCode = enhancedCode
        self.reply = reply
        self.bounceClass = bounceClass
        self.suppress = suppress
    }
}
