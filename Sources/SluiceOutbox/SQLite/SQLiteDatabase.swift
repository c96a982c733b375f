import CSQLite
import Foundation
import SluiceTransport

/// One SQLite connection, used only on the thread of the ``SQLiteThread`` that opened it.
///
/// Statements are prepared once and kept: a literal one by the address of its text, a built
/// one by its text.
final class SQLiteDatabase {
    private let handle: OpaquePointer
    private var statements: [String: SQLiteStatement] = [:]
    /// The literal statements, by the address of their text. Looking one up by its text hashed
    /// every byte of it, hundreds a statement and several statements a message.
    private var literalStatements: [UnsafeRawPointer: SQLiteStatement] = [:]
    private var isClosed = false

    /// Opens (creating if need be) the database at `path`.
    init(path: String, create: Bool) throws(OutboxError) {
        var db: OpaquePointer?
        let flags = SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0) | SQLITE_OPEN_NOMUTEX
        let status = sqlite3_open_v2(path, &db, flags, nil)
        guard status == SQLITE_OK, let db else {
            let message = db.map { String(cString: sqlite3_errmsg($0)) } ?? String(cString: sqlite3_errstr(status))
            if let db { sqlite3_close_v2(db) }
            throw OutboxError(.unavailable, "cannot open SQLite database \(path): \(message)")
        }
        handle = db
        sqlite3_extended_result_codes(db, 1)
        // Other processes (a second worker, `sluice outbox enqueue`) share the file: wait for
        // their locks rather than fail at once.
        sqlite3_busy_timeout(db, 10_000)
    }

    deinit { close() }

    /// Finalizes the statements and closes the connection; nothing may use it afterwards.
    /// The last connection to a database closing copies the WAL into it and removes it.
    func close() {
        guard !isClosed else { return }
        isClosed = true
        for statement in statements.values { statement.finalize() }
        statements = [:]
        literalStatements = [:]
        sqlite3_close_v2(handle)
    }

    /// Runs one or more statements that return no rows.
    func execute(_ sql: String) throws(OutboxError) {
        var error: UnsafeMutablePointer<CChar>?
        let status = sqlite3_exec(handle, sql, nil, nil, &error)
        guard status == SQLITE_OK else {
            let message = error.map { String(cString: $0) } ?? lastError
            sqlite3_free(error)
            throw OutboxError(status == SQLITE_BUSY ? .unavailable : .database, message)
        }
    }

    /// The statement for the literal `sql`, prepared once and reset for another use.
    func statement(_ sql: StaticString) throws(OutboxError) -> SQLiteStatement {
        guard sql.hasPointerRepresentation else { return try statement(built: sql.description) }
        let key = UnsafeRawPointer(sql.utf8Start)
        if let statement = literalStatements[key] {
            statement.reset()
            return statement
        }
        let statement = try statement(built: sql.description)
        literalStatements[key] = statement
        return statement
    }

    /// The statement for `sql`, text built at run time, prepared once and reset for another use.
    func statement(built sql: String) throws(OutboxError) -> SQLiteStatement {
        if let statement = statements[sql] {
            statement.reset()
            return statement
        }
        var prepared: OpaquePointer?
        guard sqlite3_prepare_v3(handle, sql, -1, UInt32(SQLITE_PREPARE_PERSISTENT), &prepared, nil) == SQLITE_OK,
              let prepared
        else {
            throw OutboxError(.database, "\(lastError) in: \(sql)")
        }
        let statement = SQLiteStatement(handle: prepared, database: self)
        statements[sql] = statement
        return statement
    }

    /// Runs `body` in a transaction: committed when it returns, rolled back when it throws.
    /// `BEGIN IMMEDIATE` takes the write lock at once, so two writers never deadlock upgrading.
    func transaction<Result>(_ body: () throws(OutboxError) -> Result) throws(OutboxError) -> Result {
        try execute("BEGIN IMMEDIATE")
        do {
            let result = try body()
            resetActiveStatements()
            try execute("COMMIT")
            return result
        } catch {
            try? execute("ROLLBACK")
            throw error
        }
    }

    /// Resets every statement left mid-result (a `step()` that returned a row and was not
    /// stepped to its end). Such a statement keeps its read transaction open, and with it a
    /// snapshot: later reads on this connection would not see other processes' commits, and
    /// its next write transaction would fail with SQLITE_BUSY_SNAPSHOT.
    func resetActiveStatements() {
        var statement = sqlite3_next_stmt(handle, nil)
        while let current = statement {
            if sqlite3_stmt_busy(current) != 0 { sqlite3_reset(current) }
            statement = sqlite3_next_stmt(handle, current)
        }
    }

    /// Called on this connection's thread after each commit that wrote to the WAL, with the
    /// number of pages the WAL holds since it last started again from its beginning.
    private var walCommitted: ((SQLiteDatabase, Int) -> Void)?

    /// Calls `handler` after each commit of this connection, in place of SQLite's own
    /// checkpoint after a commit (`wal_autocheckpoint`), which it turns off.
    func onWALCommit(_ handler: @escaping (SQLiteDatabase, Int) -> Void) {
        walCommitted = handler
        // Unretained: the hook goes with the handle, which this object closes as it ends.
        sqlite3_wal_hook(handle, { context, _, _, pages in
            guard let context else { return SQLITE_OK }
            let database = Unmanaged<SQLiteDatabase>.fromOpaque(context).takeUnretainedValue()
            database.walCommitted?(database, Int(pages))
            return SQLITE_OK
        }, Unmanaged.passUnretained(self).toOpaque())
    }

    /// A passive checkpoint: copies into the database file what it can of the WAL without
    /// waiting for any reader or writer. Returns the WAL's frames and how many of them are in
    /// the database now; nil when another connection was checkpointing.
    @discardableResult
    func checkpoint() -> (frames: Int, checkpointed: Int)? {
        var frames: Int32 = 0, checkpointed: Int32 = 0
        let status = sqlite3_wal_checkpoint_v2(handle, nil, SQLITE_CHECKPOINT_PASSIVE, &frames, &checkpointed)
        return status == SQLITE_OK ? (Int(frames), Int(checkpointed)) : nil
    }

    /// Rows changed by the last statement.
    var changes: Int { Int(sqlite3_changes(handle)) }

    /// The rowid of the last row inserted.
    var lastInsertedRowID: Int64 { sqlite3_last_insert_rowid(handle) }

    var lastError: String { String(cString: sqlite3_errmsg(handle)) }
}

/// A prepared statement. Parameters are numbered from 1, columns from 0.
final class SQLiteStatement {
    private let handle: OpaquePointer
    private unowned let database: SQLiteDatabase

    init(handle: OpaquePointer, database: SQLiteDatabase) {
        self.handle = handle
        self.database = database
    }

    func finalize() { sqlite3_finalize(handle) }

    func reset() {
        sqlite3_reset(handle)
        sqlite3_clear_bindings(handle)
    }

    @discardableResult
    func bind(_ index: Int32, _ value: Int64?) -> Self {
        if let value { sqlite3_bind_int64(handle, index, value) } else { sqlite3_bind_null(handle, index) }
        return self
    }

    @discardableResult
    func bind(_ index: Int32, _ value: Int?) -> Self { bind(index, value.map(Int64.init)) }

    @discardableResult
    func bind(_ index: Int32, _ value: Double) -> Self {
        sqlite3_bind_double(handle, index, value)
        return self
    }

    @discardableResult
    func bind(_ index: Int32, _ value: String?) -> Self {
        if let value {
            // The UTF-8 in place, with its length: passed as a C string, each value was
            // copied into a new array first (String.utf8CString), an allocation a parameter.
            let bound = value.utf8.withContiguousStorageIfAvailable { bytes in
                bytes.withMemoryRebound(to: CChar.self) { text in
                    // No address for an empty string, and a nil pointer would bind NULL.
                    guard let base = text.baseAddress else { return sqlite3_bind_text(handle, index, "", 0, nil) }
                    return sqlite3_bind_text(handle, index, base, Int32(text.count), csqlite_transient())
                }
            }
            if bound == nil { sqlite3_bind_text(handle, index, value, -1, csqlite_transient()) }
        } else {
            sqlite3_bind_null(handle, index)
        }
        return self
    }

    @discardableResult
    func bind(_ index: Int32, blob: [UInt8]) -> Self {
        _ = blob.withUnsafeBytes { bytes in
            // A zero-length blob with a nil pointer would bind NULL; the column is NOT NULL.
            bytes.isEmpty
                ? sqlite3_bind_zeroblob(handle, index, 0)
                : sqlite3_bind_blob(handle, index, bytes.baseAddress, Int32(bytes.count), csqlite_transient())
        }
        return self
    }

    /// Steps once: true while a row is ready.
    func step() throws(OutboxError) -> Bool {
        switch sqlite3_step(handle) {
        case SQLITE_ROW: return true
        case SQLITE_DONE: return false
        case let status:
            let message = database.lastError
            sqlite3_reset(handle)
            let kind: OutboxError.Kind = status & 0xff == SQLITE_BUSY ? .unavailable : .database
            throw OutboxError(kind, message)
        }
    }

    /// Runs a statement that returns no rows.
    func run() throws(OutboxError) {
        while try step() {}
    }

    func isNull(_ column: Int32) -> Bool { sqlite3_column_type(handle, column) == SQLITE_NULL }

    func int64(_ column: Int32) -> Int64 { sqlite3_column_int64(handle, column) }

    func int(_ column: Int32) -> Int { Int(sqlite3_column_int64(handle, column)) }

    func optionalInt64(_ column: Int32) -> Int64? { isNull(column) ? nil : int64(column) }

    func double(_ column: Int32) -> Double { sqlite3_column_double(handle, column) }

    func string(_ column: Int32) -> String? {
        guard let text = sqlite3_column_text(handle, column) else { return nil }
        return String(cString: text)
    }

    func blob(_ column: Int32) -> [UInt8] {
        let count = Int(sqlite3_column_bytes(handle, column))
        guard count > 0, let base = sqlite3_column_blob(handle, column) else { return [] }
        return Array(UnsafeRawBufferPointer(start: base, count: count))
    }
}

/// A thread of its own for one SQLite connection: SQLite's calls block (on the disk, on
/// another process's lock), so they never run on an event loop or the concurrency pool.
/// Jobs run one at a time, in the order they were given.
final class SQLiteThread: @unchecked Sendable {
    // `jobs`, `closed`, `ended` and `closers` are guarded by `condition`; `database` is
    // touched only on the thread.
    private let condition = NSCondition()
    private var jobs: [(SQLiteDatabase?) -> Void] = []
    private var closed = false
    /// The thread has closed its database (or never opened one) and returned.
    private var ended = false
    /// Those waiting in ``close()``.
    private var closers: [CheckedContinuation<Void, Never>] = []

    /// Opens the database on a new thread.
    init(named name: String = "sluice-sqlite", open: @escaping @Sendable () throws(OutboxError) -> SQLiteDatabase)
        async throws(OutboxError)
    {
        let opened: Result<Void, OutboxError> = await withCheckedContinuation { continuation in
            let thread = Thread { [self] in
                // Named for top, perf and gdb (Foundation's name does not reach the OS thread).
                nameCurrentThread(name)
                let database: SQLiteDatabase
                do {
                    database = try open()
                } catch {
                    continuation.resume(returning: .failure(error as! OutboxError))
                    end()
                    return
                }
                continuation.resume(returning: .success(()))
                run(database)
            }
            thread.start()
        }
        try opened.get()
    }

    /// Runs `job` on the thread and returns what it returns.
    func run<Value: Sendable>(_ job: @escaping (SQLiteDatabase) throws(OutboxError) -> Value)
        async throws(OutboxError) -> Value
    {
        let result: Result<Value, OutboxError> = await withCheckedContinuation { continuation in
            let accepted = submit { database in
                guard let database else {
                    continuation.resume(returning: .failure(OutboxError(.unavailable, "the outbox is closed")))
                    return
                }
                do throws(OutboxError) {
                    continuation.resume(returning: .success(try job(database)))
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
            if !accepted {
                continuation.resume(returning: .failure(OutboxError(.unavailable, "the outbox is closed")))
            }
        }
        return try result.get()
    }

    /// Gives `job` to the thread without waiting for it; it gets nil once the thread has
    /// closed its database. Returns false, not running `job`, when the thread is closed.
    @discardableResult
    func post(_ job: @escaping (SQLiteDatabase?) -> Void) -> Bool { submit(job) }

    /// Lets the thread finish its queue, close the database and end; returns once it has.
    /// (Returning when the queue was done, before the database closed, let a command exit
    /// with the connection open: its WAL stayed beside the database, uncopied, and a copy of
    /// the database file alone missed what the WAL held.)
    func close() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            condition.lock()
            if ended {
                condition.unlock()
                continuation.resume()
                return
            }
            closers.append(continuation)
            closed = true
            condition.signal()
            condition.unlock()
        }
    }

    private func submit(_ job: @escaping (SQLiteDatabase?) -> Void) -> Bool {
        condition.lock()
        defer { condition.unlock() }
        guard !closed else { return false }
        jobs.append(job)
        condition.signal()
        return true
    }

    /// Marks the thread ended and lets everyone waiting in ``close()`` go on.
    private func end() {
        condition.lock()
        closed = true
        ended = true
        let waiting = closers
        closers = []
        condition.unlock()
        for closer in waiting { closer.resume() }
    }

    private func run(_ database: SQLiteDatabase) {
        var database: SQLiteDatabase? = database
        while true {
            condition.lock()
            while jobs.isEmpty, !closed { condition.wait() }
            let batch = jobs
            jobs = []
            let finished = closed
            condition.unlock()
            for job in batch {
                job(database)
                database?.resetActiveStatements()
            }
            if finished && batch.isEmpty {
                // Closed here, not when the last reference goes: the caller of `init` holds one
                // until its closure returns, after ``close()`` would have returned.
                database?.close()
                database = nil
                end()
                return
            }
        }
    }
}
