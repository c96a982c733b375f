public import Foundation
import SluiceCore
import Synchronization

/// The embedded outbox: one SQLite file in WAL mode, for one host.
///
/// Every call runs on a thread of the store's own (SQLite blocks), in a transaction that takes
/// the write lock at once, so several processes (workers, `sluice outbox enqueue`) can share
/// the file. Times are kept as milliseconds since 1970 (UTC).
public final class SQLiteStore: OutboxStore {
    public static let schemaVersion = 2

    /// How hard SQLite makes each commit durable.
    public enum Synchronous: String, Sendable, CaseIterable {
        /// Each commit is on the disk before it returns: survives a power cut (the default).
        case full
        /// A commit survives the process crashing, not the machine losing power; faster.
        case normal
    }

    /// The database file.
    public let path: String
    private let thread: SQLiteThread
    /// A second connection, on a thread of its own, that copies the WAL into the database
    /// file while the first goes on writing.
    private let checkpointer: SQLiteThread
    let checkpoints = Checkpoints()

    /// The WAL's size, in pages, at which a commit asks the checkpointer to copy it into the
    /// database file (SQLite's own default for the checkpoint a commit runs itself).
    static let checkpointPages = 1_000
    /// The WAL's size at which a commit checkpoints itself, as SQLite would after every
    /// commit past a thousand pages, so that the WAL starts again from its beginning.
    static let inlineCheckpointPages = 16_000
    /// The size the writer cuts the WAL back to when it starts it again from its beginning.
    /// Copied by the checkpointer, the WAL would otherwise stay as large as the largest burst
    /// ever made it (up to ``inlineCheckpointPages`` pages, or one large transaction).
    static let walBytesKept = 16 << 20

    /// Opens the store at `path`, creating the file if it does not exist.
    public init(path: String, synchronous: Synchronous = .full) async throws(OutboxError) {
        self.path = path
        let writer = try await SQLiteThread { () throws(OutboxError) in
            let database = try SQLiteDatabase(path: path, create: true)
            // WAL: readers never wait for the writer, and a commit is one append.
            try database.execute("PRAGMA journal_mode=WAL")
            try database.execute("PRAGMA synchronous=\(synchronous.rawValue.uppercased())")
            try database.execute("PRAGMA journal_size_limit=\(Self.walBytesKept)")
            return database
        }
        let checkpointer: SQLiteThread
        do throws(OutboxError) {
            checkpointer = try await SQLiteThread(named: "sluice-checkpt") { () throws(OutboxError) in
                let database = try SQLiteDatabase(path: path, create: false)
                // A connection opens the WAL with its first read, and until then its
                // checkpoints do nothing; nor, closing last, would it remove the WAL.
                try database.execute("SELECT count(*) FROM sqlite_master")
                return database
            }
        } catch {
            await writer.close()
            throw error
        }
        thread = writer
        self.checkpointer = checkpointer
        // A checkpoint run by the commit that filled the WAL, as SQLite does by default, cost
        // the writer two fsyncs and the copy every four batches or so (0.5 s of fsync in an
        // enqueue of 50,000 messages). The checkpointer copies while the writer goes on. The
        // WAL starts again from its beginning only when a writer finds it copied in full, which
        // a writer that never pauses does not: it grows to `inlineCheckpointPages` (64 MB), where
        // the commit checkpoints what little is left itself.
        let checkpoints = checkpoints
        try await writer.run { (database) throws(OutboxError) in
            database.onWALCommit { database, pages in
                if pages >= Self.inlineCheckpointPages {
                    database.checkpoint()
                    return
                }
                guard pages >= Self.checkpointPages,
                      checkpoints.pending.compareExchange(expected: false, desired: true, ordering: .relaxed).exchanged
                else { return }
                let posted = checkpointer.post { database in
                    if let result = database?.checkpoint() { checkpoints.finished(result) }
                    checkpoints.pending.store(false, ordering: .relaxed)
                }
                if !posted { checkpoints.pending.store(false, ordering: .relaxed) }
            }
        }
    }

    /// Closes the writing connection, then the checkpointer's.
    public func close() async {
        await thread.close()
        await checkpointer.close()
    }

    /// Whether a checkpoint is asked for, and what the checkpointer has done (for tests).
    final class Checkpoints: Sendable {
        /// A checkpoint is asked for and not yet finished.
        let pending = Atomic<Bool>(false)
        private let state = Mutex<(count: Int, frames: Int, checkpointed: Int)>((0, 0, 0))

        /// Checkpoints finished, and the WAL's frames and those copied at the last of them.
        var last: (count: Int, frames: Int, checkpointed: Int) { state.withLock { $0 } }

        func finished(_ result: (frames: Int, checkpointed: Int)) {
            state.withLock { $0 = ($0.count + 1, result.frames, result.checkpointed) }
        }
    }

    /// Runs SQL directly (for tests and maintenance).
    func execute(_ sql: String) async throws(OutboxError) {
        try await thread.run { (database) throws(OutboxError) in try database.execute(sql) }
    }

    // MARK: Schema

    static let schema = [
        """
        CREATE TABLE sluice_messages (
            id INTEGER PRIMARY KEY,
            idempotency_key TEXT,
            sender TEXT NOT NULL,
            message_id TEXT,
            size INTEGER NOT NULL,
            created_at INTEGER NOT NULL,
            not_before INTEGER NOT NULL,
            age_from INTEGER NOT NULL,
            due_at INTEGER,
            attempts INTEGER NOT NULL DEFAULT 0,
            lease_owner TEXT,
            lease_expires_at INTEGER,
            finished_at INTEGER,
            last_error TEXT
        )
        """,
        // A claim reads this index from its start: due messages, and held ones whose lease
        // expired (a held message's due_at is its lease's expiry).
        "CREATE INDEX sluice_messages_due ON sluice_messages (due_at) WHERE due_at IS NOT NULL",
        "CREATE INDEX sluice_messages_finished ON sluice_messages (finished_at) WHERE finished_at IS NOT NULL",
        // Partial: most messages have no key, and every rewrite of their row would otherwise
        // touch this index too.
        """
        CREATE UNIQUE INDEX sluice_messages_idempotency_key ON sluice_messages (idempotency_key)
        WHERE idempotency_key IS NOT NULL
        """,
        // The content apart from the row that changes with every claim and outcome, so that
        // those writes do not copy it again.
        "CREATE TABLE sluice_contents (message_id INTEGER PRIMARY KEY, content BLOB NOT NULL)",
        """
        CREATE TABLE sluice_recipients (
            message_id INTEGER NOT NULL REFERENCES sluice_messages (id),
            position INTEGER NOT NULL,
            address TEXT NOT NULL,
            state TEXT NOT NULL,
            attempts INTEGER NOT NULL DEFAULT 0,
            unknown_outcomes INTEGER NOT NULL DEFAULT 0,
            code INTEGER,
            enhanced_code TEXT,
            reply TEXT,
            last_attempt_at INTEGER,
            attempt_times TEXT,
            PRIMARY KEY (message_id, position)
        ) WITHOUT ROWID
        """,
        "CREATE TABLE sluice_rate (id INTEGER PRIMARY KEY CHECK (id = 1), tokens REAL NOT NULL, updated_at INTEGER NOT NULL)",
    ]

    /// What each version adds to the one before, by the version it makes.
    private static let migrations: [(version: Int, statements: [String])] = [
        (2, [
            // Why a recipient was not delivered (a BounceClass name).
            "ALTER TABLE sluice_recipients ADD COLUMN bounce_class TEXT",
            // Addresses and domains nothing is sent to.
            """
            CREATE TABLE sluice_suppressions (
                target TEXT PRIMARY KEY,
                reason TEXT NOT NULL,
                detail TEXT,
                created_at INTEGER NOT NULL,
                expires_at INTEGER
            ) WITHOUT ROWID
            """,
            // The outbox's secret, which authenticates the ENVID every message is sent with.
            "CREATE TABLE sluice_settings (name TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID",
            "INSERT INTO sluice_settings (name, value) VALUES ('secret', lower(hex(randomblob(32))))",
            // Reports that carry no ENVID are matched by the returned Message-ID.
            "CREATE INDEX sluice_messages_message_id ON sluice_messages (message_id) WHERE message_id IS NOT NULL",
        ]),
    ]

    public func initialize() async throws(OutboxError) -> Int {
        try await thread.run { (database) throws(OutboxError) in
            try database.transaction { () throws(OutboxError) in
                let version = try Self.version(database)
                if version > Self.schemaVersion { throw Self.tooNew(version) }
                if version == 0 {
                    try database.execute("CREATE TABLE sluice_schema (version INTEGER NOT NULL)")
                    for statement in Self.schema { try database.execute(statement) }
                    try database.execute("INSERT INTO sluice_schema (version) VALUES (1)")
                }
                for migration in Self.migrations where migration.version > max(version, 1) {
                    for statement in migration.statements { try database.execute(statement) }
                    try database.execute("UPDATE sluice_schema SET version = \(migration.version)")
                }
                return version
            }
        }
    }

    public func checkSchema() async throws(OutboxError) {
        try await thread.run { (database) throws(OutboxError) in try Self.check(database) }
    }

    private static func check(_ database: SQLiteDatabase) throws(OutboxError) {
        let version = try version(database)
        if version == 0 {
            throw OutboxError(.notInitialized, "the outbox has no schema; run `sluice outbox init` first")
        }
        if version > schemaVersion { throw tooNew(version) }
        if version < schemaVersion {
            throw OutboxError(.notInitialized, "the outbox has schema \(version); run `sluice outbox init` to migrate it to \(schemaVersion)")
        }
    }

    private static func tooNew(_ version: Int) -> OutboxError {
        OutboxError(.schemaTooNew, "the outbox has schema version \(version), newer than this Sluice knows (\(schemaVersion)); nothing was changed")
    }

    private static func version(_ database: SQLiteDatabase) throws(OutboxError) -> Int {
        let exists = try database.statement("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'sluice_schema'")
        guard try exists.step() else { return 0 }
        let statement = try database.statement("SELECT max(version) FROM sluice_schema")
        return try statement.step() ? statement.int(0) : 0
    }

    // MARK: Enqueue

    public func enqueue(_ messages: [PreparedMessage], now: Date) async throws(OutboxError) -> [EnqueueResult] {
        let now = now.milliseconds
        return try await thread.run { (database) throws(OutboxError) in
            try Self.check(database)
            return try database.transaction { () throws(OutboxError) in
                var results: [EnqueueResult] = []
                results.reserveCapacity(messages.count)
                for prepared in messages {
                    let message = prepared.message
                    if let key = message.idempotencyKey {
                        let existing = try database.statement("SELECT id FROM sluice_messages WHERE idempotency_key = ?1")
                        existing.bind(1, key)
                        if try existing.step() {
                            results.append(EnqueueResult(id: existing.int64(0), existed: true))
                            continue
                        }
                    }
                    let notBefore = max(now, message.notBefore?.milliseconds ?? now)
                    let pending = message.recipients.indices.contains { !prepared.suppressed.contains($0) }
                    try database.statement("""
                        INSERT INTO sluice_messages (idempotency_key, sender, message_id, size, created_at,
                            not_before, age_from, due_at, finished_at)
                        VALUES (?1, ?2, ?3, ?5, ?6, ?7, ?7, ?8, ?9)
                        """)
                        .bind(1, message.idempotencyKey).bind(2, message.sender).bind(3, prepared.messageID)
                        .bind(5, message.content.count).bind(6, now)
                        .bind(7, notBefore).bind(8, pending ? notBefore : nil).bind(9, pending ? nil : now)
                        .run()
                    let id = database.lastInsertedRowID
                    try database.statement("INSERT INTO sluice_contents (message_id, content) VALUES (?1, ?2)")
                        .bind(1, id).bind(2, blob: message.content).run()
                    let insert: StaticString = "INSERT INTO sluice_recipients (message_id, position, address, state) VALUES (?1, ?2, ?3, ?4)"
                    for (position, address) in message.recipients.enumerated() {
                        let state: RecipientState = prepared.suppressed.contains(position) ? .suppressed : .queued
                        try database.statement(insert).bind(1, id).bind(2, position).bind(3, address)
                            .bind(4, state.rawValue).run()
                    }
                    results.append(EnqueueResult(id: id, existed: false))
                }
                return results
            }
        }
    }

    // MARK: Claiming

    public func claim(owner: String, limit: Int, now: Date, leaseUntil: Date, rateLimit: OutboxRateLimit?)
        async throws(OutboxError) -> [ClaimedMessage]
    {
        let now = now.milliseconds
        let leaseUntil = leaseUntil.milliseconds
        return try await thread.run { (database) throws(OutboxError) in
            try database.transaction { () throws(OutboxError) in
                var limit = limit
                var bucket: (tokens: Double, limit: OutboxRateLimit)?
                if let rateLimit {
                    let tokens = try Self.refill(database, rateLimit, now: now)
                    limit = min(limit, Int(tokens.rounded(.down)))
                    bucket = (tokens, rateLimit)
                }
                // One statement claims the batch, one reads its recipients.
                var claimed: [ClaimedMessage] = []
                if limit > 0 {
                    let due = try database.statement("""
                        UPDATE sluice_messages SET lease_owner = ?3, lease_expires_at = ?4, due_at = ?4,
                            attempts = attempts + 1
                        WHERE id IN (SELECT id FROM sluice_messages WHERE due_at <= ?1 ORDER BY due_at, id LIMIT ?2)
                        RETURNING id, sender, age_from, attempts
                        """)
                    due.bind(1, now).bind(2, limit).bind(3, owner).bind(4, leaseUntil)
                    while try due.step() {
                        claimed.append(ClaimedMessage(
                            id: due.int64(0), sender: due.string(1) ?? "", content: [],
                            firstDueAt: Date(milliseconds: due.int64(2)), attempts: due.int(3), recipients: []))
                    }
                }
                guard !claimed.isEmpty else {
                    if let bucket {
                        try database.statement("UPDATE sluice_rate SET tokens = ?1, updated_at = ?2 WHERE id = 1")
                            .bind(1, bucket.tokens).bind(2, now).run()
                    }
                    return []
                }
                var index = Dictionary(uniqueKeysWithValues: claimed.indices.map { (claimed[$0].id, $0) })
                let recipients = try database.statement("""
                    SELECT r.message_id, r.position, r.address FROM sluice_messages m
                    JOIN sluice_recipients r ON r.message_id = m.id
                    WHERE m.due_at = ?1 AND m.lease_owner = ?2 AND r.state IN ('queued', 'deferred')
                    ORDER BY r.message_id, r.position
                    """)
                recipients.bind(1, leaseUntil).bind(2, owner)
                while try recipients.step() {
                    guard let position = index[recipients.int64(0)] else { continue }
                    claimed[position].recipients.append((recipients.int(1), recipients.string(2) ?? ""))
                }
                let contents = try database.statement("""
                    SELECT c.message_id, c.content FROM sluice_messages m JOIN sluice_contents c ON c.message_id = m.id
                    WHERE m.due_at = ?1 AND m.lease_owner = ?2
                    """)
                contents.bind(1, leaseUntil).bind(2, owner)
                while try contents.step() {
                    guard let position = index[contents.int64(0)] else { continue }
                    claimed[position].content = contents.blob(1)
                }
                var sendable: [ClaimedMessage] = []
                sendable.reserveCapacity(claimed.count)
                for message in claimed {
                    guard message.recipients.isEmpty else {
                        sendable.append(message)
                        continue
                    }
                    // Cancelled while a worker that then vanished held it: nothing is left to send.
                    try database.statement("""
                        UPDATE sluice_messages SET due_at = NULL, lease_owner = NULL, lease_expires_at = NULL,
                            finished_at = ?2, attempts = max(0, attempts - 1) WHERE id = ?1
                        """).bind(1, message.id).bind(2, now).run()
                }
                index = [:]
                if let bucket {
                    try database.statement("UPDATE sluice_rate SET tokens = ?1, updated_at = ?2 WHERE id = 1")
                        .bind(1, bucket.tokens - Double(sendable.count)).bind(2, now).run()
                }
                return sendable
            }
        }
    }

    /// The rate limit's tokens now: what was left, plus what the time since earned, at most a
    /// burst. The bucket is shared by every worker of the file.
    private static func refill(_ database: SQLiteDatabase, _ limit: OutboxRateLimit, now: Int64) throws(OutboxError) -> Double {
        let read = try database.statement("SELECT tokens, updated_at FROM sluice_rate WHERE id = 1")
        guard try read.step() else {
            try database.statement("INSERT INTO sluice_rate (id, tokens, updated_at) VALUES (1, ?1, ?2)")
                .bind(1, Double(limit.burst)).bind(2, now).run()
            return Double(limit.burst)
        }
        let (tokens, updated) = (read.double(0), read.int64(1))
        let earned = Double(max(0, now - updated)) / 1000 * limit.messagesPerSecond
        return min(Double(limit.burst), tokens + earned)
    }

    public func renew(owner: String, ids: [Int64], until: Date) async throws(OutboxError) -> Set<Int64> {
        let until = until.milliseconds
        return try await thread.run { (database) throws(OutboxError) in
            try database.transaction { () throws(OutboxError) in
                var held = Set<Int64>()
                for id in ids {
                    try database.statement("""
                        UPDATE sluice_messages SET lease_expires_at = ?3, due_at = ?3
                        WHERE id = ?1 AND lease_owner = ?2
                        """).bind(1, id).bind(2, owner).bind(3, until).run()
                    if database.changes > 0 { held.insert(id) }
                }
                return held
            }
        }
    }

    public func release(owner: String, ids: [Int64], now: Date) async throws(OutboxError) {
        let now = now.milliseconds
        try await thread.run { (database) throws(OutboxError) in
            try database.transaction { () throws(OutboxError) in
                for id in ids {
                    try database.statement("""
                        UPDATE sluice_messages SET lease_owner = NULL, lease_expires_at = NULL, due_at = ?3,
                            attempts = max(0, attempts - 1)
                        WHERE id = ?1 AND lease_owner = ?2
                        """).bind(1, id).bind(2, owner).bind(3, now).run()
                }
            }
        }
    }

    // MARK: Recording

    public func record(_ outcomes: [MessageOutcome], owner: String, now: Date) async throws(OutboxError) -> [Int64] {
        let now = now.milliseconds
        return try await thread.run { (database) throws(OutboxError) in
            try database.transaction { () throws(OutboxError) in
                // Which of them this worker still holds, in one statement for the batch: the
                // transaction holds the write lock, so nobody takes one over before it ends.
                var ids = "["
                for outcome in outcomes {
                    if ids.utf8.count > 1 { ids += "," }
                    ids += String(outcome.id)
                }
                ids += "]"
                let holder = try database.statement(
                    "SELECT id FROM sluice_messages WHERE id IN (SELECT value FROM json_each(?1)) AND lease_owner = ?2")
                holder.bind(1, ids).bind(2, owner)
                var held = Set<Int64>(minimumCapacity: outcomes.count)
                while try holder.step() { held.insert(holder.int64(0)) }
                var lost: [Int64] = []
                for outcome in outcomes {
                    guard held.contains(outcome.id) else {
                        lost.append(outcome.id)
                        continue
                    }
                    for recipient in outcome.recipients {
                        // What happened on the wire is written whatever an operator did in the
                        // meantime; a refusal only where the recipient is still pending (a
                        // cancel while it was in flight stays a cancel).
                        let happened = recipient.state == .delivered || recipient.unknownOutcome
                        try database.statement("""
                            UPDATE sluice_recipients SET state = ?3, attempts = attempts + (?3 <> 'suppressed'),
                                unknown_outcomes = unknown_outcomes + ?4, code = ?5, enhanced_code = ?6, reply = ?7,
                                last_attempt_at = ?8, bounce_class = ?10,
                                attempt_times = CASE WHEN ?3 = 'suppressed' THEN attempt_times
                                                     WHEN attempt_times IS NULL THEN ?8
                                                     ELSE attempt_times || ',' || ?8 END
                            WHERE message_id = ?1 AND position = ?2 AND (?9 OR state IN ('queued', 'deferred'))
                            """)
                            .bind(1, outcome.id).bind(2, recipient.position).bind(3, recipient.state.rawValue)
                            .bind(4, recipient.unknownOutcome ? 1 : 0).bind(5, recipient.code)
                            .bind(6, recipient.enhancedCode).bind(7, recipient.reply).bind(8, now)
                            .bind(9, happened ? 1 : 0).bind(10, recipient.bounceClass?.rawValue).run()
                    }
                    for entry in outcome.suppress { try Self.write(entry, to: database) }
                    // Due again if a recipient is still pending, else finished: one statement,
                    // which looks for a pending recipient once for both columns.
                    try database.statement("""
                        UPDATE sluice_messages SET lease_owner = NULL, lease_expires_at = NULL,
                            (due_at, finished_at) = (
                                SELECT CASE WHEN pending THEN coalesce(?2, ?3) END, CASE WHEN pending THEN NULL ELSE ?3 END
                                FROM (SELECT EXISTS (SELECT 1 FROM sluice_recipients
                                                     WHERE message_id = ?1 AND state IN ('queued', 'deferred')) AS pending)),
                            last_error = ?4
                        WHERE id = ?1
                        """)
                        .bind(1, outcome.id).bind(2, outcome.nextAttemptAt?.milliseconds).bind(3, now)
                        .bind(4, outcome.error).run()
                }
                return lost
            }
        }
    }

    // MARK: Suppression

    private static func write(_ entry: Suppression, to database: SQLiteDatabase) throws(OutboxError) {
        try database.statement("""
            INSERT INTO sluice_suppressions (target, reason, detail, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5)
            ON CONFLICT (target) DO UPDATE SET reason = excluded.reason, detail = excluded.detail,
                created_at = excluded.created_at, expires_at = excluded.expires_at
            """)
            .bind(1, entry.target).bind(2, entry.reason).bind(3, entry.detail).bind(4, entry.createdAt.milliseconds)
            .bind(5, entry.expiresAt?.milliseconds).run()
    }

    public func suppress(_ entries: [Suppression]) async throws(OutboxError) -> Int {
        try await thread.run { (database) throws(OutboxError) in
            try Self.check(database)
            return try database.transaction { () throws(OutboxError) in
                for entry in entries { try Self.write(entry, to: database) }
                return entries.count
            }
        }
    }

    public func unsuppress(_ targets: [String]) async throws(OutboxError) -> Int {
        try await thread.run { (database) throws(OutboxError) in
            try Self.check(database)
            return try database.transaction { () throws(OutboxError) in
                var removed = 0
                for target in targets {
                    try database.statement("DELETE FROM sluice_suppressions WHERE target = ?1").bind(1, target).run()
                    removed += database.changes
                }
                return removed
            }
        }
    }

    public func suppressions(after: String?, limit: Int) async throws(OutboxError) -> [Suppression] {
        try await thread.run { (database) throws(OutboxError) in
            try Self.check(database)
            let rows = try database.statement("""
                SELECT target, reason, detail, created_at, expires_at FROM sluice_suppressions
                WHERE ?1 IS NULL OR target > ?1 ORDER BY target LIMIT ?2
                """)
            rows.bind(1, after).bind(2, limit)
            return try Self.suppressions(from: rows)
        }
    }

    public func activeSuppressions(forAddresses addresses: [String], now: Date) async throws(OutboxError)
        -> [String: Suppression]
    {
        guard !addresses.isEmpty else { return [:] }
        let now = now.milliseconds
        return try await thread.run { (database) throws(OutboxError) in
            try Self.check(database)
            // Most outboxes have an empty list or a short one: no look-up per recipient then.
            guard try database.statement("SELECT 1 FROM sluice_suppressions LIMIT 1").step() else { return [:] }
            var found: [String: Suppression] = [:]
            for address in addresses where found[address] == nil {
                for target in Suppression.targets(of: address) {
                    let rows = try database.statement("""
                        SELECT target, reason, detail, created_at, expires_at FROM sluice_suppressions
                        WHERE target = ?1 AND (expires_at IS NULL OR expires_at > ?2)
                        """)
                    rows.bind(1, target).bind(2, now)
                    if let entry = try Self.suppressions(from: rows).first {
                        found[address] = entry
                        break
                    }
                }
            }
            return found
        }
    }

    // MARK: Bounces

    public func secret() async throws(OutboxError) -> [UInt8] {
        try await thread.run { (database) throws(OutboxError) in
            try Self.check(database)
            let row = try database.statement("SELECT value FROM sluice_settings WHERE name = 'secret'")
            guard try row.step(), let hex = row.string(0), let secret = hexBytes(hex) else {
                throw OutboxError(.database, "the outbox has no secret")
            }
            return secret
        }
    }

    public func messages(withMessageID messageID: String) async throws(OutboxError) -> [Int64] {
        try await thread.run { (database) throws(OutboxError) in
            try Self.check(database)
            let rows = try database.statement("SELECT id FROM sluice_messages WHERE message_id = ?1 ORDER BY id")
            rows.bind(1, messageID)
            var ids: [Int64] = []
            while try rows.step() { ids.append(rows.int64(0)) }
            return ids
        }
    }

    public func recordBounces(_ bounces: [BounceRecord], now: Date) async throws(OutboxError) -> [Bool] {
        let now = now.milliseconds
        return try await thread.run { (database) throws(OutboxError) in
            try Self.check(database)
            return try database.transaction { () throws(OutboxError) in
                var changed: [Bool] = []
                for bounce in bounces {
                    try database.statement("""
                        UPDATE sluice_recipients SET state = 'bounced', enhanced_code = ?3, reply = ?4, bounce_class = ?5,
                            code = NULL, last_attempt_at = ?6
                        WHERE message_id = ?1 AND lower(address) = lower(?2) AND state IN ('delivered', 'unknown')
                        """)
                        .bind(1, bounce.messageID).bind(2, bounce.address).bind(3, bounce.enhancedCode).bind(4, bounce.reply)
                        .bind(5, bounce.bounceClass.rawValue).bind(6, now).run()
                    changed.append(database.changes > 0)
                    if database.changes > 0, let entry = bounce.suppress { try Self.write(entry, to: database) }
                }
                return changed
            }
        }
    }

    private static func suppressions(from rows: SQLiteStatement) throws(OutboxError) -> [Suppression] {
        var entries: [Suppression] = []
        while try rows.step() {
            // Read as written: the target was normalized on the way in.
            entries.append(Suppression(
                stored: rows.string(0) ?? "", reason: rows.string(1) ?? "", detail: rows.string(2),
                createdAt: Date(milliseconds: rows.int64(3)), expiresAt: rows.optionalInt64(4).map(Date.init(milliseconds:))))
        }
        return entries
    }

    // MARK: Reading

    public func status(now: Date) async throws(OutboxError) -> OutboxStatus {
        let now = now.milliseconds
        return try await thread.run { (database) throws(OutboxError) in
            try Self.check(database)
            var recipients = Dictionary(uniqueKeysWithValues: RecipientState.allCases.map { ($0, 0) })
            let counts = try database.statement("SELECT state, count(*) FROM sluice_recipients GROUP BY state")
            while try counts.step() {
                if let state = counts.string(0).flatMap(RecipientState.init(rawValue:)) { recipients[state] = counts.int(1) }
            }
            let leased = try database.statement("""
                SELECT r.state, count(*) FROM sluice_messages m JOIN sluice_recipients r ON r.message_id = m.id
                WHERE m.due_at IS NOT NULL AND m.lease_owner IS NOT NULL AND m.lease_expires_at > ?1
                    AND r.state IN ('queued', 'deferred')
                GROUP BY r.state
                """)
            leased.bind(1, now)
            while try leased.step() {
                if let state = leased.string(0).flatMap(RecipientState.init(rawValue:)) {
                    recipients[state, default: 0] -= leased.int(1)
                    recipients[.leased, default: 0] += leased.int(1)
                }
            }
            let messages = try database.statement("""
                SELECT
                    count(*) FILTER (WHERE due_at <= ?1 AND (lease_owner IS NULL OR lease_expires_at <= ?1)),
                    count(*) FILTER (WHERE due_at > ?1 AND lease_owner IS NULL),
                    count(*) FILTER (WHERE due_at IS NOT NULL AND lease_owner IS NOT NULL AND lease_expires_at > ?1),
                    min(due_at) FILTER (WHERE due_at <= ?1 AND (lease_owner IS NULL OR lease_expires_at <= ?1))
                FROM sluice_messages WHERE due_at IS NOT NULL
                """)
            messages.bind(1, now)
            _ = try messages.step()
            let (waiting, scheduled, held) = (messages.int(0), messages.int(1), messages.int(2))
            let oldest = messages.optionalInt64(3)
            let finished = try database.statement("SELECT count(*) FROM sluice_messages WHERE due_at IS NULL")
            _ = try finished.step()
            let recent = try database.statement("""
                SELECT count(*) FROM sluice_recipients WHERE state = 'delivered' AND last_attempt_at > ?1
                """)
            recent.bind(1, now - 60_000)
            _ = try recent.step()
            return OutboxStatus(
                recipients: recipients, messagesWaiting: waiting, messagesScheduled: scheduled, messagesLeased: held,
                messagesFinished: finished.int(0), oldestWaitingSince: oldest.map(Date.init(milliseconds:)),
                deliveredLastMinute: recent.int(0))
        }
    }

    public func hasPendingWork() async throws(OutboxError) -> Bool {
        try await thread.run { (database) throws(OutboxError) in
            try database.statement("SELECT 1 FROM sluice_messages WHERE due_at IS NOT NULL LIMIT 1").step()
        }
    }

    public func waiting(now: Date) async throws(OutboxError) -> (count: Int, oldestDueAt: Date?) {
        let now = now.milliseconds
        return try await thread.run { (database) throws(OutboxError) in
            // A held message's due_at is its lease's expiry, in the future: the range excludes it.
            let statement = try database.statement("SELECT count(*), min(due_at) FROM sluice_messages WHERE due_at <= ?1")
            statement.bind(1, now)
            guard try statement.step() else { return (0, nil) }
            return (statement.int(0), statement.optionalInt64(1).map(Date.init(milliseconds:)))
        }
    }

    public func nextDueAt() async throws(OutboxError) -> Date? {
        try await thread.run { (database) throws(OutboxError) in
            let statement = try database.statement("SELECT min(due_at) FROM sluice_messages WHERE due_at IS NOT NULL")
            return try statement.step() ? statement.optionalInt64(0).map(Date.init(milliseconds:)) : nil
        }
    }

    public func message(id: Int64, now: Date) async throws(OutboxError) -> OutboxRecord? {
        let now = now.milliseconds
        return try await thread.run { (database) throws(OutboxError) in
            try Self.check(database)
            return try Self.record(database, id: id, now: now)
        }
    }

    public func content(id: Int64) async throws(OutboxError) -> [UInt8]? {
        try await thread.run { (database) throws(OutboxError) in
            let statement = try database.statement("SELECT content FROM sluice_contents WHERE message_id = ?1")
            statement.bind(1, id)
            return try statement.step() ? statement.blob(0) : nil
        }
    }

    public func list(state: RecipientState?, afterID: Int64, limit: Int, now: Date) async throws(OutboxError) -> [OutboxRecord] {
        let now = now.milliseconds
        return try await thread.run { (database) throws(OutboxError) in
            try Self.check(database)
            let leased = "(m.lease_owner IS NOT NULL AND m.lease_expires_at > ?3)"
            let query: String
            switch state {
            case nil:
                query = "SELECT m.id FROM sluice_messages m WHERE m.id > ?1 AND ?2 IS NULL ORDER BY m.id LIMIT ?4"
            case .leased?:
                query = """
                    SELECT m.id FROM sluice_messages m WHERE m.id > ?1 AND ?2 IS NOT NULL AND m.due_at IS NOT NULL
                        AND \(leased) ORDER BY m.id LIMIT ?4
                    """
            case .queued?, .deferred?:
                query = """
                    SELECT m.id FROM sluice_messages m WHERE m.id > ?1 AND NOT \(leased) AND EXISTS (
                        SELECT 1 FROM sluice_recipients r WHERE r.message_id = m.id AND r.state = ?2)
                    ORDER BY m.id LIMIT ?4
                    """
            case _?:
                query = """
                    SELECT DISTINCT r.message_id FROM sluice_recipients r WHERE r.message_id > ?1 AND r.state = ?2
                        AND ?3 IS NOT NULL ORDER BY r.message_id LIMIT ?4
                    """
            }
            let ids = try database.statement(built: query)
            ids.bind(1, afterID).bind(2, state?.rawValue).bind(3, now).bind(4, limit)
            var found: [Int64] = []
            while try ids.step() { found.append(ids.int64(0)) }
            var records: [OutboxRecord] = []
            for id in found {
                if let record = try Self.record(database, id: id, now: now) { records.append(record) }
            }
            return records
        }
    }

    private static func record(_ database: SQLiteDatabase, id: Int64, now: Int64) throws(OutboxError) -> OutboxRecord? {
        let row = try database.statement("""
            SELECT idempotency_key, sender, message_id, size, created_at, not_before, due_at, attempts, lease_owner,
                lease_expires_at, last_error
            FROM sluice_messages WHERE id = ?1
            """)
        row.bind(1, id)
        guard try row.step() else { return nil }
        let leaseExpires = row.optionalInt64(9)
        let owner = row.string(8)
        let held = owner != nil && (leaseExpires ?? 0) > now
        var record = OutboxRecord(
            id: id, idempotencyKey: row.string(0), sender: row.string(1) ?? "", messageID: row.string(2), size: row.int(3),
            createdAt: Date(milliseconds: row.int64(4)), notBefore: Date(milliseconds: row.int64(5)),
            dueAt: row.optionalInt64(6).map(Date.init(milliseconds:)), attempts: row.int(7),
            leaseOwner: held ? owner : nil, leaseExpiresAt: held ? leaseExpires.map(Date.init(milliseconds:)) : nil,
            lastError: row.string(10), recipients: [])
        let recipients = try database.statement("""
            SELECT position, address, state, attempts, unknown_outcomes, code, enhanced_code, reply, attempt_times,
                bounce_class
            FROM sluice_recipients WHERE message_id = ?1 ORDER BY position
            """)
        recipients.bind(1, id)
        while try recipients.step() {
            var state = recipients.string(2).flatMap(RecipientState.init(rawValue:)) ?? .failed
            if held, state.isPending { state = .leased }
            let times = (recipients.string(8) ?? "").split(separator: ",").compactMap { Int64($0) }
            record.recipients.append(OutboxRecipient(
                position: recipients.int(0), address: recipients.string(1) ?? "", state: state,
                attempts: recipients.int(3), unknownOutcomes: recipients.int(4),
                code: recipients.optionalInt64(5).map { Int($0) }, enhancedCode: recipients.string(6),
                reply: recipients.string(7), bounceClass: recipients.string(9).flatMap(BounceClass.init(rawValue:)),
                attemptTimes: times.map(Date.init(milliseconds:))))
        }
        return record
    }

    // MARK: Operators

    public func cancel(id: Int64, now: Date) async throws(OutboxError) -> Int {
        let now = now.milliseconds
        return try await thread.run { (database) throws(OutboxError) in
            try Self.check(database)
            return try database.transaction { () throws(OutboxError) in
                let exists = try database.statement("SELECT lease_owner FROM sluice_messages WHERE id = ?1")
                exists.bind(1, id)
                guard try exists.step() else { throw OutboxError(.notFound, "no message has id \(id)") }
                let held = !exists.isNull(0)
                try database.statement("""
                    UPDATE sluice_recipients SET state = 'cancelled' WHERE message_id = ?1 AND state IN ('queued', 'deferred')
                    """).bind(1, id).run()
                let cancelled = database.changes
                if !held {
                    try database.statement("""
                        UPDATE sluice_messages SET due_at = NULL, finished_at = ?2 WHERE id = ?1 AND due_at IS NOT NULL
                        """).bind(1, id).bind(2, now).run()
                }
                return cancelled
            }
        }
    }

    public func retry(id: Int64?, states: Set<RecipientState>, now: Date) async throws(OutboxError) -> Int {
        let now = now.milliseconds
        let stored = states.subtracting([.leased, .queued]).map(\.rawValue).sorted()
        let list = stored.map { "'\($0)'" }.joined(separator: ", ")  // from the enum's own names only
        return try await thread.run { (database) throws(OutboxError) in
            try Self.check(database)
            return try database.transaction { () throws(OutboxError) in
                if let id {
                    let exists = try database.statement("SELECT 1 FROM sluice_messages WHERE id = ?1")
                    exists.bind(1, id)
                    guard try exists.step() else { throw OutboxError(.notFound, "no message has id \(id)") }
                }
                guard !stored.isEmpty else { return 0 }
                let scope = id == nil ? "?1 IS NULL" : "message_id = ?1"
                // The messages first (while their recipients still have the old states): due
                // now, unless a worker holds one, and the retry schedule's age starts again.
                try database.statement(built: """
                    UPDATE sluice_messages SET due_at = CASE WHEN lease_owner IS NULL THEN ?2 ELSE due_at END,
                        finished_at = NULL, age_from = ?2
                    WHERE id IN (SELECT message_id FROM sluice_recipients WHERE \(scope) AND state IN (\(list)))
                    """).bind(1, id).bind(2, now).run()
                try database.statement(built: """
                    UPDATE sluice_recipients SET state = 'queued' WHERE \(scope) AND state IN (\(list))
                    """).bind(1, id).run()
                return database.changes
            }
        }
    }

    public func purge(finishedBefore before: Date, limit: Int) async throws(OutboxError) -> Int {
        let before = before.milliseconds
        return try await thread.run { (database) throws(OutboxError) in
            try Self.check(database)
            return try database.transaction { () throws(OutboxError) in
                let old = try database.statement("""
                    SELECT id FROM sluice_messages WHERE finished_at < ?1 ORDER BY finished_at LIMIT ?2
                    """)
                old.bind(1, before).bind(2, limit)
                var ids: [Int64] = []
                while try old.step() { ids.append(old.int64(0)) }
                for id in ids {
                    try database.statement("DELETE FROM sluice_recipients WHERE message_id = ?1").bind(1, id).run()
                    try database.statement("DELETE FROM sluice_contents WHERE message_id = ?1").bind(1, id).run()
                    try database.statement("DELETE FROM sluice_messages WHERE id = ?1").bind(1, id).run()
                }
                return ids.count
            }
        }
    }
}

extension Date {
    /// Milliseconds since 1970, as the stores keep times.
    var milliseconds: Int64 { Int64((timeIntervalSince1970 * 1000).rounded(.down)) }

    init(milliseconds: Int64) { self.init(timeIntervalSince1970: Double(milliseconds) / 1000) }
}
