import Foundation
import Sluice
@testable import SluiceOutbox
import SluiceTestSupport
import Testing

/// The SQLite store and the outbox's checks, without a worker.
@Suite(.closesOutboxes) struct OutboxStoreTests {
    @Test(arguments: StoreKind.allCases)
    func anIdempotencyKeyAddsAMessageOnce(store kind: StoreKind) async throws {
        guard let outbox = try await makeOutbox(kind) else { return }
        let first = try await outbox.enqueue(outboxMessage("a", key: "reset-42"))
        let again = try await outbox.enqueue(contentsOf: [outboxMessage("b", key: "reset-42"), outboxMessage("c")])
        #expect(again[0] == EnqueueResult(id: first, existed: true))
        #expect(again[1].existed == false && again[1].id != first)
        let status = try await outbox.status()
        #expect(status.recipients[.queued] == 2)
        #expect(try await outbox.message(first)?.messageID == "<a@example.com>")
    }

    @Test(arguments: StoreKind.allCases)
    func badInputAddsNothingAndSaysWhy(store kind: StoreKind) async throws {
        guard let outbox = try await makeOutbox(kind) else { return }
        let small = Outbox(store: outbox.store, maximumMessageSize: 100)
        var noHeaders = outboxMessage("x")
        noHeaders.content = Array("just a body with no header\r\n".utf8)
        var nul = outboxMessage("y")
        nul.content.insert(0, at: 30)
        let cases: [(OutboxMessage, String)] = [
            (outboxMessage("bad", to: ["not an address"]), "address"),
            (outboxMessage("cr", to: ["a@example.org\r\nRSET"]), "address"),
            (outboxMessage("none", to: []), "no recipients"),
            (noHeaders, "malformed"),
            (nul, "malformed"),
            (outboxMessage("key", key: ""), "idempotency key"),
        ]
        for (message, words) in cases {
            // In a batch after a good message: the good one is not added either.
            let error = await #expect(throws: OutboxError.self) {
                try await outbox.enqueue(contentsOf: [outboxMessage("good"), message])
            }
            #expect(error?.kind == .invalidInput)
            #expect(error?.message.contains(words) == true, "\(error?.message ?? "")")
            #expect(error?.message.contains("message 2") == true)
        }
        let tooBig = await #expect(throws: OutboxError.self) { try await small.enqueue(outboxMessage("big")) }
        #expect(tooBig?.message.contains("over the limit of 100") == true)
        #expect(try await outbox.status().recipients.values.reduce(0, +) == 0)
    }

    @Test(arguments: StoreKind.allCases)
    func anUninitialisedStoreSaysSoAndANewerSchemaIsLeftAlone(store kind: StoreKind) async throws {
        guard let fresh = try await makeOutbox(kind, initialize: false) else { return }
        let missing = await #expect(throws: OutboxError.self) { try await fresh.enqueue(outboxMessage()) }
        #expect(missing?.kind == .notInitialized)
        #expect(try await fresh.initialize() == 0)
        #expect(try await fresh.initialize() == 2)  // a second init is a no-op

        let id = try await fresh.enqueue(outboxMessage("kept"))
        try await execute("UPDATE sluice_schema SET version = 99", on: fresh)
        let tooNew = await #expect(throws: OutboxError.self) { try await fresh.initialize() }
        #expect(tooNew?.kind == .schemaTooNew)
        #expect(tooNew?.message.contains("99") == true)
        let refused = await #expect(throws: OutboxError.self) { try await fresh.status() }
        #expect(refused?.kind == .schemaTooNew)
        try await execute("UPDATE sluice_schema SET version = 2", on: fresh)
        #expect(try await fresh.message(id)?.recipients.first?.state == .queued)
    }

    @Test func everyPostgreSQLTransactionRunsWithoutJIT() async throws {
        // The planner's costs for a claim of 1,000 messages cross jit_above_cost, and compiling
        // cost about 480 ms a claim: ten times the claim itself.
        guard let outbox = try await makeOutbox(.postgres), let store = outbox.store as? PostgresStore else { return }
        #expect(try await store.rows("SHOW jit") == [["off"]])
        // Set for each transaction, not the session: the session's own setting is untouched.
        #expect(try await store.rows("SELECT reset_val FROM pg_settings WHERE name = 'jit'") == [["on"]])
    }

    @Test func urlsNameTheirStore() throws {
        #expect(try OutboxURL("sqlite:outbox.db") == .sqlite(path: "outbox.db", synchronous: .full))
        #expect(try OutboxURL("sqlite:///var/lib/o.db?synchronous=normal") == .sqlite(path: "/var/lib/o.db", synchronous: .normal))
        #expect(try OutboxURL("SQLITE://localhost/o.db") == .sqlite(path: "/o.db", synchronous: .full))
        for bad in ["outbox.db", "sqlite:", "sqlite://db.example.com/o.db", "sqlite:o.db?journal=off", "mysql://x/y"] {
            let error = #expect(throws: OutboxError.self) { try OutboxURL(bad) }
            #expect(error?.kind == .invalidURL, "\(bad)")
        }
    }

    @Test(arguments: StoreKind.allCases)
    func aClaimIsALeaseThatExpiresAndIsTakenOver(store kind: StoreKind) async throws {
        let clock = ManualClock()
        guard let outbox = try await makeOutbox(kind, clock: clock) else { return }
        let store = outbox.store
        let id = try await outbox.enqueue(outboxMessage("lease", to: ["a@example.org", "b@example.org"]))
        let now = clock.now()
        let first = try await store.claim(owner: "A", limit: 10, now: now, leaseUntil: now + 60, rateLimit: nil)
        #expect(first.map(\.id) == [id])
        #expect(first.first?.recipients.map(\.address) == ["a@example.org", "b@example.org"])
        #expect(try await outbox.status().recipients[.leased] == 2)
        // Held: nobody else gets it, even after A renews for another minute.
        #expect(try await store.claim(owner: "B", limit: 10, now: now + 30, leaseUntil: now + 90, rateLimit: nil).isEmpty)
        #expect(try await store.renew(owner: "A", ids: [id], until: now + 90) == [id])
        #expect(try await store.claim(owner: "B", limit: 10, now: now + 89, leaseUntil: now + 150, rateLimit: nil).isEmpty)
        // A vanished: once its lease is up, B takes the message over, as a second attempt.
        let taken = try await store.claim(owner: "B", limit: 10, now: now + 91, leaseUntil: now + 151, rateLimit: nil)
        #expect(taken.map(\.attempts) == [2])
        // A's late outcome is not written over B's claim.
        let late = MessageOutcome(id: id, recipients: [.init(position: 0, state: .delivered, code: 250)],
                                  nextAttemptAt: nil, error: nil)
        #expect(try await store.record([late], owner: "A", now: now + 92) == [id])
        #expect(try await store.renew(owner: "A", ids: [id], until: now + 200).isEmpty)
        let outcome = MessageOutcome(id: id, recipients: [
            .init(position: 0, state: .delivered, code: 250, reply: "ok"),
            .init(position: 1, state: .deferred, code: 450, enhancedCode: "4.2.0", reply: "busy"),
        ], nextAttemptAt: now + 300, error: nil)
        #expect(try await store.record([outcome], owner: "B", now: now + 93).isEmpty)
        let record = try #require(try await outbox.message(id))
        #expect(record.recipients.map(\.state) == [.delivered, .deferred])
        #expect(record.recipients[1].enhancedCode == "4.2.0")
        #expect(record.dueAt == now + 300)
        // Only the deferred recipient is claimed next time.
        let retry = try await store.claim(owner: "C", limit: 10, now: now + 300, leaseUntil: now + 360, rateLimit: nil)
        #expect(retry.first?.recipients.map(\.address) == ["b@example.org"])
    }

    /// A record makes its message due again while any recipient is pending, even one the
    /// worker never held: an operator's retry of a failed recipient while the message was out.
    /// With none pending, the message is finished.
    @Test(arguments: StoreKind.allCases)
    func aRecordLeavesTheMessageDueWhileAnyRecipientIsPending(store kind: StoreKind) async throws {
        let clock = ManualClock()
        guard let outbox = try await makeOutbox(kind, clock: clock) else { return }
        let store = outbox.store
        let id = try await outbox.enqueue(outboxMessage("pending", to: ["a@example.org", "b@example.org"]))
        let now = clock.now()
        _ = try await store.claim(owner: "A", limit: 10, now: now, leaseUntil: now + 60, rateLimit: nil)
        let first = MessageOutcome(id: id, recipients: [
            .init(position: 0, state: .deferred, code: 451, reply: "later"),
            .init(position: 1, state: .failed, code: 550, reply: "no such user"),
        ], nextAttemptAt: now + 300, error: nil)
        #expect(try await store.record([first], owner: "A", now: now + 1).isEmpty)
        // Out again, with only the deferred recipient; meanwhile the failed one is retried.
        let second = try await store.claim(owner: "A", limit: 10, now: now + 300, leaseUntil: now + 360, rateLimit: nil)
        #expect(second.first?.recipients.map(\.position) == [0])
        #expect(try await outbox.retry(state: .failed) == 1)
        let delivered = MessageOutcome(id: id, recipients: [.init(position: 0, state: .delivered, code: 250)],
                                       nextAttemptAt: nil, error: nil)
        #expect(try await store.record([delivered], owner: "A", now: now + 301).isEmpty)
        let record = try #require(try await outbox.message(id))
        #expect(record.recipients.map(\.state) == [.delivered, .queued])
        #expect(record.dueAt == now + 301, "due at once for the recipient still pending")
        #expect(try await store.hasPendingWork())
        let third = try await store.claim(owner: "A", limit: 10, now: now + 301, leaseUntil: now + 361, rateLimit: nil)
        #expect(third.first?.recipients.map(\.position) == [1])
        let last = MessageOutcome(id: id, recipients: [.init(position: 1, state: .delivered, code: 250)],
                                  nextAttemptAt: nil, error: nil)
        #expect(try await store.record([last], owner: "A", now: now + 302).isEmpty)
        #expect(try await outbox.message(id)?.dueAt == nil)
        #expect(try await store.hasPendingWork() == false, "finished once no recipient is pending")
    }

    @Test(arguments: StoreKind.allCases)
    func aClaimGivesBackWhatWasEnqueuedByteForByte(store kind: StoreKind) async throws {
        let clock = ManualClock()
        guard let outbox = try await makeOutbox(kind, clock: clock) else { return }
        // Every octet a message may hold (no NUL, CR or LF outside line ends), and a sender
        // and recipient beyond ASCII.
        var content = outboxMessage("bytes").content
        content.removeLast(2)
        for byte in UInt8(1)...255 where byte != 13 && byte != 10 { content.append(byte) }
        content += [13, 10]
        let message = OutboxMessage(sender: "sénder@example.com", recipients: ["a@example.org", "rcpt@bücher.example"],
                                    content: content)
        let now = clock.now()
        let id = try await outbox.enqueue(message)
        let first = try #require(try await outbox.store.claim(
            owner: "A", limit: 10, now: now, leaseUntil: now + 60, rateLimit: nil).first)
        #expect(first.id == id)
        #expect(first.sender == message.sender)
        #expect(first.content == content)
        #expect(first.firstDueAt == now)
        #expect(first.attempts == 1)
        #expect(first.recipients.map(\.position) == [0, 1])
        #expect(first.recipients.map(\.address) == message.recipients)
        #expect(try await outbox.store.content(id: id) == content)
        #expect(try await outbox.store.content(id: id + 1) == nil)
        // Taken over after the lease: the second attempt, its age still from the first.
        let again = try #require(try await outbox.store.claim(
            owner: "B", limit: 10, now: now + 61, leaseUntil: now + 120, rateLimit: nil).first)
        #expect(again.attempts == 2)
        #expect(again.firstDueAt == now)
    }

    @Test(arguments: StoreKind.allCases)
    func aNullReversePathIsKeptEmptyNotMissing(store kind: StoreKind) async throws {
        // A notification sent from <> (no bounces wanted) has an empty sender: it is stored
        // as an empty string, not as SQL NULL, and claimed as such.
        guard let outbox = try await makeOutbox(kind) else { return }
        var message = outboxMessage("null-sender")
        message.sender = ""
        let id = try await outbox.enqueue(message)
        let now = Date() + 1
        let claimed = try await outbox.store.claim(owner: "A", limit: 10, now: now, leaseUntil: now + 60, rateLimit: nil)
        #expect(claimed.map(\.id) == [id])
        #expect(claimed.first?.sender == "")
        #expect(try await outbox.message(id)?.sender == "")
    }

    @Test func contentsGoToPostgreSQLAsBinaryArraysOfBoundedSize() throws {
        // array_send's layout: one dimension, no NULLs, bytea's OID, the length and lower
        // bound, then each element's length and bytes, all big-endian.
        #expect(pgBinaryByteaArray([[1, 2], []][...]) == [
            0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 17, 0, 0, 0, 2, 0, 0, 0, 1,
            0, 0, 0, 2, 1, 2, 0, 0, 0, 0,
        ])
        // At most six bytes a statement; a larger content goes alone.
        let contents: [[UInt8]] = [[1, 1, 1], [2, 2, 2], [3, 3, 3], Array(repeating: 4, count: 10), [5]]
        let statements = PostgresStore.contentStatements(contents, ids: [10, 11, 12, 13, 14], maximumBytes: 6)
        let ids = statements.map { statement -> String? in
            guard case .text(let text)? = statement.parameters[0] else { return nil }
            return text
        }
        #expect(ids == [["10", "11"], ["12"], ["13"], ["14"]].map(pgArray))
        let sizes = statements.map { statement -> Int? in
            guard case .bytes(let bytes)? = statement.parameters[1] else { return nil }
            return bytes.count
        }
        #expect(sizes == [20 + 2 * 7, 20 + 7, 20 + 14, 20 + 5])
    }

    @Test func aSQLiteWALIsCopiedIntoTheDatabaseByTheCheckpointerNotTheWriter() async throws {
        // A commit that filled the WAL used to copy it into the database itself, with two
        // fsyncs, while the next batch waited. The checkpointer's connection does it now.
        let (outbox, path) = try await makeSQLiteOutbox()
        let store = try #require(outbox.store as? SQLiteStore)
        #expect(store.checkpoints.last.count == 0)
        let body = String(repeating: "a line of the body, long enough to fill the WAL quickly.\r\n", count: 70)
        for batch in 0..<3 {
            _ = try await outbox.enqueue(contentsOf: (0..<500).map { index in
                var message = outboxMessage("w\(batch)-\(index)")
                message.content += Array(body.utf8)
                return message
            })
        }
        // 1,500 messages of about 4 KB: past the thousand pages at which a checkpoint is asked for.
        try await eventually("the checkpointer has copied the WAL") { store.checkpoints.last.count >= 1 }
        let last = store.checkpoints.last
        #expect(last.frames >= SQLiteStore.checkpointPages && last.checkpointed > 0, "\(last)")
        #expect(try await outbox.status().recipients[.queued] == 1_500)
        await outbox.close()
        // Closed, the last connection has copied the rest and removed the WAL: a copy of the
        // database file alone holds everything.
        #expect(!FileManager.default.fileExists(atPath: path + "-wal"))
        let reopened = try await openOutbox("sqlite:\(path)")
        #expect(try await reopened.status().recipients[.queued] == 1_500)
        await reopened.close()
    }

    @Test func aSQLiteWALGrownByABurstIsCutBackWhenItStartsAgain() async throws {
        // Copied by the checkpointer rather than the writer, the WAL starts again from its
        // beginning less often and grows larger; SQLite reuses the file without shrinking it.
        let (outbox, path) = try await makeSQLiteOutbox()
        let store = try #require(outbox.store as? SQLiteStore)
        let line = Array("a line of a large message's body, sixty bytes or so long....\r\n".utf8)
        let body = Array([[UInt8]](repeating: line, count: 56_000).joined())
        // One transaction of about 20 MB: a WAL larger than the size it is cut back to.
        _ = try await outbox.enqueue(contentsOf: (0..<6).map { index in
            var message = outboxMessage("big\(index)")
            message.content += body
            return message
        })
        let grown = try walSize(path)
        #expect(grown > SQLiteStore.walBytesKept, "\(grown)")
        try await eventually("the checkpointer has copied the whole WAL") {
            let last = store.checkpoints.last
            return last.count >= 1 && last.checkpointed == last.frames
        }
        // The next write starts the WAL again from its beginning, and cuts the file back.
        _ = try await outbox.enqueue(outboxMessage("small"))
        let kept = try walSize(path)
        #expect(kept <= SQLiteStore.walBytesKept, "the WAL was \(grown) bytes and is still \(kept)")
        #expect(try await outbox.status().recipients[.queued] == 7)
        await outbox.close()
    }

    private func walSize(_ path: String) throws -> Int {
        try #require(FileManager.default.attributesOfItem(atPath: path + "-wal")[.size] as? Int)
    }

    @Test func aPostgreSQLClaimFindsItsRowsByIndexHoweverLongTheQueue() async throws {
        // Joined to the due ids, the planner hashed the whole table for each claim: a scan that
        // grows with the queue. The claimed rows are found through the primary key.
        guard let outbox = try await makeOutbox(.postgres), let store = outbox.store as? PostgresStore else { return }
        for start in stride(from: 0, to: 3_000, by: 1_000) {
            _ = try await outbox.enqueue(contentsOf: (start..<start + 1_000).map { outboxMessage("q\($0)") })
        }
        try await store.execute("ANALYZE")
        let now = Date()
        let claim = PostgresStore.claimStatement(owner: "A", limit: 1_000, now: now, leaseUntil: now + 60, rateLimit: nil)
        let plan = try await store.rows("EXPLAIN " + claim.sql, claim.parameters).compactMap { $0.first ?? nil }
        #expect(!plan.isEmpty)
        #expect(!plan.contains { $0.contains("Seq Scan on sluice_messages m") }, "\(plan.joined(separator: "\n"))")
        #expect(plan.contains { $0.contains("Index Scan using sluice_messages_pkey on sluice_messages m") },
                "\(plan.joined(separator: "\n"))")
    }

    @Test func aPostgreSQLRecordFindsItsRowsByIndexHoweverManyTheTablesHold() async throws {
        // The record touches only the rows of its batch. Costing each index probe as a read
        // from disk, the planner scanned and hashed both whole tables instead, finished rows
        // and all: a cost that grows with every message kept for the retention period.
        guard let outbox = try await makeOutbox(.postgres), let store = outbox.store as? PostgresStore else { return }
        for start in stride(from: 0, to: 3_000, by: 1_000) {
            _ = try await outbox.enqueue(contentsOf: (start..<start + 1_000).map { outboxMessage("r\($0)") })
        }
        let now = Date()
        let claimed = try await store.claim(owner: "A", limit: 1_000, now: now, leaseUntil: now + 60, rateLimit: nil)
        try await store.execute("ANALYZE")
        let outcomes = claimed.map { message in
            MessageOutcome(id: message.id, recipients: [.init(position: 0, state: .delivered, code: 250, reply: "ok")],
                           nextAttemptAt: nil, error: nil)
        }
        for statement in PostgresStore.recordStatements(outcomes, owner: "A", now: now) {
            let plan = try await store.rows("EXPLAIN " + statement.sql, statement.parameters, holding: true)
                .compactMap { $0.first ?? nil }
            #expect(!plan.isEmpty)
            #expect(!plan.contains { $0.contains("Seq Scan") }, "\(plan.joined(separator: "\n"))")
            // Nor a whole index read in order and filtered: every index scan looks its rows up by
            // key. A node's own lines (its conditions and filters) run to the next node.
            for (index, line) in plan.enumerated() where line.contains("Index Scan using") || line.contains("Index Only Scan using") {
                let details = plan.dropFirst(index + 1).prefix { !$0.contains("->") && !$0.contains("CTE ") }
                #expect(details.contains { $0.contains("Index Cond") },
                        "\(plan.joined(separator: "\n"))")
            }
        }
    }

    @Test func aPostgreSQLEnqueueLooksItsIDSequenceUpOnceABatch() async throws {
        // A batch's ids come from the sequence; finding the sequence in the catalogue once a
        // row cost more than taking the ids.
        guard let outbox = try await makeOutbox(.postgres), let store = outbox.store as? PostgresStore else { return }
        let plan = try await store.rows("EXPLAIN (VERBOSE) " + PostgresStore.newIDs, [.text("1000")])
            .compactMap { $0.first ?? nil }
        // Looked up a row at a time, the lookup is an argument of each nextval; looked up once,
        // a node of its own computes it and nextval reads the result.
        let outputs = plan.filter { $0.contains("Output:") && $0.contains("pg_get_serial_sequence") }
        #expect(outputs.contains { !$0.contains("nextval(") }, "\(plan.joined(separator: "\n"))")
        let ids = try await store.rows(PostgresStore.newIDs, [.text("3")]).compactMap { $0.first.flatMap { $0 }.flatMap { Int64($0) } }
        #expect(ids.count == 3 && Set(ids).count == 3)
    }

    @Test func aGatedPostgreSQLEnqueueCommitsWhenItsGateOpensAndNotAtAllIfItFails() async throws {
        // `sluice outbox enqueue` writes two batches at once over two connections. The later
        // commits only after the earlier, and not at all if the earlier failed.
        guard let (outbox, watcher) = try await makePostgresOutboxAndWatcher() else { return }
        @Sendable func messages() async throws -> [[String?]] {
            try await watcher.rows("SELECT count(*) FROM sluice_messages")
        }
        let batch = try (0..<3).map { try outbox.check(outboxMessage("gated\($0)")) }
        let reached = Locked(false)
        let opened = Locked(false)
        let writing = Task {
            try await outbox.enqueue(checked: batch, committingAfter: { () async throws(OutboxError) in
                reached.withLock { $0 = true }
                while !opened.withLock({ $0 }) { try? await Task.sleep(for: .milliseconds(10)) }
            })
        }
        try await eventually("the batch is written and waits at its gate") { reached.withLock { $0 } }
        #expect(try await messages() == [["0"]])  // written, not committed
        opened.withLock { $0 = true }
        #expect(try await writing.value.count == 3)
        #expect(try await messages() == [["3"]])

        let failing = try outbox.check(outboxMessage("after a failed batch"))
        await #expect(throws: OutboxError.self) {
            try await outbox.enqueue(checked: [failing], committingAfter: { () async throws(OutboxError) in
                throw OutboxError(.database, "the batch before it failed")
            })
        }
        // Rolled back, and the connection is fit for the next batch.
        #expect(try await outbox.enqueue(checked: [try outbox.check(outboxMessage("next"))]).count == 1)
        #expect(try await messages() == [["4"]])
    }

    @Test func aPostgreSQLEnqueueWhoseCommitWasNotAcknowledgedChecksWhetherItCommitted() async throws {
        // A connection lost as the batch commits leaves the caller not knowing. Reported as not
        // written when it was, the batch would be enqueued again; the store looks instead.
        guard let outbox = try await makeOutbox(.postgres), let store = outbox.store as? PostgresStore else { return }
        store.loseNextCommitAcknowledgement()
        let ids = try await outbox.enqueue(contentsOf: (0..<3).map { outboxMessage("lost ack \($0)") }).map(\.id)
        #expect(ids.count == 3)
        for id in ids { #expect(try await outbox.message(id) != nil) }
        #expect(try await store.rows("SELECT count(*) FROM sluice_messages") == [["3"]])

        // Lost before it committed (here, in its gate): not there, and said so.
        let batch = try [outbox.check(outboxMessage("never committed"))]
        await #expect(throws: OutboxError.self) {
            try await outbox.enqueue(checked: batch, committingAfter: { () async throws(OutboxError) in
                throw OutboxError(.unavailable, "the PostgreSQL connection failed")
            })
        }
        #expect(try await store.rows("SELECT count(*) FROM sluice_messages") == [["3"]])
    }

    @Test func aPostgreSQLClaimDoesNotWaitForTheLastBatchsOutcomes() async throws {
        // A worker writes one batch's outcomes while it claims the next. Over one connection
        // the claim queued behind the record; over two, a record that waits (here on a row
        // lock another session holds) does not hold the claim up.
        guard let cluster = try await PostgresCluster.shared() else { return }
        let url = try await cluster.createDatabase()
        let outbox = try await openOutbox(url)
        try await outbox.initialize()
        let locker = try #require(try await openOutbox(url).store as? PostgresStore)
        let watcher = try #require(try await openOutbox(url).store as? PostgresStore)
        let store = outbox.store
        let held = try await outbox.enqueue(outboxMessage("held"))
        let next = try await outbox.enqueue(outboxMessage("next"))
        let now = Date()
        #expect(try await store.claim(owner: "W", limit: 1, now: now, leaseUntil: now + 60, rateLimit: nil).map(\.id) == [held])

        let lockReleased = Locked(false)
        let locking = Task {
            try await locker.execute(
                "SELECT pg_sleep(5) FROM (SELECT id FROM sluice_messages WHERE id = \(held) FOR UPDATE) AS l")
            lockReleased.withLock { $0 = true }
        }
        @Sendable func sessions(_ condition: String) async throws -> Bool {
            try await watcher.rows(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND \(condition)") == [["1"]]
        }
        try await eventually("another session holds the lock") { try await sessions("query LIKE 'SELECT pg_sleep(5)%'") }
        let outcome = MessageOutcome(id: held, recipients: [.init(position: 0, state: .delivered, code: 250)],
                                     nextAttemptAt: nil, error: nil)
        let recording = Task { try await store.record([outcome], owner: "W", now: now + 1) }
        try await eventually("the record waits on the lock") { try await sessions("wait_event_type = 'Lock'") }

        let claimed = try await store.claim(owner: "W", limit: 10, now: now + 1, leaseUntil: now + 60, rateLimit: nil)
        #expect(claimed.map(\.id) == [next])
        #expect(lockReleased.withLock { $0 } == false, "the claim waited for the record")
        try await locking.value
        #expect(try await recording.value.isEmpty)
        #expect(try await outbox.message(held)?.recipients.map(\.state) == [.delivered])
    }

    @Test(arguments: StoreKind.allCases)
    func theRateLimitIsSharedByEveryWorkerAndNeverOvershoots(store kind: StoreKind) async throws {
        let clock = ManualClock()
        guard let outbox = try await makeOutbox(kind, clock: clock) else { return }
        _ = try await outbox.enqueue(contentsOf: (0..<100).map { outboxMessage("r\($0)") })
        let limit = OutboxRateLimit(messagesPerSecond: 10, burst: 5)
        let start = clock.now()
        func claim(_ owner: String, at seconds: Double) async throws -> Int {
            let now = start + seconds
            return try await outbox.store.claim(owner: owner, limit: 50, now: now, leaseUntil: now + 600, rateLimit: limit).count
        }
        #expect(try await claim("A", at: 0) == 5)  // the burst
        #expect(try await claim("B", at: 0) == 0)  // shared: nothing left
        #expect(try await claim("B", at: 0.3) == 3)
        #expect(try await claim("A", at: 0.35) == 0)
        #expect(try await claim("A", at: 10) == 5)  // a long pause earns no more than a burst
        var total = 5 + 3 + 5
        for step in 1...20 { total += try await claim(step % 2 == 0 ? "A" : "B", at: 10 + Double(step) * 0.1) }
        // Two seconds at ten a second, after a full burst: at most 20 plus the burst's 5.
        #expect(total - 13 <= 20)
        #expect(total - 13 >= 19)
    }

    @Test(arguments: StoreKind.allCases)
    func cancelRetryAndPurge(store kind: StoreKind) async throws {
        let clock = ManualClock()
        guard let outbox = try await makeOutbox(kind, clock: clock) else { return }
        let id = try await outbox.enqueue(outboxMessage("c", to: ["a@example.org", "b@example.org"]))
        #expect(try await outbox.cancel(id) == 2)
        #expect(try await outbox.message(id)?.recipients.map(\.state) == [.cancelled, .cancelled])
        #expect(try await outbox.store.hasPendingWork() == false)
        let missing = await #expect(throws: OutboxError.self) { try await outbox.cancel(999) }
        #expect(missing?.kind == .notFound)
        #expect(try await outbox.retry(id) == 2)
        #expect(try await outbox.message(id)?.recipients.map(\.state) == [.queued, .queued])
        #expect(try await outbox.store.hasPendingWork())
        #expect(try await outbox.cancel(id) == 2)
        // Purged only once it has been finished for longer than the retention.
        clock.advance(by: .seconds(3_600))
        #expect(try await outbox.purge(olderThan: .seconds(7_200)) == 0)
        clock.advance(by: .seconds(3_601))
        #expect(try await outbox.purge(olderThan: .seconds(7_200), batch: 1) == 1)
        #expect(try await outbox.message(id) == nil)
        let notRetryable = await #expect(throws: OutboxError.self) { try await outbox.retry(state: .delivered) }
        #expect(notRetryable?.kind == .invalidInput)
    }

    @Test(arguments: StoreKind.allCases)
    func aScheduledMessageIsNotClaimedBeforeItsTime(store kind: StoreKind) async throws {
        let clock = ManualClock()
        guard let outbox = try await makeOutbox(kind, clock: clock) else { return }
        let later = clock.now() + 3_600
        let id = try await outbox.enqueue(outboxMessage("s", notBefore: later))
        let store = outbox.store
        #expect(try await store.claim(owner: "A", limit: 10, now: later - 1, leaseUntil: later + 60, rateLimit: nil).isEmpty)
        #expect(try await store.nextDueAt() == later)
        #expect(try await outbox.status().messagesScheduled == 1)
        #expect(try await store.claim(owner: "A", limit: 10, now: later, leaseUntil: later + 60, rateLimit: nil).map(\.id) == [id])
    }
}
