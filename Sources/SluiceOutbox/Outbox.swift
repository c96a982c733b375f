public import Foundation
public import Sluice
public import SluiceMIME

/// A durable spool of messages: enqueue here (or in your own database transaction), and an
/// ``OutboxWorker`` delivers them, retries what was deferred, and records every recipient's
/// outcome.
///
/// ```swift
/// let outbox = try await Outbox.open("sqlite:/var/lib/app/outbox.db")
/// try await outbox.initialize()
/// let id = try await outbox.enqueue(message, envelope: envelope, idempotencyKey: "reset-\(user.id)")
/// ```
///
/// Every message is checked before anything is written: a malformed message, a bad address or
/// a message over ``maximumMessageSize`` throws ``OutboxError/Kind/invalidInput`` and adds
/// nothing (a batch is added whole or not at all).
public final class Outbox: Sendable {
    /// Where the messages are kept.
    public let store: any OutboxStore
    /// The largest message accepted, in octets (Postfix's default `message_size_limit`).
    public let maximumMessageSize: Int
    /// The clock every time written comes from.
    public let clock: any OutboxClock

    /// The default store when none is named: an SQLite file in the working directory.
    public static let defaultURL = "sqlite:sluice-outbox.db"

    /// An outbox over `store`.
    public init(store: any OutboxStore, maximumMessageSize: Int = 10_240_000, clock: any OutboxClock = SystemOutboxClock()) {
        self.store = store
        self.maximumMessageSize = maximumMessageSize
        self.clock = clock
    }

    /// Opens the store a URL names: `sqlite:PATH` (`sqlite:///abs/path` too, and
    /// `?synchronous=normal`), or PostgreSQL as libpq names it: `postgresql://…` (or
    /// `postgres://…`), or `key=value` pairs (`host=/run/postgresql dbname=mail`). A
    /// PostgreSQL password comes best from `PGPASSWORD` or `~/.pgpass`, not the URL.
    ///
    /// - Throws: ``OutboxError/Kind/invalidURL`` for a URL of no known store,
    ///   ``OutboxError/Kind/unavailable`` when it cannot be opened.
    public static func open(_ url: String, maximumMessageSize: Int = 10_240_000,
                            clock: any OutboxClock = SystemOutboxClock()) async throws(OutboxError) -> Outbox {
        let store: any OutboxStore
        switch try OutboxURL(url) {
        case .sqlite(let path, let synchronous):
            store = try await SQLiteStore(path: path, synchronous: synchronous)
        case .postgres(let conninfo):
            store = try await PostgresStore(conninfo: conninfo)
        }
        return Outbox(store: store, maximumMessageSize: maximumMessageSize, clock: clock)
    }

    /// Whether `url` carries a PostgreSQL password in clear (`postgresql://user:secret@host`,
    /// `password=secret`). The command line refuses such a URL: other users can read a
    /// process's arguments. `PGPASSWORD` or a `~/.pgpass` file keep it private.
    public static func urlHoldsPassword(_ url: String) -> Bool {
        (try? OutboxURL(url))?.holdsPassword ?? false
    }

    /// Creates or migrates the schema; returns the version it had (0 for none).
    /// - Throws: ``OutboxError/Kind/schemaTooNew`` for a store written by a newer Sluice.
    @discardableResult
    public func initialize() async throws(OutboxError) -> Int { try await store.initialize() }

    /// Closes the store.
    public func close() async { await store.close() }

    // MARK: Enqueueing

    /// Adds one message; returns its id (the first message's, for an idempotency key already
    /// there).
    public func enqueue(_ message: RawMessage, envelope: Envelope, idempotencyKey: String? = nil,
                        notBefore: Date? = nil) async throws(OutboxError) -> Int64 {
        let message = OutboxMessage(
            sender: envelope.from.map { "\($0)" } ?? "", recipients: envelope.recipients.map { "\($0.address)" },
            content: message.bytes, idempotencyKey: idempotencyKey, notBefore: notBefore)
        return try await enqueue(contentsOf: [message])[0].id
    }

    /// Adds one message; returns its id.
    public func enqueue(_ message: OutboxMessage) async throws(OutboxError) -> Int64 {
        try await enqueue(contentsOf: [message])[0].id
    }

    /// Adds messages in one transaction, all or none, after checking every one.
    public func enqueue(contentsOf messages: [OutboxMessage]) async throws(OutboxError) -> [EnqueueResult] {
        var prepared: [PreparedMessage] = []
        prepared.reserveCapacity(messages.count)
        for (index, message) in messages.enumerated() {
            do throws(OutboxError) {
                prepared.append(try check(message))
            } catch {
                let which = messages.count > 1 ? "message \(index + 1): " : ""
                throw OutboxError(error.kind, "\(which)\(error.message); nothing was enqueued")
            }
            // A large batch takes seconds to check: let the pool's other tasks run meanwhile
            // (it has a thread a core, and a caller's server shares them).
            if index % 256 == 255 { await Task.yield() }
        }
        return try await enqueue(checked: prepared)
    }

    /// Adds messages that ``check(_:)`` returned, in one transaction, all or none.
    ///
    /// For callers in this package that check the next batch while this one is written (`sluice
    /// outbox enqueue`). It is not public: a `PreparedMessage` can be built by hand, unchecked.
    ///
    /// With a `gate`, the messages are committed only once the gate returns, and not at all if
    /// it throws. Over PostgreSQL the batch is written meanwhile, so that two outboxes (two
    /// connections) can write two batches at once and still commit them in order.
    package func enqueue(checked prepared: [PreparedMessage],
                         committingAfter gate: (@Sendable () async throws(OutboxError) -> Void)? = nil)
        async throws(OutboxError) -> [EnqueueResult]
    {
        var prepared = prepared
        let now = clock.now()
        try await markSuppressed(&prepared, now: now)
        if let gate {
            if let store = store as? PostgresStore { return try await store.enqueue(prepared, now: now, committingAfter: gate) }
            try await gate()
        }
        return try await store.enqueue(prepared, now: now)
    }

    /// Marks the recipients on the suppression list, so that they are recorded as suppressed
    /// and never sent. (A worker checks again when it claims the message.)
    private func markSuppressed(_ prepared: inout [PreparedMessage], now: Date) async throws(OutboxError) {
        let active = try await store.activeSuppressions(forAddresses: prepared.flatMap(\.message.recipients), now: now)
        guard !active.isEmpty else { return }
        for index in prepared.indices {
            for (position, recipient) in prepared[index].message.recipients.enumerated() where active[recipient] != nil {
                prepared[index].suppressed.insert(position)
            }
        }
    }

    /// Checks a message as ``enqueue(contentsOf:)`` does, writing nothing: its addresses, its
    /// size, its idempotency key and its form.
    /// - Throws: ``OutboxError/Kind/invalidInput`` saying what is wrong.
    @discardableResult
    public func check(_ message: OutboxMessage) throws(OutboxError) -> PreparedMessage {
        guard !message.recipients.isEmpty else { throw OutboxError(.invalidInput, "no recipients") }
        do throws(AddressError) {
            if !message.sender.isEmpty { _ = try EnvelopeAddress(message.sender) }
            for recipient in message.recipients { _ = try EnvelopeAddress(recipient) }
        } catch {
            throw OutboxError(.invalidInput, "\(error)")
        }
        guard message.content.count <= maximumMessageSize else {
            throw OutboxError(.invalidInput, "the message is \(message.content.count) octets, over the limit of \(maximumMessageSize)")
        }
        if let key = message.idempotencyKey, key.isEmpty || key.utf8.count > 512 {
            throw OutboxError(.invalidInput, "an idempotency key must be 1 to 512 octets")
        }
        let raw: RawMessage
        do throws(MessageError) {
            raw = try RawMessage(message.content)
        } catch {
            throw OutboxError(.invalidInput, "the message is malformed: \(error)")
        }
        return PreparedMessage(message: message, messageID: raw.messageID)
    }

    // MARK: Reading and operating

    /// Counts by state, the oldest waiting message and the last minute's deliveries.
    public func status() async throws(OutboxError) -> OutboxStatus { try await store.status(now: clock.now()) }

    /// One message and its recipients; nil when no message has that id.
    public func message(_ id: Int64) async throws(OutboxError) -> OutboxRecord? {
        try await store.message(id: id, now: clock.now())
    }

    /// Messages with a recipient in `state` (all when nil), by id, after `afterID`.
    public func list(state: RecipientState? = nil, after afterID: Int64 = 0, limit: Int = 100)
        async throws(OutboxError) -> [OutboxRecord]
    {
        try await store.list(state: state, afterID: afterID, limit: limit, now: clock.now())
    }

    /// Cancels the message's recipients not yet delivered; returns how many.
    /// A recipient a worker is sending to at this moment may still be delivered: that is
    /// recorded as it happened.
    @discardableResult
    public func cancel(_ id: Int64) async throws(OutboxError) -> Int { try await store.cancel(id: id, now: clock.now()) }

    /// Makes the message's deferred, failed, expired, unknown and cancelled recipients queued
    /// and due now; returns how many.
    @discardableResult
    public func retry(_ id: Int64) async throws(OutboxError) -> Int {
        try await store.retry(id: id, states: Self.retryable, now: clock.now())
    }

    /// Makes every recipient in `state` queued and due now; returns how many.
    @discardableResult
    public func retry(state: RecipientState) async throws(OutboxError) -> Int {
        guard Self.retryable.contains(state) else {
            throw OutboxError(.invalidInput, "recipients that are \(state) cannot be retried")
        }
        return try await store.retry(id: nil, states: [state], now: clock.now())
    }

    // MARK: The suppression list

    /// Adds an address (`user@example.com`) or a whole domain (`example.com`) to the
    /// suppression list, or updates it; nothing is sent to it from now on.
    /// - Parameters:
    ///   - target: An address or a domain.
    ///   - reason: ``Suppression/Reason/manual`` (the default), ``Suppression/Reason/complaint``,
    ///     ``Suppression/Reason/unsubscribed``, or a ``Sluice/BounceClass`` name.
    ///   - detail: Why, in words (the bounce's text, a ticket), kept with the entry.
    ///   - expiresAt: When it lapses; nil for never.
    /// - Throws: ``OutboxError/Kind/invalidInput`` for a target that is neither, or an unknown reason.
    public func suppress(_ target: String, reason: String = Suppression.Reason.manual, detail: String? = nil,
                         expiresAt: Date? = nil) async throws(OutboxError) {
        let entry = try Suppression(target: target, reason: reason, detail: detail, createdAt: clock.now(), expiresAt: expiresAt)
        _ = try await store.suppress([entry])
    }

    /// Adds or updates entries in one transaction; returns how many.
    @discardableResult
    public func suppress(contentsOf entries: [Suppression]) async throws(OutboxError) -> Int {
        try await store.suppress(entries)
    }

    /// Takes addresses or domains off the list; returns how many were on it.
    /// - Throws: ``OutboxError/Kind/invalidInput`` for a target that is neither.
    @discardableResult
    public func unsuppress(_ targets: [String]) async throws(OutboxError) -> Int {
        var normalized: [String] = []
        for target in targets { normalized.append(try Suppression.normalized(target)) }
        return try await store.unsuppress(normalized)
    }

    /// The list, by target, after `after` (lapsed entries too: see ``Suppression/isActive(at:)``).
    public func suppressions(after: String? = nil, limit: Int = 1_000) async throws(OutboxError) -> [Suppression] {
        try await store.suppressions(after: after, limit: limit)
    }

    /// The entry that stops mail to `address` now (its own, else its domain's); nil when none.
    public func suppression(for address: String) async throws(OutboxError) -> Suppression? {
        let normalized = (try? Suppression.normalized(address)) ?? address
        return try await store.activeSuppressions(forAddresses: [normalized], now: clock.now())[normalized]
    }

    /// Adds the entries of a CSV file (``SuppressionCSV``) in one transaction: every line is
    /// checked first, and one that is wrong adds nothing. Returns how many.
    /// - Throws: ``OutboxError/Kind/invalidInput`` naming the line.
    @discardableResult
    public func importSuppressions(csv: String) async throws(OutboxError) -> Int {
        let entries = try SuppressionCSV.parse(csv, now: clock.now())
        return try await store.suppress(entries)
    }

    /// The whole list as CSV (``SuppressionCSV``), read a page at a time.
    public func exportSuppressions() async throws(OutboxError) -> String {
        var text = SuppressionCSV.header
        var after: String?
        while true {
            let page = try await store.suppressions(after: after, limit: 1_000)
            for entry in page { text += SuppressionCSV.line(entry) }
            guard page.count == 1_000, let last = page.last else { return text }
            after = last.target
        }
    }

    /// The states ``retry(_:)`` takes back to queued.
    public static let retryable: Set<RecipientState> = [.deferred, .failed, .expired, .unknown, .cancelled]

    /// Deletes messages that finished more than `age` ago, `batch` at a time so that no
    /// transaction holds the store long; returns how many.
    @discardableResult
    public func purge(olderThan age: Duration, batch: Int = 1_000) async throws(OutboxError) -> Int {
        let before = clock.now().addingTimeInterval(-age.seconds)
        var total = 0
        while true {
            let purged = try await store.purge(finishedBefore: before, limit: batch)
            total += purged
            if purged < batch { return total }
        }
    }
}

/// Where an outbox's times come from: the system's clock, or a test's.
public protocol OutboxClock: Sendable {
    /// Now.
    func now() -> Date
}

/// The system's wall clock.
public struct SystemOutboxClock: OutboxClock {
    /// The system clock.
    public init() {}
    public func now() -> Date { Date() }
}

/// A parsed outbox URL.
enum OutboxURL: Equatable {
    case sqlite(path: String, synchronous: SQLiteStore.Synchronous)
    case postgres(conninfo: String)

    init(_ url: String) throws(OutboxError) {
        let lowered = url.lowercased()
        if lowered.hasPrefix("postgres://") || lowered.hasPrefix("postgresql://") {
            self = .postgres(conninfo: url)
            return
        }
        // libpq's key=value form: `host=/tmp port=5433 dbname=mail`.
        if !lowered.hasPrefix("sqlite"), let equals = url.firstIndex(of: "="),
           url[..<equals].allSatisfy({ $0.isLetter || $0 == "_" }), !url[..<equals].isEmpty {
            self = .postgres(conninfo: url)
            return
        }
        guard let colon = url.firstIndex(of: ":") else {
            throw OutboxError(.invalidURL, "'\(url)' names no store; use sqlite:PATH, postgresql://… or host=… dbname=…")
        }
        let scheme = url[..<colon].lowercased()
        var rest = String(url[url.index(after: colon)...])
        switch scheme {
        case "sqlite", "sqlite3":
            var synchronous = SQLiteStore.Synchronous.full
            if let question = rest.firstIndex(of: "?") {
                for pair in rest[rest.index(after: question)...].split(separator: "&") {
                    let parts = pair.split(separator: "=", maxSplits: 1).map(String.init)
                    guard parts.count == 2, parts[0] == "synchronous",
                          let value = SQLiteStore.Synchronous(rawValue: parts[1].lowercased())
                    else {
                        throw OutboxError(.invalidURL, "unknown SQLite option '\(pair)'; the one option is synchronous=full|normal")
                    }
                    synchronous = value
                }
                rest = String(rest[..<question])
            }
            // sqlite:///abs/path and sqlite://localhost/abs/path as well as sqlite:path.
            if rest.hasPrefix("//") {
                rest.removeFirst(2)
                guard let slash = rest.firstIndex(of: "/") else {
                    throw OutboxError(.invalidURL, "'\(url)' has no path")
                }
                let host = rest[..<slash]
                guard host.isEmpty || host == "localhost" else {
                    throw OutboxError(.invalidURL, "an SQLite outbox is a local file; '\(host)' is a host")
                }
                rest = String(rest[slash...])
            }
            guard !rest.isEmpty else { throw OutboxError(.invalidURL, "'\(url)' has no path") }
            self = .sqlite(path: rest, synchronous: synchronous)
        default:
            throw OutboxError(.invalidURL, "'\(scheme):' is not a store Sluice knows; use sqlite:PATH, postgresql://… or host=… dbname=…")
        }
    }
}

extension OutboxURL {
    /// Whether the URL holds a password in clear (`postgresql://user:secret@host`,
    /// `password=secret`): the command line refuses those, since other users can read a
    /// process's arguments.
    var holdsPassword: Bool {
        guard case .postgres(let conninfo) = self else { return false }
        if conninfo.contains("://") {
            let afterScheme = conninfo[conninfo.range(of: "://")!.upperBound...]
            let authority = afterScheme.prefix { $0 != "/" && $0 != "?" }
            if let at = authority.lastIndex(of: "@"), authority[..<at].contains(":") { return true }
            return conninfo.range(of: "[?&]password=", options: .regularExpression) != nil
        }
        return conninfo.range(of: "(^|\\s)password\\s*=", options: .regularExpression) != nil
    }
}
