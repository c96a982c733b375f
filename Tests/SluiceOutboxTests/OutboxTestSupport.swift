import Foundation
import Sluice
import SluiceMIME
@testable import SluiceOutbox
import SluiceTestSupport
import SluiceTransport
import Testing

/// A clock a test moves by hand.
final class ManualClock: OutboxClock, @unchecked Sendable {
    private let lock = NSLock()
    private var current: Date

    init(_ start: Date = Date(timeIntervalSince1970: 1_800_000_000)) { current = start }

    func now() -> Date { lock.withLock { current } }

    func advance(by duration: Duration) {
        lock.withLock { current = current.addingTimeInterval(Double(duration.components.seconds)) }
    }
}

/// Closes every outbox a test opened through ``openOutbox(_:clock:)`` when the test ends,
/// passed or failed, so that no store's thread, loop or database connection outlives it.
struct ClosesOutboxes: SuiteTrait, TestTrait, TestScoping {
    var isRecursive: Bool { true }

    /// The outboxes the running test has opened.
    @TaskLocal static var opened: Locked<[Outbox]>?

    func provideScope(for test: Test, testCase: Test.Case?, performing function: @Sendable () async throws -> Void)
        async throws {
        guard testCase != nil else { return try await function() }  // the suite: each case has its own scope
        let opened = Locked<[Outbox]>([])
        let outcome: Result<Void, any Error>
        do {
            try await Self.$opened.withValue(opened) { try await function() }
            outcome = .success(())
        } catch {
            outcome = .failure(error)
        }
        for outbox in opened.withLock({ $0 }) { await outbox.close() }
        try outcome.get()
    }
}

extension Trait where Self == ClosesOutboxes {
    /// Closes the outboxes each test opens when it ends.
    static var closesOutboxes: Self { ClosesOutboxes() }
}

/// Opens the outbox at `url`; a test under ``ClosesOutboxes`` has it closed when it ends.
func openOutbox(_ url: String, clock: any OutboxClock = SystemOutboxClock()) async throws -> Outbox {
    let outbox = try await Outbox.open(url, clock: clock)
    ClosesOutboxes.opened?.withLock { $0.append(outbox) }
    return outbox
}

/// The stores every store and worker test runs against.
enum StoreKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case sqlite, postgres
    var testDescription: String { rawValue }
}

/// A fresh outbox of `kind`, initialised: an SQLite file in a temporary directory, or a new
/// database in the test process's PostgreSQL cluster. Nil when PostgreSQL is not installed
/// (outside CI; under CI that is a failure).
func makeOutbox(_ kind: StoreKind, clock: any OutboxClock = SystemOutboxClock(), initialize: Bool = true)
    async throws -> Outbox?
{
    switch kind {
    case .sqlite:
        return try await makeSQLiteOutbox(clock: clock, initialize: initialize).0
    case .postgres:
        guard let cluster = try await PostgresCluster.shared() else { return nil }
        let outbox = try await openOutbox(try await cluster.createDatabase(), clock: clock)
        if initialize { try await outbox.initialize() }
        return outbox
    }
}

/// A fresh PostgreSQL outbox, initialised, and a second session on its database to watch it
/// with. Nil when PostgreSQL is not installed (outside CI; under CI that is a failure).
func makePostgresOutboxAndWatcher() async throws -> (outbox: Outbox, watcher: PostgresStore)? {
    guard let cluster = try await PostgresCluster.shared() else { return nil }
    let url = try await cluster.createDatabase()
    let outbox = try await openOutbox(url)
    try await outbox.initialize()
    return (outbox, try #require(try await openOutbox(url).store as? PostgresStore))
}

/// Runs SQL on the outbox's store directly.
func execute(_ sql: String, on outbox: Outbox) async throws {
    if let store = outbox.store as? SQLiteStore { try await store.execute(sql) }
    if let store = outbox.store as? PostgresStore { try await store.execute(sql) }
}

/// A fresh SQLite outbox in a temporary directory, initialised.
func makeSQLiteOutbox(clock: any OutboxClock = SystemOutboxClock(), initialize: Bool = true) async throws -> (Outbox, String) {
    let path = try makeTestDirectory("sluice-outbox") + "/outbox.db"
    let outbox = try await openOutbox("sqlite:\(path)", clock: clock)
    if initialize { try await outbox.initialize() }
    return (outbox, path)
}

/// A short RFC 5322 message.
func outboxMessage(_ tag: String = "1", to recipients: [String] = ["rcpt@example.org"], key: String? = nil,
                   notBefore: Date? = nil) -> OutboxMessage {
    let text = "From: sender@example.com\r\nTo: \(recipients.joined(separator: ", "))\r\nSubject: \(tag)\r\n"
        + "Message-ID: <\(tag)@example.com>\r\n\r\nbody of \(tag)\r\n"
    return OutboxMessage(sender: "sender@example.com", recipients: recipients, content: Array(text.utf8),
                         idempotencyKey: key, notBefore: notBefore)
}

/// A relay whose answer to each `RCPT` a test decides by address, counting what it saw.
final class ScriptedRelay: Sendable {
    let server: ScriptedSMTPServer
    private let seen: Locked<[String: Int]>

    var port: Int { server.port }

    /// `answer(address, timesSeenBefore)` is the RCPT reply (without CRLF).
    static func start(_ answer: @escaping @Sendable (String, Int) -> String) async throws -> ScriptedRelay {
        let seen = Locked([String: Int]())
        let server = try await ScriptedSMTPServer.start { line in
            let verb = line.split(separator: " ").first.map { String($0).uppercased() } ?? ""
            switch verb {
            case "EHLO": return "250-relay.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
            case "MAIL", "RSET", "NOOP": return "250 ok\r\n"
            case "DATA": return "354 go ahead\r\n"
            case "<END": return "250 2.0.0 queued\r\n"
            case "QUIT": return "221 bye\r\n"
            case "RCPT":
                let address = line.split(separator: "<").last.flatMap { $0.split(separator: ">").first }.map(String.init) ?? ""
                let before = seen.withLock { seen in
                    defer { seen[address, default: 0] += 1 }
                    return seen[address, default: 0]
                }
                return answer(address, before) + "\r\n"
            default: return "502 5.5.2 not scripted\r\n"
            }
        }
        return ScriptedRelay(server: server, seen: seen)
    }

    private init(server: ScriptedSMTPServer, seen: Locked<[String: Int]>) {
        self.server = server
        self.seen = seen
    }

    /// How many times `RCPT TO:<address>` came.
    func rcptCount(_ address: String) -> Int { seen.withLock { $0[address, default: 0] } }

    func shutdown() async { await server.shutdown() }
}

/// A plaintext client for a loopback relay, without in-process retries (the outbox retries).
func relayClient(port: Int) throws -> SMTPClient {
    var configuration = SMTPClient.Configuration(host: "127.0.0.1", port: port, security: .none)
    configuration.retry = .none
    configuration.pool.connectBackoff = Backoff(initial: .milliseconds(10), maximum: .milliseconds(50))
    return try SMTPClient(configuration: configuration)
}

/// Waits until `condition` holds, for at most `limit`. The default is generous: in a CI
/// rehearsal on a slow day, with every suite starting at once on two cores, a worker's first
/// attempt took more than 20 s to be recorded; a worker that never gets there still fails.
func eventually(_ what: String, within limit: Duration = .seconds(60),
                _ condition: @Sendable () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + scaled(limit)
    // The condition is asked once more after the deadline: on a busy machine the sleep can
    // end well past it, and what it waited for may have happened meanwhile.
    while true {
        if try await condition() { return }
        if ContinuousClock.now >= deadline { break }
        try await Task.sleep(for: .milliseconds(20))
    }
    throw OutboxTestTimeout(description: "timed out waiting until \(what)")
}

struct OutboxTestTimeout: Error, CustomStringConvertible {
    let description: String
}
