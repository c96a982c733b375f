public import Foundation
import SluiceCore
import SluiceTransport

/// The outbox in PostgreSQL, for workers on many hosts.
///
/// libpq runs on an event loop of the store's own without blocking (`uv_poll` on its socket,
/// pipeline mode), so every operation is one round trip and one transaction. Workers claim with
/// `FOR UPDATE SKIP LOCKED` and are woken by `LISTEN sluice_outbox` when messages are added,
/// polling as well (PgBouncer in transaction mode passes no notifications). A lost connection
/// is opened again on the next operation.
public final class PostgresStore: OutboxStore {
    public static let schemaVersion = PostgresSchema.version

    /// The connection string, as libpq takes it (a `postgresql://` URI or `key=value` pairs).
    private let conninfo: String
    private let group: EventLoopGroup
    private let state = Locked(State())

    private struct State {
        var connection: PostgresConnection?
        /// The connection for what a worker holds (``record(_:owner:now:)``, ``renew(owner:ids:until:)``,
        /// ``release(owner:ids:now:)``), opened on first use.
        var holdingConnection: PostgresConnection?
        var listeners: [@Sendable () -> Void] = []
        /// For tests: the next enqueue's commit succeeds, and its acknowledgement is lost.
        var losesNextCommitAcknowledgement = false
    }

    /// Which connection a statement goes over. A worker writes the outcomes of one batch while
    /// it claims the next; over one connection the two waited for each other, and PostgreSQL
    /// worked one backend on a machine with idle cores. Everything about the messages a worker
    /// holds goes over the second, in the order it was asked, so that a renewal and a record
    /// never lock the same rows from two sides.
    private enum Lane {
        case main
        case holding
    }

    /// Connects to the database `conninfo` names (a libpq URI or `key=value` string; the
    /// password from `PGPASSWORD` or `~/.pgpass` when it holds none).
    /// - Throws: ``OutboxError/Kind/unavailable`` when it cannot connect.
    public init(conninfo: String) async throws(OutboxError) {
        self.conninfo = conninfo
        group = EventLoopGroup(numberOfLoops: 1)
        do throws(OutboxError) {
            _ = try await connection()
        } catch {
            // Its loop's thread would outlive the store: a service that retries until its
            // database is up would gather one a try.
            await group.shutdown()
            throw error
        }
    }

    public func close() async {
        let connections = state.withLock { state in
            defer { (state.connection, state.holdingConnection) = (nil, nil) }
            return [state.connection, state.holdingConnection]
        }
        for connection in connections { await connection?.close() }
        await group.shutdown()
    }

    /// The open connection of `lane`, or a new one if there is none or it broke.
    private func connection(_ lane: Lane = .main) async throws(OutboxError) -> PostgresConnection {
        if lane == .holding {
            if let current = state.withLock({ $0.holdingConnection }), await !current.isBroken { return current }
            let fresh = try await PostgresConnection.connect(conninfo, loop: group.next()) { _ in }
            state.withLock { $0.holdingConnection = fresh }
            return fresh
        }
        if let current = state.withLock({ $0.connection }), await !current.isBroken { return current }
        let fresh = try await PostgresConnection.connect(conninfo, loop: group.next()) { [weak self] channel in
            guard channel == "sluice_outbox", let self else { return }
            for listener in state.withLock({ $0.listeners }) { listener() }
        }
        let listening = state.withLock { state in
            state.connection = fresh
            return !state.listeners.isEmpty
        }
        if listening { _ = try await fresh.execute([.init("LISTEN sluice_outbox")]) }
        return fresh
    }

    /// Runs one pipeline; a lost connection is dropped so that the next call opens another.
    private func run(_ statements: [PostgresConnection.Statement], checked: Bool = true, lane: Lane = .main)
        async throws(OutboxError) -> [PostgresConnection.Rows]
    {
        let connection = try await connection(lane)
        let prelude = switch (lane, checked) {
        case (.main, false): Self.prelude
        case (.main, true): Self.checkedPrelude
        case (.holding, false): Self.holdingPrelude
        case (.holding, true): PostgresConnection.Statement(Self.holdingPrelude.sql + ", " + Self.schemaCheck)
        }
        let all = [prelude] + statements
        do {
            let results = try await connection.execute(all)
            return Array(results.dropFirst())
        } catch {
            throw failed(connection, error)
        }
    }

    /// Runs `statements` on the main connection in a transaction that commits once `gate`
    /// returns, and rolls back if it or a statement fails.
    private func run(_ statements: [PostgresConnection.Statement],
                     committingAfter gate: @Sendable () async throws(OutboxError) -> Void)
        async throws(OutboxError) -> [PostgresConnection.Rows]
    {
        let connection = try await connection(.main)
        do throws(OutboxError) {
            let results: [PostgresConnection.Rows]
            do throws(OutboxError) {
                results = try await connection.execute([Self.begin, Self.checkedPrelude] + statements)
                try await gate()
            } catch {
                // An explicit transaction outlives its pipeline, failed or not: end it.
                _ = try? await connection.execute([Self.rollback])
                throw error
            }
            _ = try await connection.execute([Self.commit])
            return Array(results.dropFirst(2))
        } catch {
            throw failed(connection, error)
        }
    }

    private static let begin = PostgresConnection.Statement("BEGIN")
    private static let commit = PostgresConnection.Statement("COMMIT")
    private static let rollback = PostgresConnection.Statement("ROLLBACK")

    /// The error to report for `error` on `connection`, which the store stops using if it has
    /// failed.
    private func failed(_ connection: PostgresConnection, _ error: OutboxError) -> OutboxError {
        if error.kind == .unavailable {
            state.withLock { state in
                if state.connection === connection { state.connection = nil }
                if state.holdingConnection === connection { state.holdingConnection = nil }
            }
        }
        return Self.explained(error)
    }

    /// Begins every pipeline. JIT compilation is off for the transaction: the planner's costs
    /// for a claim of 1,000 messages cross `jit_above_cost`, and compiling took about 480 ms of
    /// a claim that runs in 50 ms without it. Set in each transaction, not the session, so
    /// that it holds through PgBouncer in transaction mode and leaves the database's own
    /// settings alone.
    private static let prelude = PostgresConnection.Statement("SELECT \(jitOff)")
    /// The prelude, and the schema's version checked in the same transaction.
    private static let checkedPrelude = PostgresConnection.Statement("SELECT \(jitOff), \(schemaCheck)")
    private static let schemaCheck = "sluice_check_schema(\(PostgresSchema.version))"
    private static let jitOff = "set_config('jit', 'off', true)"
    /// Begins every pipeline on the holding connection. Records, renewals and releases find a
    /// batch's rows by key, rows the claim has just written and that are in memory. But the
    /// planner costs each index probe as a read from disk: until the tables held some hundreds
    /// of thousands of rows, it scanned and hashed both of them whole instead, finished
    /// messages and all. With 50,000 rows that took a record of 1,000 outcomes from 48 ms to
    /// 113. Sequential scans are off for these transactions alone.
    private static let holdingPrelude = PostgresConnection.Statement(
        "SELECT \(jitOff), set_config('enable_seqscan', 'off', true)")

    /// A missing schema reads as PostgreSQL's "function does not exist": say what to do.
    private static func explained(_ error: OutboxError) -> OutboxError {
        if error.message.contains("sluice_check_schema") && error.message.contains("does not exist") {
            return OutboxError(.notInitialized, "the outbox has no schema; run `sluice outbox init` first")
        }
        if error.message.contains("run `sluice outbox init` to migrate") {
            return OutboxError(.notInitialized, error.message.replacingOccurrences(of: "ERROR:  ", with: ""))
        }
        if error.kind == .schemaTooNew || error.kind == .invalidInput {
            return OutboxError(error.kind, error.message.replacingOccurrences(of: "ERROR:  ", with: ""))
        }
        return error
    }

    /// Subscribes to notifications of new messages.
    public func subscribe(_ wake: @escaping @Sendable () -> Void) async throws(OutboxError) {
        state.withLock { $0.listeners.append(wake) }
        _ = try await run([.init("LISTEN sluice_outbox")], checked: false)
    }

    // MARK: Schema

    public func initialize() async throws(OutboxError) -> Int {
        let exists = try await run([.init("SELECT to_regclass('sluice_schema') IS NOT NULL")], checked: false)
        var before = 0
        if exists.first?.rows.first?.first == "t" {
            let version = try await run([.init("SELECT coalesce(max(version), 0) FROM sluice_schema")], checked: false)
            before = version.first?.rows.first?.first.flatMap { $0 }.flatMap { Int($0) } ?? 0
        }
        // One pipeline, one transaction: a failed migration leaves the schema as it was.
        _ = try await run([.init(PostgresSchema.create), .init(PostgresSchema.migrateTo2)], checked: false)
        return before
    }

    public func checkSchema() async throws(OutboxError) {
        _ = try await run([])
    }

    // MARK: Enqueue

    /// Messages with an idempotency key go through `sluice_enqueue_message` one statement
    /// each (it finds an existing key); the others are written set-wise, three statements for
    /// the whole batch, with ids taken from the sequence first. Both in one transaction.
    public func enqueue(_ messages: [PreparedMessage], now: Date) async throws(OutboxError) -> [EnqueueResult] {
        try await enqueue(messages, now: now, committingAfter: nil)
    }

    /// Enqueues as ``enqueue(_:now:)`` does. With a `gate`, the transaction commits only once
    /// the gate returns, and rolls back if it throws: two connections can then each write a
    /// batch at once and still commit them in order (`sluice outbox enqueue`, where one batch
    /// failing must leave every later one unwritten).
    package func enqueue(_ messages: [PreparedMessage], now: Date,
                         committingAfter gate: (@Sendable () async throws(OutboxError) -> Void)?)
        async throws(OutboxError) -> [EnqueueResult]
    {
        let nowText = String(now.milliseconds)
        let plain = messages.indices.filter { messages[$0].message.idempotencyKey == nil }
        var ids: [Int64] = []
        if !plain.isEmpty {
            let rows = try await run([.init(Self.newIDs, [.text(String(plain.count))])])
            ids = rows[0].rows.compactMap { $0[0].flatMap { Int64($0) } }
            guard ids.count == plain.count else { throw OutboxError(.database, "the id sequence gave \(ids.count) ids") }
        }
        var statements: [PostgresConnection.Statement] = []
        if !plain.isEmpty {
            statements += Self.insertStatements(plain.map { messages[$0] }, ids: ids, now: nowText, nowDate: now)
        }
        let keyed = messages.indices.filter { messages[$0].message.idempotencyKey != nil }
        for index in keyed {
            let prepared = messages[index]
            let message = prepared.message
            statements.append(PostgresConnection.Statement(
                "SELECT id, existed FROM sluice_enqueue_message($1, $2::text[], $3::bytea, $4, sluice_at($5::bigint), $6, $7::integer[], sluice_at($8::bigint))",
                [.text(message.sender), .text(pgArray(message.recipients)), .bytes(message.content),
                 message.idempotencyKey.map { .text($0) }, message.notBefore.map { .text(String($0.milliseconds)) },
                 prepared.messageID.map { .text($0) }, .text(pgArray(prepared.suppressed.sorted().map(String.init))),
                 .text(nowText)]))
        }
        let results: [PostgresConnection.Rows]
        do throws(OutboxError) {
            results = if let gate { try await run(statements, committingAfter: gate) } else { try await run(statements) }
            let losesAcknowledgement = state.withLock { state in
                defer { state.losesNextCommitAcknowledgement = false }
                return state.losesNextCommitAcknowledgement
            }
            if losesAcknowledgement {
                throw OutboxError(.unavailable, "the PostgreSQL connection failed (a test lost the commit's acknowledgement)")
            }
        } catch where error.kind == .unavailable && keyed.isEmpty && !ids.isEmpty {
            // Lost, perhaps, as the batch committed: then it is in the outbox, and saying it is
            // not would have the caller enqueue it twice. All or none of its ids are there.
            switch await committed(ids[0]) {
            case true?: return ids.map { EnqueueResult(id: $0, existed: false) }
            case false?: throw error
            case nil:
                throw OutboxError(error.kind, error.message
                    + "; the batch may have been committed as the connection was lost, and checking failed too")
            }
        }
        var answers = [EnqueueResult?](repeating: nil, count: messages.count)
        for (index, id) in zip(plain, ids) { answers[index] = EnqueueResult(id: id, existed: false) }
        let keyedResults = results.suffix(keyed.count)
        for (index, rows) in zip(keyed, keyedResults) {
            guard let row = rows.rows.first, let id = row[0].flatMap({ Int64($0) }) else {
                throw OutboxError(.database, "enqueue returned no id")
            }
            answers[index] = EnqueueResult(id: id, existed: row[1] == "t")
        }
        return answers.compactMap { $0 }
    }

    /// Whether the message `id` is stored; nil when the store cannot say.
    private func committed(_ id: Int64) async -> Bool? {
        do throws(OutboxError) {
            return try await !rows("SELECT 1 FROM sluice_messages WHERE id = $1::bigint", [.text(String(id))]).isEmpty
        } catch {
            return nil
        }
    }

    /// For tests: the next enqueue commits and then fails as if its connection were lost
    /// before the acknowledgement came back.
    func loseNextCommitAcknowledgement() {
        state.withLock { $0.losesNextCommitAcknowledgement = true }
    }

    /// `$1` new message ids. The sequence is looked up once (OFFSET 0 keeps the subquery from
    /// being merged into the outer query): looked up a row at a time, the catalogue search took
    /// 6.9 ms of the 7.9 that a thousand ids cost.
    static let newIDs = """
        SELECT nextval(s.id_sequence)
        FROM (SELECT pg_get_serial_sequence('sluice_messages', 'id')::regclass AS id_sequence OFFSET 0) AS s,
            generate_series(1, $1::integer)
        """

    /// The three statements that write `messages` (none with an idempotency key) under `ids`.
    private static func insertStatements(_ messages: [PreparedMessage], ids: [Int64], now: String, nowDate: Date)
        -> [PostgresConnection.Statement]
    {
        var senders: [String?] = [], messageIDs: [String?] = [], sizes: [String?] = [], notBefores: [String?] = []
        var pending: [String?] = []
        var recipientMessages: [String?] = [], positions: [String?] = [], addresses: [String?] = [], states: [String?] = []
        for (prepared, id) in zip(messages, ids) {
            let message = prepared.message
            senders.append(message.sender)
            messageIDs.append(prepared.messageID)
            sizes.append(String(message.content.count))
            notBefores.append(String(max(nowDate, message.notBefore ?? nowDate).milliseconds))
            pending.append(message.recipients.indices.contains { !prepared.suppressed.contains($0) } ? "t" : "f")
            for (position, address) in message.recipients.enumerated() {
                recipientMessages.append(String(id))
                positions.append(String(position))
                addresses.append(address)
                states.append(prepared.suppressed.contains(position) ? "suppressed" : "queued")
            }
        }
        return [
            .init("""
                INSERT INTO sluice_messages (id, sender, message_id, size, created_at, not_before, age_from, due_at, finished_at)
                OVERRIDING SYSTEM VALUE
                SELECT t.id, t.sender, t.message_id, t.size, sluice_at($7::bigint), sluice_at(t.not_before),
                    sluice_at(t.not_before), CASE WHEN t.pending THEN sluice_at(t.not_before) END,
                    CASE WHEN t.pending THEN NULL ELSE sluice_at($7::bigint) END
                FROM unnest($1::bigint[], $2::text[], $3::text[], $4::integer[], $5::bigint[], $6::boolean[])
                    AS t(id, sender, message_id, size, not_before, pending)
                """,
                  [.text(pgArray(ids.map(String.init))), .text(pgArray(senders)), .text(pgArray(messageIDs)),
                   .text(pgArray(sizes)), .text(pgArray(notBefores)), .text(pgArray(pending)), .text(now)]),
        ] + contentStatements(messages.map(\.message.content), ids: ids) + [
            .init("""
                INSERT INTO sluice_recipients (message_id, position, address, state)
                SELECT * FROM unnest($1::bigint[], $2::integer[], $3::text[], $4::text[])
                """,
                  [.text(pgArray(recipientMessages)), .text(pgArray(positions)), .text(pgArray(addresses)),
                   .text(pgArray(states))]),
        ]
    }

    /// The contents as binary `bytea[]` parameters: each message's bytes as they are, in
    /// statements of at most `maximumBytes` (a value must stay under PostgreSQL's 1 GB); a
    /// larger content goes alone. A VALUES list of two parameters a message took PostgreSQL
    /// longer to parse, plan and run.
    static func contentStatements(_ contents: [[UInt8]], ids: [Int64], maximumBytes: Int = 64 << 20)
        -> [PostgresConnection.Statement]
    {
        var statements: [PostgresConnection.Statement] = []
        var start = 0
        while start < contents.count {
            var end = start
            var bytes = 0
            while end < contents.count, end == start || bytes + contents[end].count <= maximumBytes {
                bytes += contents[end].count
                end += 1
            }
            statements.append(.init(
                "INSERT INTO sluice_contents (message_id, content) SELECT * FROM unnest($1::bigint[], $2::bytea[])",
                [.text(pgArray(ids[start..<end].map(String.init))), .bytes(pgBinaryByteaArray(contents[start..<end]))]))
            start = end
        }
        return statements
    }

    // MARK: Claiming

    public func claim(owner: String, limit: Int, now: Date, leaseUntil: Date, rateLimit: OutboxRateLimit?)
        async throws(OutboxError) -> [ClaimedMessage]
    {
        let statement = Self.claimStatement(owner: owner, limit: limit, now: now, leaseUntil: leaseUntil, rateLimit: rateLimit)
        let rows = try await run([statement], checked: false)[0].binary
        var claimed: [ClaimedMessage] = []
        var empty: [Int64] = []
        claimed.reserveCapacity(rows.count)
        for row in rows {
            guard let id = row[0].flatMap(bigEndianInteger) else { continue }
            let list = row[5].map { String(decoding: $0, as: UTF8.self) } ?? ""
            let recipients = list.split(separator: "\n").compactMap { line -> (position: Int, address: String)? in
                guard let space = line.firstIndex(of: " "), let position = Int(line[..<space]) else { return nil }
                return (position, String(line[line.index(after: space)...]))
            }
            if recipients.isEmpty {
                empty.append(id)
                continue
            }
            claimed.append(ClaimedMessage(
                id: id, sender: row[1].map { String(decoding: $0, as: UTF8.self) } ?? "", content: row[2] ?? [],
                firstDueAt: Date(milliseconds: row[3].flatMap(bigEndianInteger) ?? 0),
                attempts: row[4].flatMap(bigEndianInteger).map(Int.init) ?? 1, recipients: recipients))
        }
        if !empty.isEmpty {
            // Cancelled while a worker that then vanished held them: nothing is left to send.
            _ = try await run([.init("""
                UPDATE sluice_messages SET due_at = NULL, lease_owner = NULL, lease_expires_at = NULL,
                    finished_at = sluice_at($2::bigint)
                WHERE id = ANY ($1::bigint[]) AND lease_owner = $3
                """, [.text(pgArray(empty.map(String.init))), .text(String(now.milliseconds)), .text(owner)])], checked: false)
        }
        return claimed
    }

    /// The claim: one statement that takes the due messages, leases them and returns them
    /// with their contents and pending recipients, as binary rows (id, sender, content, age in
    /// milliseconds, attempts, and the recipients as `position address` lines).
    static func claimStatement(owner: String, limit: Int, now: Date, leaseUntil: Date, rateLimit: OutboxRateLimit?)
        -> PostgresConnection.Statement
    {
        let limitClause: String
        let bucket: String
        let spend: String
        var parameters: [PostgresConnection.Parameter?] = [
            .text(String(now.milliseconds)), .text(String(limit)), .text(owner), .text(String(leaseUntil.milliseconds)),
        ]
        if let rateLimit {
            bucket = """
                bucket AS (
                    SELECT least($5::float8, tokens + $6::float8
                                 * greatest(0, extract(epoch FROM sluice_at($1::bigint) - updated_at))::float8) AS tokens
                    FROM sluice_rate WHERE id = 1 FOR UPDATE),
                """
            limitClause = "least($2::integer, (SELECT floor(tokens)::integer FROM bucket))"
            spend = """
                , spent AS (
                    UPDATE sluice_rate SET tokens = (SELECT tokens FROM bucket) - (SELECT count(*) FROM claimed),
                        updated_at = sluice_at($1::bigint)
                    WHERE id = 1)
                """
            parameters += [.text(String(rateLimit.burst)), .text(String(rateLimit.messagesPerSecond))]
        } else {
            (bucket, limitClause, spend) = ("", "$2::integer", "")
        }
        let sql = """
            WITH \(bucket)
            due AS (
                SELECT id FROM sluice_messages WHERE due_at <= sluice_at($1::bigint)
                ORDER BY due_at, id LIMIT \(limitClause) FOR UPDATE SKIP LOCKED),
            claimed AS (
                UPDATE sluice_messages m SET lease_owner = $3, lease_expires_at = sluice_at($4::bigint),
                    due_at = sluice_at($4::bigint), attempts = m.attempts + 1
                WHERE m.id = ANY (ARRAY(SELECT id FROM due))
                RETURNING m.id, m.sender, floor(extract(epoch FROM m.age_from) * 1000)::bigint AS age_from, m.attempts)
            \(spend)
            SELECT c.id, c.sender, (SELECT content FROM sluice_contents WHERE message_id = c.id), c.age_from, c.attempts,
                (SELECT string_agg(r.position || ' ' || r.address, E'\\n' ORDER BY r.position) FROM sluice_recipients r
                 WHERE r.message_id = c.id AND r.state IN ('queued', 'deferred'))
            FROM claimed c ORDER BY c.id
            """
        // The claimed rows are found by their ids through the primary key: joined to `due`,
        // the planner hashed the whole table, a scan that grows with the queue (8 ms a claim
        // at 20,000 waiting). `sluice_ms` is written out: declared immutable over a stable
        // `extract`, it is not inlined, and ran as a query a row. The rows come back binary:
        // each content as its bytes, not twice as many hex digits for the server to write and
        // the worker to read.
        return .init(sql, parameters, binaryResults: true)
    }

    public func renew(owner: String, ids: [Int64], until: Date) async throws(OutboxError) -> Set<Int64> {
        let rows = try await run([.init("""
            UPDATE sluice_messages SET lease_expires_at = sluice_at($3::bigint), due_at = sluice_at($3::bigint)
            WHERE id = ANY ($1::bigint[]) AND lease_owner = $2 RETURNING id
            """, [.text(pgArray(ids.map(String.init))), .text(owner), .text(String(until.milliseconds))])],
            checked: false, lane: .holding)
        return Set(rows[0].rows.compactMap { $0[0].flatMap { Int64($0) } })
    }

    public func release(owner: String, ids: [Int64], now: Date) async throws(OutboxError) {
        _ = try await run([.init("""
            UPDATE sluice_messages SET lease_owner = NULL, lease_expires_at = NULL, due_at = sluice_at($3::bigint),
                attempts = greatest(0, attempts - 1)
            WHERE id = ANY ($1::bigint[]) AND lease_owner = $2
            """, [.text(pgArray(ids.map(String.init))), .text(owner), .text(String(now.milliseconds))])],
            checked: false, lane: .holding)
    }

    // MARK: Recording

    public func record(_ outcomes: [MessageOutcome], owner: String, now: Date) async throws(OutboxError) -> [Int64] {
        guard !outcomes.isEmpty else { return [] }
        let results = try await run(Self.recordStatements(outcomes, owner: owner, now: now), checked: false, lane: .holding)
        let written = Set(results[1].rows.compactMap { $0[0].flatMap { Int64($0) } })
        // Hard bounces of the outcomes written join the suppression list: rarely any, so a
        // statement of their own only when there are.
        let suppress = outcomes.filter { written.contains($0.id) }.flatMap(\.suppress)
        if !suppress.isEmpty { _ = try await run([Self.upsert(suppress)], checked: false, lane: .holding) }
        return outcomes.map(\.id).filter { !written.contains($0) }
    }

    /// The record of one batch, as one pipeline on the holding connection: the claims locked
    /// and their recipients' outcomes written, then each message's next step (due again, or
    /// finished).
    static func recordStatements(_ outcomes: [MessageOutcome], owner: String, now: Date) -> [PostgresConnection.Statement] {
        let now = String(now.milliseconds)
        var messageIDs: [String?] = [], positions: [String?] = [], states: [String?] = [], unknowns: [String?] = []
        var codes: [String?] = [], enhanced: [String?] = [], replies: [String?] = [], happened: [String?] = []
        var classes: [String?] = []
        for outcome in outcomes {
            for recipient in outcome.recipients {
                messageIDs.append(String(outcome.id))
                positions.append(String(recipient.position))
                states.append(recipient.state.rawValue)
                unknowns.append(recipient.unknownOutcome ? "1" : "0")
                codes.append(recipient.code.map(String.init))
                enhanced.append(recipient.enhancedCode)
                replies.append(recipient.reply)
                classes.append(recipient.bounceClass?.rawValue)
                // What happened on the wire is written whatever an operator did meanwhile.
                happened.append(recipient.state == .delivered || recipient.unknownOutcome ? "t" : "f")
            }
        }
        let ids = pgArray(outcomes.map { String($0.id) })
        // The owner is matched as `coalesce(lease_owner, '') = owner`, an expression without
        // statistics: `lease_owner = owner` is costed from the column's statistics, where a
        // worker's name is never seen (it is new with each worker), as one row, and the
        // planner joined that one row to the outcomes in a nested loop that ran 912,000
        // times (750 ms a batch of 1,000, against 25 ms joined by hash or index). `OFFSET 0`
        // keeps `pending` a column: pulled up, its subquery ran once for each CASE that reads it.
        // The messages are also matched by `id = ANY (ids)`, so that the index is searched
        // for them: joined only to the outcomes, the planner read the whole index in order
        // and filtered it on the owner.
        return [
            // The claims still this owner's, locked by primary key so that no takeover slips
            // between the two updates, and only their recipients written. Checked a row at a
            // time (`EXISTS` on the owner), the planner fed a hash from a scan of the whole
            // messages index: 33 ms for 1,000 outcomes against 16 without the check, a cost
            // that grew with the table.
            .init("""
                WITH owned AS (SELECT id FROM sluice_messages WHERE id = ANY ($12::bigint[])
                                   AND coalesce(lease_owner, '') = $10 ORDER BY id FOR UPDATE)
                UPDATE sluice_recipients r SET state = u.state, attempts = r.attempts + (u.state <> 'suppressed')::integer,
                    unknown_outcomes = r.unknown_outcomes + u.unknown, code = u.code, enhanced_code = u.enhanced,
                    reply = u.reply, last_attempt_at = sluice_at($9::bigint),
                    attempt_times = CASE WHEN u.state = 'suppressed' THEN r.attempt_times
                                         ELSE r.attempt_times || sluice_at($9::bigint) END,
                    bounce_class = u.bounce_class
                FROM unnest($1::bigint[], $2::integer[], $3::text[], $4::integer[], $5::integer[], $6::text[], $7::text[],
                            $8::boolean[], $11::text[])
                    AS u(message_id, position, state, unknown, code, enhanced, reply, happened, bounce_class)
                WHERE r.message_id = u.message_id AND r.position = u.position
                    AND (u.happened OR r.state IN ('queued', 'deferred'))
                    AND u.message_id IN (SELECT id FROM owned)
                """,
                  [.text(pgArray(messageIDs)), .text(pgArray(positions)), .text(pgArray(states)), .text(pgArray(unknowns)),
                   .text(pgArray(codes)), .text(pgArray(enhanced)), .text(pgArray(replies)), .text(pgArray(happened)),
                   .text(now), .text(owner), .text(pgArray(classes)), .text(ids)]),
            .init("""
                UPDATE sluice_messages m SET lease_owner = NULL, lease_expires_at = NULL,
                    due_at = CASE WHEN p.pending THEN coalesce(sluice_at(u.next), sluice_at($4::bigint)) END,
                    finished_at = CASE WHEN p.pending THEN NULL ELSE sluice_at($4::bigint) END,
                    last_error = u.error
                FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS u(id, next, error),
                    LATERAL (SELECT EXISTS (SELECT 1 FROM sluice_recipients r
                                            WHERE r.message_id = u.id AND r.state IN ('queued', 'deferred')) AS pending
                             OFFSET 0) p
                WHERE m.id = u.id AND m.id = ANY ($1::bigint[]) AND coalesce(m.lease_owner, '') = $5
                RETURNING m.id
                """,
                  [.text(ids), .text(pgArray(outcomes.map { $0.nextAttemptAt.map { String($0.milliseconds) } })),
                   .text(pgArray(outcomes.map(\.error))), .text(now), .text(owner)]),
        ]
    }

    // MARK: Suppression

    private static func upsert(_ entries: [Suppression]) -> PostgresConnection.Statement {
        // One row a target: a batch that names one twice would make ON CONFLICT touch a row twice.
        var latest: [String: Suppression] = [:]
        for entry in entries { latest[entry.target] = entry }
        let rows = latest.values.sorted { $0.target < $1.target }
        return .init("""
            INSERT INTO sluice_suppressions (target, reason, detail, created_at, expires_at)
            SELECT t.target, t.reason, t.detail, sluice_at(t.created), sluice_at(t.expires)
            FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[])
                AS t(target, reason, detail, created, expires)
            ON CONFLICT (target) DO UPDATE SET reason = excluded.reason, detail = excluded.detail,
                created_at = excluded.created_at, expires_at = excluded.expires_at
            """, [.text(pgArray(rows.map(\.target))), .text(pgArray(rows.map(\.reason))), .text(pgArray(rows.map(\.detail))),
                  .text(pgArray(rows.map { String($0.createdAt.milliseconds) })),
                  .text(pgArray(rows.map { $0.expiresAt.map { String($0.milliseconds) } }))])
    }

    public func suppress(_ entries: [Suppression]) async throws(OutboxError) -> Int {
        guard !entries.isEmpty else {
            try await checkSchema()
            return 0
        }
        // In pieces, so that a large import is not one statement of millions of values.
        var written = 0
        var start = 0
        while start < entries.count {
            let piece = Array(entries[start..<min(start + 10_000, entries.count)])
            written += try await run([Self.upsert(piece)])[0].affected
            start += piece.count
        }
        return written
    }

    public func unsuppress(_ targets: [String]) async throws(OutboxError) -> Int {
        let results = try await run([.init("DELETE FROM sluice_suppressions WHERE target = ANY ($1::text[])",
                                           [.text(pgArray(targets))])])
        return results[0].affected
    }

    // MARK: Bounces

    public func secret() async throws(OutboxError) -> [UInt8] {
        let rows = try await run([.init("SELECT value FROM sluice_settings WHERE name = 'secret'")])
        guard let hex = rows[0].rows.first?.first.flatMap({ $0 }), let secret = hexBytes(hex) else {
            throw OutboxError(.database, "the outbox has no secret")
        }
        return secret
    }

    public func messages(withMessageID messageID: String) async throws(OutboxError) -> [Int64] {
        let rows = try await run([.init("SELECT id FROM sluice_messages WHERE message_id = $1 ORDER BY id", [.text(messageID)])])
        return rows[0].rows.compactMap { $0[0].flatMap { Int64($0) } }
    }

    public func recordBounces(_ bounces: [BounceRecord], now: Date) async throws(OutboxError) -> [Bool] {
        guard !bounces.isEmpty else { return [] }
        // In one pipeline: one transaction, one round trip. A hard bounce's suppression is
        // written when its recipient is bounced.
        var statements: [PostgresConnection.Statement] = []
        var updates: [Int] = []
        for bounce in bounces {
            updates.append(statements.count)
            statements.append(.init("""
                UPDATE sluice_recipients SET state = 'bounced', enhanced_code = $3, reply = $4, bounce_class = $5, code = NULL,
                    last_attempt_at = sluice_at($6::bigint)
                WHERE message_id = $1::bigint AND sluice_lower_ascii(address) = sluice_lower_ascii($2)
                    AND state IN ('delivered', 'unknown')
                """, [.text(String(bounce.messageID)), .text(bounce.address), bounce.enhancedCode.map { .text($0) },
                      bounce.reply.map { .text($0) }, .text(bounce.bounceClass.rawValue), .text(String(now.milliseconds))]))
            if let entry = bounce.suppress {
                statements.append(.init("""
                    INSERT INTO sluice_suppressions (target, reason, detail, created_at, expires_at)
                    SELECT $3, $4, $5, sluice_at($6::bigint), sluice_at($7::bigint)
                    WHERE EXISTS (SELECT 1 FROM sluice_recipients WHERE message_id = $1::bigint
                                  AND sluice_lower_ascii(address) = sluice_lower_ascii($2) AND state = 'bounced')
                    ON CONFLICT (target) DO UPDATE SET reason = excluded.reason, detail = excluded.detail,
                        created_at = excluded.created_at, expires_at = excluded.expires_at
                    """, [.text(String(bounce.messageID)), .text(bounce.address), .text(entry.target), .text(entry.reason),
                          entry.detail.map { .text($0) }, .text(String(entry.createdAt.milliseconds)),
                          entry.expiresAt.map { .text(String($0.milliseconds)) }]))
            }
        }
        let results = try await run(statements)
        return updates.map { results[$0].affected > 0 }
    }

    private static let suppressionColumns = "target, reason, detail, sluice_ms(created_at), sluice_ms(expires_at)"

    public func suppressions(after: String?, limit: Int) async throws(OutboxError) -> [Suppression] {
        let results = try await run([.init("""
            SELECT \(Self.suppressionColumns) FROM sluice_suppressions
            WHERE $1::text IS NULL OR target COLLATE "C" > $1::text ORDER BY target COLLATE "C" LIMIT $2::integer
            """, [after.map { .text($0) }, .text(String(limit))])])
        return Self.suppressions(results[0].rows)
    }

    public func activeSuppressions(forAddresses addresses: [String], now: Date) async throws(OutboxError)
        -> [String: Suppression]
    {
        guard !addresses.isEmpty else { return [:] }
        // Each address against its own entry and its domain's, the targets made here as the
        // SQLite store makes them: in SQL, the lower-casing and the domain's regular
        // expression cost 14 ms a claim of 1,000. An empty list costs a probe of an empty index.
        var looked: [String?] = [], targets: [String?] = [], ranks: [String?] = []
        for address in Set(addresses) {
            for (rank, target) in Suppression.targets(of: address).enumerated() {
                looked.append(address)
                targets.append(target)
                ranks.append(String(rank))
            }
        }
        guard !looked.isEmpty else { return [:] }
        let results = try await run([.init("""
            SELECT DISTINCT ON (a.address) a.address, \(Self.suppressionColumns)
            FROM unnest($1::text[], $2::text[], $3::integer[]) AS a(address, wanted, rank)
            JOIN sluice_suppressions s
                ON s.target = a.wanted AND (s.expires_at IS NULL OR s.expires_at > sluice_at($4::bigint))
            ORDER BY a.address, a.rank
            """, [.text(pgArray(looked)), .text(pgArray(targets)), .text(pgArray(ranks)), .text(String(now.milliseconds))])])
        var found: [String: Suppression] = [:]
        for row in results[0].rows {
            guard let address = row[0], let entry = Self.suppressions([Array(row.dropFirst())]).first else { continue }
            found[address] = entry
        }
        return found
    }

    private static func suppressions(_ rows: [[String?]]) -> [Suppression] {
        rows.map { row in
            Suppression(stored: row[0] ?? "", reason: row[1] ?? "", detail: row[2],
                        createdAt: Date(milliseconds: row[3].flatMap { Int64($0) } ?? 0),
                        expiresAt: row[4].flatMap { Int64($0) }.map(Date.init(milliseconds:)))
        }
    }

    // MARK: Reading

    public func status(now: Date) async throws(OutboxError) -> OutboxStatus {
        let now = String(now.milliseconds)
        let results = try await run([
            .init("""
                SELECT r.state, (m.due_at IS NOT NULL AND m.lease_owner IS NOT NULL AND m.lease_expires_at > sluice_at($1::bigint)
                                 AND r.state IN ('queued', 'deferred')), count(*)
                FROM sluice_recipients r JOIN sluice_messages m ON m.id = r.message_id GROUP BY 1, 2
                """, [.text(now)]),
            .init("""
                SELECT
                    count(*) FILTER (WHERE due_at <= sluice_at($1::bigint)
                                     AND (lease_owner IS NULL OR lease_expires_at <= sluice_at($1::bigint))),
                    count(*) FILTER (WHERE due_at > sluice_at($1::bigint) AND lease_owner IS NULL),
                    count(*) FILTER (WHERE lease_owner IS NOT NULL AND lease_expires_at > sluice_at($1::bigint)),
                    sluice_ms(min(due_at) FILTER (WHERE due_at <= sluice_at($1::bigint)
                                                  AND (lease_owner IS NULL OR lease_expires_at <= sluice_at($1::bigint))))
                FROM sluice_messages WHERE due_at IS NOT NULL
                """, [.text(now)]),
            .init("SELECT count(*) FROM sluice_messages WHERE due_at IS NULL"),
            .init("""
                SELECT count(*) FROM sluice_recipients
                WHERE state = 'delivered' AND last_attempt_at > sluice_at($1::bigint - 60000)
                """, [.text(now)]),
        ])
        var recipients = Dictionary(uniqueKeysWithValues: RecipientState.allCases.map { ($0, 0) })
        for row in results[0].rows {
            guard let state = row[0].flatMap(RecipientState.init(rawValue:)), let count = row[2].flatMap({ Int($0) }) else { continue }
            recipients[row[1] == "t" ? .leased : state, default: 0] += count
        }
        let messages = results[1].rows.first ?? []
        func int(_ value: String??) -> Int { value.flatMap { $0 }.flatMap { Int($0) } ?? 0 }
        return OutboxStatus(
            recipients: recipients, messagesWaiting: int(messages.first), messagesScheduled: int(messages.dropFirst().first),
            messagesLeased: int(messages.dropFirst(2).first), messagesFinished: int(results[2].rows.first?.first),
            oldestWaitingSince: messages.dropFirst(3).first.flatMap { $0 }.flatMap { Int64($0) }.map(Date.init(milliseconds:)),
            deliveredLastMinute: int(results[3].rows.first?.first))
    }

    public func hasPendingWork() async throws(OutboxError) -> Bool {
        let rows = try await run([.init("SELECT 1 FROM sluice_messages WHERE due_at IS NOT NULL LIMIT 1")], checked: false)
        return !rows[0].rows.isEmpty
    }

    public func waiting(now: Date) async throws(OutboxError) -> (count: Int, oldestDueAt: Date?) {
        // A held message's due_at is its lease's expiry, in the future: the range excludes it.
        let rows = try await run([.init(
            "SELECT count(*), sluice_ms(min(due_at)) FROM sluice_messages WHERE due_at <= sluice_at($1::bigint)",
            [.text(String(now.milliseconds))])], checked: false)
        let row = rows[0].rows.first
        return (row?[0].flatMap { Int($0) } ?? 0, row?[1].flatMap { Int64($0) }.map(Date.init(milliseconds:)))
    }

    public func nextDueAt() async throws(OutboxError) -> Date? {
        let rows = try await run([.init("SELECT sluice_ms(min(due_at)) FROM sluice_messages WHERE due_at IS NOT NULL")],
                                 checked: false)
        return rows[0].rows.first?.first.flatMap { $0 }.flatMap { Int64($0) }.map(Date.init(milliseconds:))
    }

    private static let recordColumns = """
        m.id, m.idempotency_key, m.sender, m.message_id, m.size, sluice_ms(m.created_at), sluice_ms(m.not_before),
        sluice_ms(m.due_at), m.attempts, m.lease_owner, sluice_ms(m.lease_expires_at), m.last_error,
        (SELECT json_agg(json_build_object('p', r.position, 'a', r.address, 's', r.state, 'n', r.attempts,
                                           'u', r.unknown_outcomes, 'c', r.code, 'e', r.enhanced_code, 'r', r.reply,
                                           'b', r.bounce_class,
                                           't', ARRAY(SELECT sluice_ms(t) FROM unnest(r.attempt_times) AS t))
                         ORDER BY r.position)
         FROM sluice_recipients r WHERE r.message_id = m.id)
        """

    public func message(id: Int64, now: Date) async throws(OutboxError) -> OutboxRecord? {
        let rows = try await run([.init("SELECT \(Self.recordColumns) FROM sluice_messages m WHERE m.id = $1::bigint",
                                        [.text(String(id))])])
        return rows[0].rows.first.map { Self.record($0, now: now) }
    }

    public func content(id: Int64) async throws(OutboxError) -> [UInt8]? {
        let rows = try await run([.init("SELECT content FROM sluice_contents WHERE message_id = $1::bigint", [.text(String(id))],
                                        binaryResults: true)], checked: false)
        guard let row = rows[0].binary.first else { return nil }
        return row[0] ?? []
    }

    public func list(state: RecipientState?, afterID: Int64, limit: Int, now: Date) async throws(OutboxError) -> [OutboxRecord] {
        let held = "(m.due_at IS NOT NULL AND m.lease_owner IS NOT NULL AND m.lease_expires_at > sluice_at($3::bigint))"
        let filter: String
        switch state {
        case nil: filter = "$2::text IS NULL"
        case .leased?: filter = "$2::text IS NOT NULL AND \(held)"
        case .queued?, .deferred?:
            filter = "NOT \(held) AND EXISTS (SELECT 1 FROM sluice_recipients r WHERE r.message_id = m.id AND r.state = $2)"
        case _?: filter = "EXISTS (SELECT 1 FROM sluice_recipients r WHERE r.message_id = m.id AND r.state = $2)"
        }
        let rows = try await run([.init("""
            SELECT \(Self.recordColumns) FROM sluice_messages m
            WHERE m.id > $1::bigint AND \(filter) AND $3::bigint IS NOT NULL ORDER BY m.id LIMIT $4::integer
            """, [.text(String(afterID)), state.map { .text($0.rawValue) }, .text(String(now.milliseconds)), .text(String(limit))])])
        return rows[0].rows.map { Self.record($0, now: now) }
    }

    private struct RecipientJSON: Decodable {
        var p: Int
        var a: String
        var s: String
        var n: Int
        var u: Int
        var c: Int?
        var e: String?
        var r: String?
        var b: String?
        var t: [Int64]?
    }

    private static func record(_ row: [String?], now: Date) -> OutboxRecord {
        func int64(_ index: Int) -> Int64? { row[index].flatMap { Int64($0) } }
        let leaseExpires = int64(10)
        let held = row[9] != nil && int64(7) != nil && (leaseExpires ?? 0) > now.milliseconds
        let recipients = (try? JSONDecoder().decode([RecipientJSON].self, from: Data((row[12] ?? "[]").utf8))) ?? []
        return OutboxRecord(
            id: int64(0) ?? 0, idempotencyKey: row[1], sender: row[2] ?? "", messageID: row[3],
            size: Int(int64(4) ?? 0), createdAt: Date(milliseconds: int64(5) ?? 0),
            notBefore: Date(milliseconds: int64(6) ?? 0), dueAt: int64(7).map(Date.init(milliseconds:)),
            attempts: Int(int64(8) ?? 0), leaseOwner: held ? row[9] : nil,
            leaseExpiresAt: held ? leaseExpires.map(Date.init(milliseconds:)) : nil, lastError: row[11],
            recipients: recipients.map { recipient in
                var state = RecipientState(rawValue: recipient.s) ?? .failed
                if held, state.isPending { state = .leased }
                return OutboxRecipient(
                    position: recipient.p, address: recipient.a, state: state, attempts: recipient.n,
                    unknownOutcomes: recipient.u, code: recipient.c, enhancedCode: recipient.e, reply: recipient.r,
                    bounceClass: recipient.b.flatMap(BounceClass.init(rawValue:)), attemptTimes: (recipient.t ?? []).map(Date.init(milliseconds:)))
            })
    }

    // MARK: Operators

    public func cancel(id: Int64, now: Date) async throws(OutboxError) -> Int {
        let results = try await run([
            .init("SELECT lease_owner IS NOT NULL FROM sluice_messages WHERE id = $1::bigint FOR UPDATE", [.text(String(id))]),
            .init("""
                UPDATE sluice_recipients SET state = 'cancelled'
                WHERE message_id = $1::bigint AND state IN ('queued', 'deferred')
                """, [.text(String(id))]),
            .init("""
                UPDATE sluice_messages SET due_at = NULL, finished_at = sluice_at($2::bigint)
                WHERE id = $1::bigint AND due_at IS NOT NULL AND lease_owner IS NULL
                """, [.text(String(id)), .text(String(now.milliseconds))]),
        ])
        guard !results[0].rows.isEmpty else { throw OutboxError(.notFound, "no message has id \(id)") }
        return results[1].affected
    }

    public func retry(id: Int64?, states: Set<RecipientState>, now: Date) async throws(OutboxError) -> Int {
        let stored = pgArray(states.subtracting([.leased, .queued]).map(\.rawValue).sorted())
        let parameters: [PostgresConnection.Parameter?] = [id.map { .text(String($0)) }, .text(stored), .text(String(now.milliseconds))]
        let scope = "($1::bigint IS NULL OR message_id = $1::bigint)"
        let results = try await run([
            .init("SELECT count(*) FROM sluice_messages WHERE $1::bigint IS NULL OR id = $1::bigint", [parameters[0]]),
            .init("""
                UPDATE sluice_messages SET due_at = CASE WHEN lease_owner IS NULL THEN sluice_at($3::bigint) ELSE due_at END,
                    finished_at = NULL, age_from = sluice_at($3::bigint)
                WHERE id IN (SELECT message_id FROM sluice_recipients WHERE \(scope) AND state = ANY ($2::text[]))
                """, parameters),
            .init("UPDATE sluice_recipients SET state = 'queued' WHERE \(scope) AND state = ANY ($2::text[])",
                  [parameters[0], parameters[1]]),
            .init("SELECT pg_notify('sluice_outbox', '')"),
        ])
        if id != nil, results[0].rows.first?.first == "0" { throw OutboxError(.notFound, "no message has id \(id!)") }
        return results[2].affected
    }

    public func purge(finishedBefore before: Date, limit: Int) async throws(OutboxError) -> Int {
        let results = try await run([.init("""
            DELETE FROM sluice_messages WHERE id IN (
                SELECT id FROM sluice_messages WHERE finished_at < sluice_at($1::bigint) ORDER BY finished_at LIMIT $2::integer)
            """, [.text(String(before.milliseconds)), .text(String(limit))])])
        return results[0].affected
    }

    /// Runs SQL directly (for tests and maintenance).
    func execute(_ sql: String) async throws(OutboxError) {
        _ = try await run([.init(sql)], checked: false)
    }

    /// Runs one query as every operation runs and returns its rows (for tests); `holding` runs
    /// it as records, renewals and releases run.
    func rows(_ sql: String, _ parameters: [PostgresConnection.Parameter?] = [], holding: Bool = false)
        async throws(OutboxError) -> [[String?]]
    {
        try await run([.init(sql, parameters)], checked: false, lane: holding ? .holding : .main)[0].rows
    }
}

/// A PostgreSQL array literal of text values (NULL for nil), every element quoted.
func pgArray(_ values: [String?]) -> String {
    // Built as UTF-8 bytes: appending to a String a scalar at a time cost a sixth of a
    // worker's CPU. Only ASCII is inserted, and NUL (which PostgreSQL's text cannot hold, and
    // which in UTF-8 is only ever the byte 0) dropped, so the bytes stay valid UTF-8.
    var bytes: [UInt8] = [UInt8(ascii: "{")]
    bytes.reserveCapacity(values.reduce(2) { $0 + ($1?.utf8.count ?? 4) + 3 })
    for (index, value) in values.enumerated() {
        if index > 0 { bytes.append(UInt8(ascii: ",")) }
        guard let value else {
            bytes += "NULL".utf8
            continue
        }
        bytes.append(UInt8(ascii: "\""))
        for byte in value.utf8 where byte != 0 {
            if byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") { bytes.append(UInt8(ascii: "\\")) }
            bytes.append(byte)
        }
        bytes.append(UInt8(ascii: "\""))
    }
    bytes.append(UInt8(ascii: "}"))
    return String(decoding: bytes, as: UTF8.self)
}

/// A one-dimensional `bytea[]` in PostgreSQL's binary format (`array_send`): dimensions,
/// no NULLs, the element type's OID, then each element's length and bytes, big-endian.
func pgBinaryByteaArray(_ elements: ArraySlice<[UInt8]>) -> [UInt8] {
    var out: [UInt8] = []
    out.reserveCapacity(20 + elements.reduce(0) { $0 + 4 + $1.count })
    func append(_ value: Int32) {
        withUnsafeBytes(of: value.bigEndian) { out.append(contentsOf: $0) }
    }
    append(1)  // dimensions
    append(0)  // no NULLs
    append(17)  // bytea
    append(Int32(elements.count))
    append(1)  // lower bound
    for element in elements {
        append(Int32(element.count))
        out += element
    }
    return out
}

func pgArray(_ values: [String]) -> String { pgArray(values.map { Optional($0) }) }

/// An integer in PostgreSQL's binary format (`int2`, `int4` or `int8`: big-endian, two's
/// complement); nil for any other length.
func bigEndianInteger(_ bytes: [UInt8]) -> Int64? {
    guard bytes.count == 2 || bytes.count == 4 || bytes.count == 8 else { return nil }
    var value: Int64 = bytes[0] & 0x80 == 0 ? 0 : -1
    for byte in bytes { value = value << 8 | Int64(byte) }
    return value
}
