import CLibPQ
import Foundation
@testable import SluiceOutbox
import SluiceTestSupport
import Synchronization
import Testing

/// How the PostgreSQL store connects, against servers that misbehave. No PostgreSQL server is
/// needed: libpq alone talks to a port that never answers.
@Suite struct PostgresConnectionTests {
    @Test func theStoresDefaultsLeaveLibpqsOwnEnvironmentVariableItsSay() {
        let defaults = Dictionary(uniqueKeysWithValues: PostgresConnection.defaultParameters(environment: [:]).map { ($0.key, $0.value) })
        #expect(defaults["connect_timeout"] == "10")
        #expect(defaults["keepalives_idle"] == "30" && defaults["keepalives_interval"] == "10" && defaults["keepalives_count"] == "3")
        #expect(defaults["tcp_user_timeout"] == "60000", "milliseconds: a query unacknowledged for a minute fails")
        // An empty value is no value to libpq: PGCONNECT_TIMEOUT then applies.
        let withVariable = PostgresConnection.defaultParameters(environment: ["PGCONNECT_TIMEOUT": "3"])
        #expect(withVariable.first { $0.key == "connect_timeout" }?.value == "")
    }

    /// A server that accepts the connection and never answers: libpq, left to itself, waits
    /// for ever, and `sluice outbox` or a worker with it.
    @Test func aServerThatNeverAnswersIsGivenUpOnAfterTheDefaultTimeout() async throws {
        let silent = try SilentPort()
        let opened = try await opening("host=127.0.0.1 port=\(silent.port) user=sluice dbname=sluice", whileOpen: silent)
        let (error, took) = try #require(opened, "no answer after 120 s: the connection waits for ever")
        #expect(error.kind == .unavailable && error.message.contains("timeout expired"), "\(error)")
        #expect(took >= .seconds(9), "the default is 10 s, not less: \(took)")
    }

    /// What libpq was given, read back from the failed connection (a refused port fails at
    /// once): the URL's own values win over the store's defaults, which fill in the rest.
    @Test(arguments: [
        ("postgresql://sluice@127.0.0.1:PORT/sluice?connect_timeout=2&keepalives_idle=7", "2", "7"),
        ("host=127.0.0.1 port=PORT user=sluice dbname=sluice connect_timeout=3", "3", "30"),
        ("postgresql://sluice@127.0.0.1:PORT/sluice", "10", "30"),
    ])
    func theURLsOwnValuesWinOverTheDefaults(url: String, connectTimeout: String, keepalivesIdle: String) throws {
        let refused = try RefusedPort()
        let connection = try #require(PostgresConnection.open(url.replacingOccurrences(of: "PORT", with: "\(refused.port)")))
        defer { PQfinish(connection) }
        #expect(PQstatus(connection) == CONNECTION_BAD)
        var given: [String: String] = [:]
        if let options = PQconninfo(connection) {
            defer { PQconninfoFree(options) }
            var option = options
            while let keyword = option.pointee.keyword {
                if let value = option.pointee.val { given[String(cString: keyword)] = String(cString: value) }
                option += 1
            }
        }
        #expect(given["connect_timeout"] == connectTimeout && given["keepalives_idle"] == keepalivesIdle, "\(given)")
        #expect(given["keepalives_interval"] == "10" && given["keepalives_count"] == "3" && given["user"] == "sluice", "\(given)")
        #expect(given["tcp_user_timeout"] == "60000", "\(given)")
    }

    /// Opens `url`, which must fail, and returns its error and how long it took; nil if it has
    /// not failed after 120 s. `port` is closed before returning, which ends a connection still
    /// waiting on it. Alone, the failure comes at 10 s. Beside the whole suite it has come at
    /// 31 s: libpq gave up at 10 s on its own thread, and the task it resumed then waited 17 s
    /// for one of the concurrency pool's two threads.
    private func opening(_ url: String, whileOpen port: SilentPort) async throws -> (OutboxError, Duration)? {
        let started = ContinuousClock.now
        let result = Mutex<(OutboxError, Duration)?>(nil)
        let task = Task {
            do throws(OutboxError) {
                let outbox = try await Outbox.open(url)
                await outbox.close()
                Issue.record("a port that never answers opened as an outbox")
            } catch {
                result.withLock { $0 = (error, ContinuousClock.now - started) }
            }
        }
        do {
            try await eventually("the connection fails", within: .seconds(120)) { result.withLock { $0 != nil } }
        } catch is OutboxTestTimeout {
            port.close()
            _ = await task.result
            return nil
        }
        port.close()
        return result.withLock { $0 }
    }
}
