import Foundation
import SluiceOutbox
import Synchronization

/// A store that forwards to another until told to fail: then every call throws
/// ``OutboxError/Kind/unavailable``, as a database that went away does.
final class FlakyStore: OutboxStore {
    static var schemaVersion: Int { SQLiteStore.schemaVersion }
    private let base: any OutboxStore
    private let failing = Atomic<Bool>(false)
    private let claimCalls = Atomic<Int>(0)
    private let claimsAllowed = Atomic<Int>(.max)
    private let recordsToRefuse = Atomic<Int>(0)
    private let recordCalls = Atomic<Int>(0)

    /// How many times a worker asked for work.
    var claims: Int { claimCalls.load(ordering: .sequentiallyConsistent) }
    /// How many times a worker asked to write outcomes, refused or not.
    var records: Int { recordCalls.load(ordering: .sequentiallyConsistent) }

    init(_ base: any OutboxStore) { self.base = base }

    /// From now on every call fails (or, with `false`, none does).
    func fail(_ on: Bool = true) { failing.store(on, ordering: .sequentiallyConsistent) }

    /// Claims after the first `count` fail, every other call succeeds.
    func failClaims(after count: Int) { claimsAllowed.store(count, ordering: .sequentiallyConsistent) }

    /// The next `count` records fail, having written nothing.
    func failRecords(_ count: Int) { recordsToRefuse.store(count, ordering: .sequentiallyConsistent) }

    private func check() throws(OutboxError) {
        if failing.load(ordering: .sequentiallyConsistent) {
            throw OutboxError(.unavailable, "the test took the store away")
        }
    }

    func initialize() async throws(OutboxError) -> Int { try check(); return try await base.initialize() }
    func checkSchema() async throws(OutboxError) { try check(); try await base.checkSchema() }
    func enqueue(_ messages: [PreparedMessage], now: Date) async throws(OutboxError) -> [EnqueueResult] {
        try check(); return try await base.enqueue(messages, now: now)
    }
    func claim(owner: String, limit: Int, now: Date, leaseUntil: Date, rateLimit: OutboxRateLimit?)
        async throws(OutboxError) -> [ClaimedMessage]
    {
        let call = claimCalls.add(1, ordering: .sequentiallyConsistent).newValue
        if call > claimsAllowed.load(ordering: .sequentiallyConsistent) {
            throw OutboxError(.unavailable, "the test refused the claim")
        }
        try check(); return try await base.claim(owner: owner, limit: limit, now: now, leaseUntil: leaseUntil, rateLimit: rateLimit)
    }
    func renew(owner: String, ids: [Int64], until: Date) async throws(OutboxError) -> Set<Int64> {
        try check(); return try await base.renew(owner: owner, ids: ids, until: until)
    }
    func release(owner: String, ids: [Int64], now: Date) async throws(OutboxError) {
        try check(); try await base.release(owner: owner, ids: ids, now: now)
    }
    func record(_ outcomes: [MessageOutcome], owner: String, now: Date) async throws(OutboxError) -> [Int64] {
        recordCalls.add(1, ordering: .sequentiallyConsistent)
        if !outcomes.isEmpty, recordsToRefuse.load(ordering: .sequentiallyConsistent) > 0 {
            recordsToRefuse.subtract(1, ordering: .sequentiallyConsistent)
            throw OutboxError(.unavailable, "the test refused the record")
        }
        try check(); return try await base.record(outcomes, owner: owner, now: now)
    }
    func status(now: Date) async throws(OutboxError) -> OutboxStatus { try check(); return try await base.status(now: now) }
    func hasPendingWork() async throws(OutboxError) -> Bool { try check(); return try await base.hasPendingWork() }
    func waiting(now: Date) async throws(OutboxError) -> (count: Int, oldestDueAt: Date?) {
        try check(); return try await base.waiting(now: now)
    }
    func nextDueAt() async throws(OutboxError) -> Date? { try check(); return try await base.nextDueAt() }
    func message(id: Int64, now: Date) async throws(OutboxError) -> OutboxRecord? {
        try check(); return try await base.message(id: id, now: now)
    }
    func content(id: Int64) async throws(OutboxError) -> [UInt8]? { try check(); return try await base.content(id: id) }
    func list(state: RecipientState?, afterID: Int64, limit: Int, now: Date) async throws(OutboxError) -> [OutboxRecord] {
        try check(); return try await base.list(state: state, afterID: afterID, limit: limit, now: now)
    }
    func cancel(id: Int64, now: Date) async throws(OutboxError) -> Int { try check(); return try await base.cancel(id: id, now: now) }
    func retry(id: Int64?, states: Set<RecipientState>, now: Date) async throws(OutboxError) -> Int {
        try check(); return try await base.retry(id: id, states: states, now: now)
    }
    func purge(finishedBefore before: Date, limit: Int) async throws(OutboxError) -> Int {
        try check(); return try await base.purge(finishedBefore: before, limit: limit)
    }
    func suppress(_ entries: [Suppression]) async throws(OutboxError) -> Int { try check(); return try await base.suppress(entries) }
    func unsuppress(_ targets: [String]) async throws(OutboxError) -> Int { try check(); return try await base.unsuppress(targets) }
    func suppressions(after: String?, limit: Int) async throws(OutboxError) -> [Suppression] {
        try check(); return try await base.suppressions(after: after, limit: limit)
    }
    func activeSuppressions(forAddresses addresses: [String], now: Date) async throws(OutboxError) -> [String: Suppression] {
        try check(); return try await base.activeSuppressions(forAddresses: addresses, now: now)
    }
    func secret() async throws(OutboxError) -> [UInt8] { try check(); return try await base.secret() }
    func messages(withMessageID messageID: String) async throws(OutboxError) -> [Int64] {
        try check(); return try await base.messages(withMessageID: messageID)
    }
    func recordBounces(_ bounces: [BounceRecord], now: Date) async throws(OutboxError) -> [Bool] {
        try check(); return try await base.recordBounces(bounces, now: now)
    }
    func subscribe(_ wake: @escaping @Sendable () -> Void) async throws(OutboxError) { try await base.subscribe(wake) }
    func close() async { await base.close() }
}
