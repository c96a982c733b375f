public import Foundation

/// Where an outbox keeps its messages: one protocol over SQLite and PostgreSQL, so the worker,
/// the command line and the tests do not care which they have.
///
/// A store is a dumb, durable ledger. It decides nothing about retries: the worker computes
/// every recipient's new state and when it is due again, and the store writes it. Every time
/// it is handed comes from the caller's clock, so a test can run days of retries in a moment.
public protocol OutboxStore: Sendable {
    /// The schema version this store writes.
    static var schemaVersion: Int { get }

    /// Creates the schema, or migrates an older one; returns the version before (0 for none).
    /// - Throws: ``OutboxError/Kind/schemaTooNew`` for a newer schema, touching nothing.
    func initialize() async throws(OutboxError) -> Int

    /// Checks the schema is there and current.
    func checkSchema() async throws(OutboxError)

    /// Adds messages in one transaction: all of them or none.
    func enqueue(_ messages: [PreparedMessage], now: Date) async throws(OutboxError) -> [EnqueueResult]

    /// Claims up to `limit` due messages for `owner` until `leaseUntil`, oldest due first,
    /// taking no more than `rateLimit` allows (summed over every worker of the store).
    func claim(owner: String, limit: Int, now: Date, leaseUntil: Date, rateLimit: OutboxRateLimit?)
        async throws(OutboxError) -> [ClaimedMessage]

    /// Extends `owner`'s claim on `ids` to `until`; returns the ids it still held.
    func renew(owner: String, ids: [Int64], until: Date) async throws(OutboxError) -> Set<Int64>

    /// Gives back claims on messages that were not sent: they are due again at once, and the
    /// attempt the claim counted is taken back.
    func release(owner: String, ids: [Int64], now: Date) async throws(OutboxError)

    /// Writes what `owner` learned, in one transaction; returns the ids whose claim `owner`
    /// no longer held (another worker took them over after the lease expired): those were
    /// not written.
    func record(_ outcomes: [MessageOutcome], owner: String, now: Date) async throws(OutboxError) -> [Int64]

    /// Counts by state.
    func status(now: Date) async throws(OutboxError) -> OutboxStatus

    /// Whether any recipient is pending (queued, deferred, or leased).
    func hasPendingWork() async throws(OutboxError) -> Bool

    /// Messages due now and not held by a worker, and when the oldest of them became due:
    /// cheap enough for a gauge every few seconds (an index range, not a scan).
    func waiting(now: Date) async throws(OutboxError) -> (count: Int, oldestDueAt: Date?)

    /// When the next message not held by a worker is due; nil when none is pending.
    func nextDueAt() async throws(OutboxError) -> Date?

    /// One message with its recipients, without its content.
    func message(id: Int64, now: Date) async throws(OutboxError) -> OutboxRecord?

    /// The message's content.
    func content(id: Int64) async throws(OutboxError) -> [UInt8]?

    /// Messages with a recipient in `state` (any state when nil), oldest first, after `afterID`.
    func list(state: RecipientState?, afterID: Int64, limit: Int, now: Date) async throws(OutboxError) -> [OutboxRecord]

    /// Cancels the message's pending and held recipients; returns how many were cancelled.
    func cancel(id: Int64, now: Date) async throws(OutboxError) -> Int

    /// Makes recipients in `states` (of one message, or of all when `id` is nil) queued and due
    /// now; returns how many.
    func retry(id: Int64?, states: Set<RecipientState>, now: Date) async throws(OutboxError) -> Int

    /// Deletes up to `limit` messages that finished before `before`; returns how many.
    func purge(finishedBefore before: Date, limit: Int) async throws(OutboxError) -> Int

    /// Adds entries to the suppression list, replacing any with the same target; returns how
    /// many were written.
    func suppress(_ entries: [Suppression]) async throws(OutboxError) -> Int

    /// Removes targets (normalized) from the suppression list; returns how many were there.
    func unsuppress(_ targets: [String]) async throws(OutboxError) -> Int

    /// The suppression list by target, after `after`, at most `limit` entries, lapsed ones
    /// included.
    func suppressions(after: String?, limit: Int) async throws(OutboxError) -> [Suppression]

    /// For each of `addresses` (envelope addresses) on the list at `now`, the entry that
    /// stops it: its own, else its domain's. Cheap when the list is empty: no address is
    /// looked at.
    func activeSuppressions(forAddresses addresses: [String], now: Date) async throws(OutboxError) -> [String: Suppression]

    /// The outbox's own secret, made when the schema was: it authenticates the `ENVID` of every
    /// message sent, so that a report naming one can be trusted.
    func secret() async throws(OutboxError) -> [UInt8]

    /// The outbox ids of messages whose `Message-ID` header is `messageID` (angle brackets
    /// included, as stored).
    func messages(withMessageID messageID: String) async throws(OutboxError) -> [Int64]

    /// Marks recipients delivered (or of unknown outcome) as bounced, with the report's status,
    /// and adds the suppressions, in one transaction. Returns, for each, whether a recipient
    /// was changed (false when the message has no such recipient, or it was not delivered).
    func recordBounces(_ bounces: [BounceRecord], now: Date) async throws(OutboxError) -> [Bool]

    /// Calls `wake` (on any thread) when messages may have been added, if the store can tell;
    /// a worker polls as well.
    func subscribe(_ wake: @escaping @Sendable () -> Void) async throws(OutboxError)

    /// Closes the store; calls after this fail.
    func close() async
}

extension OutboxStore {
    /// Stores that cannot tell ignore subscriptions; workers poll them.
    public func subscribe(_ wake: @escaping @Sendable () -> Void) async throws(OutboxError) {}
}

/// A message checked by ``Outbox`` and ready for a store.
public struct PreparedMessage: Sendable, Hashable {
    /// The message.
    public var message: OutboxMessage
    /// Its `Message-ID`, if it has one.
    public var messageID: String?
    /// The positions of recipients that are recorded as ``RecipientState/suppressed`` and
    /// never sent.
    public var suppressed: Set<Int>

    /// A prepared message.
    public init(message: OutboxMessage, messageID: String?, suppressed: Set<Int> = []) {
        self.message = message
        self.messageID = messageID
        self.suppressed = suppressed
    }
}
