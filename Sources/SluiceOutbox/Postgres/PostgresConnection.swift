import CLibPQ
import Foundation
import SluiceTransport

/// One libpq connection driven without blocking on an event loop: `uv_poll` on `PQsocket`,
/// queries sent with `PQsendQueryParams` in pipeline mode, results read with
/// `PQconsumeInput`/`PQgetResult` as the socket becomes readable.
///
/// Each ``execute(_:)`` is one pipeline ending in a sync: its statements run in one implicit
/// transaction (all or nothing) and cost one round trip together. Several pipelines may be
/// in flight at once; their results come back in order.
///
/// Every stored property is touched on `loop`'s thread only.
final class PostgresConnection: @unchecked Sendable {
    /// A statement and its parameters.
    struct Statement: Sendable {
        var sql: String
        var parameters: [Parameter?]
        /// Whether the rows come back in PostgreSQL's binary format, in ``Rows/binary``: bytea
        /// as its bytes rather than twice as many hex digits, and integers as big-endian words.
        var binaryResults: Bool

        init(_ sql: String, _ parameters: [Parameter?] = [], binaryResults: Bool = false) {
            self.sql = sql
            self.parameters = parameters
            self.binaryResults = binaryResults
        }
    }

    /// A parameter: text (PostgreSQL converts it to the column's type) or raw bytes (bytea).
    enum Parameter: Sendable {
        case text(String)
        case bytes([UInt8])
    }

    /// One statement's rows, as text (bytea as its `\x` hex form), NULL as nil.
    struct Rows: Sendable {
        var rows: [[String?]]
        /// The rows of a statement with ``Statement/binaryResults``, each value's bytes in
        /// the binary format (``rows`` is then empty).
        var binary: [[[UInt8]?]] = []
        /// Rows changed, for INSERT, UPDATE and DELETE.
        var affected: Int
    }

    let loop: EventLoop
    private var connection: OpaquePointer?
    private var watcher: DescriptorWatcher?
    private var inFlight: [Pipeline] = []
    private var failure: OutboxError?
    /// Called on the loop's thread with each notification's channel.
    private let onNotification: @Sendable (String) -> Void

    private final class Pipeline {
        let statements: Int
        var results: [Rows] = []
        var error: OutboxError?
        let continuation: CheckedContinuation<[Rows], any Error>
        init(statements: Int, continuation: CheckedContinuation<[Rows], any Error>) {
            self.statements = statements
            self.continuation = continuation
        }
    }

    private init(loop: EventLoop, connection: OpaquePointer, onNotification: @escaping @Sendable (String) -> Void) {
        self.loop = loop
        self.connection = connection
        self.onNotification = onNotification
    }

    deinit {
        // Dropped without close(): the watcher (which its handle keeps alive) must stop on
        // the loop before the socket it watches is closed.
        guard connection != nil || watcher != nil else { return }
        let (watcher, connection) = (self.watcher, connection.map(OpaqueConnection.init(pointer:)))
        let finish: @Sendable () -> Void = {
            watcher?.close()
            if let connection { PQfinish(connection.pointer) }
        }
        if loop.inEventLoop || !loop.execute(finish) { finish() }
    }

    /// What the store asks of libpq where the caller's string does not say otherwise. libpq
    /// itself waits for a server that accepts and never answers for ever, and notices a peer
    /// gone silent on an idle connection only after the kernel's two hours: a worker would hang
    /// with its claims while other workers took them over. Keepalives cover an idle
    /// connection; `tcp_user_timeout` covers one with a query sent and not acknowledged (a
    /// host gone, a network cut), which the kernel would otherwise retransmit for about 15
    /// minutes. Neither limits a query the server is working on.
    static func defaultParameters(environment: [String: String] = ProcessInfo.processInfo.environment)
        -> KeyValuePairs<String, String>
    {
        // `PGCONNECT_TIMEOUT` is libpq's own default for the first; a value given here would
        // hide it, so it is left to libpq when set.
        let connectTimeout = environment["PGCONNECT_TIMEOUT"].map { _ in "" } ?? "10"
        return ["connect_timeout": connectTimeout, "keepalives_idle": "30", "keepalives_interval": "10",
                "keepalives_count": "3", "tcp_user_timeout": "60000"]
    }

    /// Opens a connection, blocking: ``defaultParameters(environment:)`` first, then the
    /// caller's string expanded after them, so that whatever it names wins (libpq takes the
    /// last value of a keyword given twice, and ignores an empty one).
    static func open(_ conninfo: String) -> OpaquePointer? {
        let pairs = Array(defaultParameters()) + [(key: "dbname", value: conninfo)]
        let keywords = pairs.map { strdup($0.key) }, values = pairs.map { strdup($0.value) }
        defer { (keywords + values).forEach { free($0) } }
        let keywordPointers = keywords.map { UnsafePointer($0) } + [nil]
        let valuePointers = values.map { UnsafePointer($0) } + [nil]
        return PQconnectdbParams(keywordPointers, valuePointers, 1)
    }

    /// Connects (on a thread of its own: libpq resolves host names and authenticates
    /// blocking), then hands the connection to `loop` in non-blocking pipeline mode.
    static func connect(_ conninfo: String, loop: EventLoop, onNotification: @escaping @Sendable (String) -> Void)
        async throws(OutboxError) -> PostgresConnection
    {
        let opened: Result<OpaqueConnection, OutboxError> = await withCheckedContinuation { continuation in
            let thread = Thread {
                guard let connection = open(conninfo) else {
                    continuation.resume(returning: .failure(OutboxError(.unavailable, "libpq could not allocate a connection")))
                    return
                }
                guard PQstatus(connection) == CONNECTION_OK else {
                    let message = String(cString: PQerrorMessage(connection)).trimmingCharacters(in: .whitespacesAndNewlines)
                    PQfinish(connection)
                    continuation.resume(returning: .failure(OutboxError(.unavailable, "cannot connect to PostgreSQL: \(message)")))
                    return
                }
                continuation.resume(returning: .success(OpaqueConnection(pointer: connection)))
            }
            thread.name = "sluice-pg-connect"
            thread.start()
        }
        let connection = try opened.get()
        let result: Result<PostgresConnection, OutboxError> = await withCheckedContinuation { continuation in
            let accepted = loop.execute {
                let postgres = PostgresConnection(loop: loop, connection: connection.pointer, onNotification: onNotification)
                do throws(OutboxError) {
                    try postgres.start()
                    continuation.resume(returning: .success(postgres))
                } catch {
                    continuation.resume(returning: .failure(error))
                }
            }
            if !accepted {
                PQfinish(connection.pointer)
                continuation.resume(returning: .failure(OutboxError(.unavailable, "the outbox's event loop is shut down")))
            }
        }
        return try result.get()
    }

    /// A PGconn pointer handed from the connecting thread to the loop.
    private struct OpaqueConnection: @unchecked Sendable { let pointer: OpaquePointer }

    private func start() throws(OutboxError) {
        guard let connection else { return }
        guard PQsetnonblocking(connection, 1) == 0, PQenterPipelineMode(connection) == 1 else {
            throw OutboxError(.unavailable, "libpq refused pipeline mode: \(lastError)")
        }
        do {
            watcher = try DescriptorWatcher(loop: loop, descriptor: PQsocket(connection)) { [weak self] events, status in
                self?.ready(events, status: status)
            }
        } catch {
            throw OutboxError(.unavailable, "cannot watch the PostgreSQL socket: \(error)")
        }
        watcher?.watch(.readable)
    }

    /// Runs `statements` as one pipeline (one implicit transaction); returns each one's rows.
    func execute(_ statements: [Statement]) async throws(OutboxError) -> [Rows] {
        do {
            return try await withCheckedThrowingContinuation { continuation in
                let accepted = loop.execute { self.send(statements, continuation) }
                if !accepted { continuation.resume(throwing: OutboxError(.unavailable, "the outbox's event loop is shut down")) }
            }
        } catch let error as OutboxError {
            throw error
        } catch {
            throw OutboxError(.database, "\(error)")
        }
    }

    /// Whether the connection has failed (the store then opens another).
    var isBroken: Bool {
        get async { await withCheckedContinuation { continuation in
            if !loop.execute({ continuation.resume(returning: self.failure != nil) }) { continuation.resume(returning: true) }
        } }
    }

    /// Closes the connection; what is in flight fails.
    func close() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let accepted = loop.execute {
                self.fail(OutboxError(.unavailable, "the outbox is closed"))
                continuation.resume()
            }
            if !accepted { continuation.resume() }
        }
    }

    // MARK: On the loop

    private func send(_ statements: [Statement], _ continuation: CheckedContinuation<[Rows], any Error>) {
        guard let connection, failure == nil else {
            continuation.resume(throwing: failure ?? OutboxError(.unavailable, "the PostgreSQL connection is closed"))
            return
        }
        for statement in statements {
            guard Self.send(statement, on: connection) else {
                continuation.resume(throwing: OutboxError(.unavailable, "cannot send to PostgreSQL: \(lastError)"))
                fail(OutboxError(.unavailable, "the PostgreSQL connection failed: \(lastError)"))
                return
            }
        }
        guard PQpipelineSync(connection) == 1 else {
            continuation.resume(throwing: OutboxError(.unavailable, "cannot send to PostgreSQL: \(lastError)"))
            fail(OutboxError(.unavailable, "the PostgreSQL connection failed: \(lastError)"))
            return
        }
        inFlight.append(Pipeline(statements: statements.count, continuation: continuation))
        flush()
    }

    private static func send(_ statement: Statement, on connection: OpaquePointer) -> Bool {
        // Every parameter's bytes in one buffer (text NUL-terminated, bytes as they are), and
        // a pointer into it for each: one allocation however many parameters (a batch of
        // contents has thousands).
        let count = statement.parameters.count
        var storage: [UInt8] = []
        var offsets = [Int](repeating: -1, count: count)
        var lengths = [Int32](repeating: 0, count: count)
        var formats = [Int32](repeating: 0, count: count)
        for (index, parameter) in statement.parameters.enumerated() {
            switch parameter {
            case .text(let text)?:
                offsets[index] = storage.count
                storage.append(contentsOf: text.utf8)
                storage.append(0)
            case .bytes(let bytes)?:
                offsets[index] = storage.count
                storage.append(contentsOf: bytes)
                lengths[index] = Int32(bytes.count)
                formats[index] = 1
            case nil:
                break
            }
        }
        if storage.isEmpty { storage.append(0) }
        return storage.withUnsafeBufferPointer { buffer in
            buffer.baseAddress!.withMemoryRebound(to: CChar.self, capacity: buffer.count) { base in
                let values: [UnsafePointer<CChar>?] = offsets.map { $0 < 0 ? nil : base + $0 }
                return PQsendQueryParams(connection, statement.sql, Int32(count), nil, values, lengths, formats,
                                         statement.binaryResults ? 1 : 0) == 1
            }
        }
    }

    private func flush() {
        guard let connection else { return }
        switch PQflush(connection) {
        case 0: watcher?.watch(.readable)
        case 1: watcher?.watch([.readable, .writable])
        default: fail(OutboxError(.unavailable, "the PostgreSQL connection failed: \(lastError)"))
        }
    }

    private func ready(_ events: DescriptorWatcher.Events, status: Int32) {
        guard let connection, status >= 0 else {
            fail(OutboxError(.unavailable, "the PostgreSQL connection failed"))
            return
        }
        if events.contains(.writable) { flush() }
        guard events.contains(.readable) else { return }
        guard PQconsumeInput(connection) == 1 else {
            fail(OutboxError(.unavailable, "the PostgreSQL connection failed: \(lastError)"))
            return
        }
        readResults(connection)
        while let notification = PQnotifies(connection) {
            onNotification(String(cString: notification.pointee.relname))
            PQfreemem(notification)
        }
    }

    private func readResults(_ connection: OpaquePointer) {
        while !inFlight.isEmpty, PQisBusy(connection) == 0 {
            let pipeline = inFlight[0]
            // One result (or none) per statement, each followed by a NULL; then the sync.
            guard let result = PQgetResult(connection) else { continue }
            defer { PQclear(result) }
            switch PQresultStatus(result) {
            case PGRES_PIPELINE_SYNC:
                inFlight.removeFirst()
                if let error = pipeline.error {
                    pipeline.continuation.resume(throwing: error)
                } else {
                    pipeline.continuation.resume(returning: pipeline.results)
                }
            case PGRES_TUPLES_OK, PGRES_COMMAND_OK:
                pipeline.results.append(Self.rows(of: result))
            case PGRES_PIPELINE_ABORTED:
                break
            default:
                if pipeline.error == nil { pipeline.error = Self.error(of: result) }
            }
        }
    }

    private static func rows(of result: OpaquePointer) -> Rows {
        let rowCount = Int(PQntuples(result))
        let columns = PQnfields(result)
        let affected = Int(String(cString: PQcmdTuples(result))) ?? 0
        if rowCount > 0, PQfformat(result, 0) == 1 {
            var binary: [[[UInt8]?]] = []
            binary.reserveCapacity(rowCount)
            for row in 0..<Int32(rowCount) {
                var values: [[UInt8]?] = []
                values.reserveCapacity(Int(columns))
                for column in 0..<columns {
                    guard PQgetisnull(result, row, column) == 0, let value = PQgetvalue(result, row, column) else {
                        values.append(nil)
                        continue
                    }
                    let length = Int(PQgetlength(result, row, column))
                    values.append(value.withMemoryRebound(to: UInt8.self, capacity: length) {
                        Array(UnsafeBufferPointer(start: $0, count: length))
                    })
                }
                binary.append(values)
            }
            return Rows(rows: [], binary: binary, affected: affected)
        }
        var rows: [[String?]] = []
        rows.reserveCapacity(rowCount)
        for row in 0..<Int32(rowCount) {
            var values: [String?] = []
            values.reserveCapacity(Int(columns))
            for column in 0..<columns {
                values.append(PQgetisnull(result, row, column) == 1 ? nil : String(cString: PQgetvalue(result, row, column)))
            }
            rows.append(values)
        }
        return Rows(rows: rows, affected: affected)
    }

    private static func error(of result: OpaquePointer) -> OutboxError {
        let message = String(cString: PQresultErrorMessage(result)).trimmingCharacters(in: .whitespacesAndNewlines)
        let state = PQresultErrorField(result, Int32(UInt8(ascii: "C"))).map { String(cString: $0) } ?? ""
        // P0001: raised by the schema's own functions (a schema too new); 22xxx/23xxx: bad data.
        let kind: OutboxError.Kind = switch state.prefix(2) {
        case "08", "57": .unavailable
        case "22", "23": .invalidInput
        default: state == "P0001" && message.contains("newer than") ? .schemaTooNew : .database
        }
        return OutboxError(kind, message)
    }

    private var lastError: String {
        connection.map { String(cString: PQerrorMessage($0)).trimmingCharacters(in: .whitespacesAndNewlines) } ?? "closed"
    }

    private func fail(_ error: OutboxError) {
        if failure == nil { failure = error }
        let pipelines = inFlight
        inFlight = []
        for pipeline in pipelines { pipeline.continuation.resume(throwing: error) }
        watcher?.close()
        watcher = nil
        if let connection {
            PQfinish(connection)
            self.connection = nil
        }
    }
}
