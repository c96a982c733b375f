import Foundation
import Sluice
@testable import SluiceOutbox
import SluiceSink
import SluiceTestSupport
import Testing

/// `sluice outbox` and `sluice worker`, run as a user runs them.
@Suite(.closesOutboxes) struct OutboxCommandTests {
    /// Runs `sluice ARGS` on a thread of its own.
    static func sluice(_ arguments: [String], input: String? = nil, in directory: String? = nil) async throws
        -> (status: Int32, output: String, error: String)?
    {
        guard let command = sluiceCommand() else { return nil }
        return try await offThread { try run(command, arguments, input: input, in: directory) }
    }

    static func temporaryDirectory() throws -> String {
        try makeTestDirectory("sluice-cli")
    }

    struct StatusJSON: Decodable {
        var recipients: [String: Int]
        var messages: [String: Int]
        var deliveredLastMinute: Int
    }

    struct RecordJSON: Decodable {
        struct Recipient: Decodable {
            var address: String
            var state: String
            var code: Int?
            var enhancedCode: String?
            var reply: String?
            var attempts: Int
            var unknownOutcomes: Int
        }
        var id: Int64
        var messageID: String?
        var idempotencyKey: String?
        var recipients: [Recipient]
    }

    @Test func enqueueInspectRetryCancelAndPurgeFromTheShell() async throws {
        let directory = try Self.temporaryDirectory()
        let url = "sqlite:\(directory)/o.db"
        guard let before = try await Self.sluice(["outbox", "status", "--outbox", url]) else { return }
        #expect(before.status == 69)
        #expect(before.error.contains("sluice outbox init"), "\(before.error)")
        #expect(try await Self.sluice(["outbox", "init", "--outbox", url])?.output.contains("created at schema version 2") == true)
        #expect(try await Self.sluice(["outbox", "init", "--outbox", url])?.output.contains("already at schema version 2") == true)

        let eml = "\(directory)/m.eml"
        try Data("From: a@example.com\r\nTo: b@example.org\r\nBcc: hidden@example.org\r\nSubject: hi\r\nMessage-ID: <m1@example.com>\r\n\r\nhello\r\n".utf8)
            .write(to: URL(fileURLWithPath: eml))
        let fromFile = try #require(try await Self.sluice(["outbox", "enqueue", "--outbox", url, "--eml", eml]))
        #expect(fromFile.status == 0, "\(fromFile.error)")
        #expect(fromFile.output == "1\n")
        let lines = """
            {"from": "a@example.com", "to": ["c@example.org", "d@example.org"], "raw": "From: a@example.com\\r\\nSubject: s\\r\\n\\r\\nbody\\r\\n", "idempotencyKey": "k1"}

            {"from": "", "to": ["e@example.org"], "eml": "\(eml)", "notBefore": "2030-01-01T00:00:00Z"}
            {"from": "a@example.com", "to": ["f@example.org"], "raw": "From: a@example.com\\r\\n\\r\\nsame key\\r\\n", "idempotencyKey": "k1"}
            """
        let fromInput = try #require(try await Self.sluice(["outbox", "enqueue", "--outbox", url], input: lines))
        #expect(fromInput.status == 0, "\(fromInput.error)")
        #expect(fromInput.output == "2\n3\n2\n")  // the repeated key returns the first id

        // Bad input: a clear error naming the line, exit 64, and nothing written.
        let bad: [(String, String)] = [
            ("{\"from\": \"a@example.com\", \"to\": [\"ok@example.org\"], \"raw\": \"From: a@example.com\\r\\n\\r\\nx\\r\\n\"}\n{\"from\": \"a@example.com\", \"to\": [\"not an address\"], \"raw\": \"x\"}",
             "line 2: invalid address"),
            ("{\"from\": \"a@example.com\"}", "line 1: not a message object"),
            ("{\"from\": \"a@example.com\", \"to\": [\"x@example.org\"], \"raw\": \"no header here\\r\\n\"}", "line 1: the message is malformed"),
            ("{\"from\": \"a@example.com\", \"to\": [\"x@example.org\"], \"eml\": \"/nonexistent.eml\"}", "line 1: cannot read"),
            ("{\"from\": \"a@example.com\", \"to\": [\"x@example.org\"], \"raw\": \"From: a@example.com\\r\\n\\r\\nx\\r\\n\", \"notBefore\": \"tomorrow\"}", "RFC 3339"),
        ]
        for (input, words) in bad {
            let run = try #require(try await Self.sluice(["outbox", "enqueue", "--outbox", url], input: input))
            #expect(run.status == 64)
            #expect(run.error.contains(words), "\(run.error)")
            #expect(run.error.contains("nothing was enqueued"), "\(run.error)")
            #expect(run.output.isEmpty)
        }
        let big = try #require(try await Self.sluice(["outbox", "enqueue", "--outbox", url, "--eml", eml, "--max-size", "50"]))
        #expect(big.status == 64 && big.error.contains("over the limit of 50"), "\(big.error)")

        let status = try #require(try await Self.sluice(["outbox", "status", "--json", "--outbox", url]))
        let counts = try JSONDecoder().decode(StatusJSON.self, from: Data(status.output.utf8))
        // b and hidden (its Bcc: the envelope only), c, d, and e (scheduled, queued all the same).
        #expect(counts.recipients["queued"] == 5)
        #expect(counts.recipients.keys.sorted() == RecipientState.allCases.map(\.rawValue).sorted())
        #expect(counts.messages["scheduled"] == 1)

        let shown = try #require(try await Self.sluice(["outbox", "show", "1", "--json", "--outbox", url]))
        let record = try JSONDecoder().decode(RecordJSON.self, from: Data(shown.output.utf8))
        #expect(record.messageID == "<m1@example.com>")
        #expect(record.recipients.map(\.address) == ["b@example.org", "hidden@example.org"])
        let content = try #require(try await openOutbox(url).store.content(id: 1))
        #expect(!String(decoding: content, as: UTF8.self).contains("Bcc"))

        #expect(try await Self.sluice(["outbox", "cancel", "2", "--outbox", url])?.output == "2 recipients cancelled\n")
        let cancelled = try #require(try await Self.sluice(["outbox", "list", "--state", "cancelled", "--json", "--outbox", url]))
        #expect(try cancelled.output.split(separator: "\n").map {
            try JSONDecoder().decode(RecordJSON.self, from: Data($0.utf8)).id
        } == [2])
        #expect(try await Self.sluice(["outbox", "retry", "--state", "cancelled", "--outbox", url])?.output == "2 recipients queued again\n")
        let missing = try #require(try await Self.sluice(["outbox", "show", "99", "--outbox", url]))
        #expect(missing.status == 64 && missing.error.contains("no message has id 99"))
        let wrongState = try #require(try await Self.sluice(["outbox", "list", "--state", "sent", "--outbox", url]))
        #expect(wrongState.status == 64 && wrongState.error.contains("not a state"))
        #expect(try await Self.sluice(["outbox", "purge", "--older-than", "1d", "--outbox", url])?.output == "0 messages purged\n")
        let badAge = try #require(try await Self.sluice(["outbox", "purge", "--older-than", "soon", "--outbox", url]))
        #expect(badAge.status == 64)
    }

    @Test func aWrongURLAnUnreachableStoreAndANewerSchemaAreRefusedClearly() async throws {
        let directory = try Self.temporaryDirectory()
        guard let wrong = try await Self.sluice(["outbox", "status", "--outbox", "mysql://db/x"]) else { return }
        #expect(wrong.status == 64 && wrong.error.contains("not a store Sluice knows"), "\(wrong.error)")
        let unreachable = try #require(try await Self.sluice(["outbox", "init", "--outbox", "sqlite:\(directory)/no/such/dir/o.db"]))
        #expect(unreachable.status == 69 && unreachable.error.contains("cannot open"), "\(unreachable.error)")

        let url = "sqlite:\(directory)/o.db"
        let outbox = try await openOutbox(url)
        try await outbox.initialize()
        try await (outbox.store as! SQLiteStore).execute("UPDATE sluice_schema SET version = 7")
        await outbox.close()
        for arguments in [["outbox", "init"], ["outbox", "status"], ["worker", "--server", "127.0.0.1:1", "--security", "none"],
                          ["outbox", "enqueue"]] {
            let run = try #require(try await Self.sluice(arguments + ["--outbox", url]))
            #expect(run.status == 69, "\(arguments)")
            #expect(run.error.contains("schema version 7, newer than this Sluice knows"), "\(run.error)")
        }
        // From the environment too.
        guard let command = sluiceCommand() else { return }
        let fromEnvironment = try await offThread {
            try run("/usr/bin/env", ["SLUICE_OUTBOX=\(url)", command, "outbox", "status"])
        }
        #expect(fromEnvironment.status == 69 && fromEnvironment.error.contains("schema version 7"))

        // enqueue says so before it reads its input: a bad line is not what it reports.
        let bare = "sqlite:\(directory)/bare.db"
        let lines = #"{"from": "a@example.com", "to": ["b@example.org"], "raw": "From: a@example.com\r\nSubject: x\r\n\r\nhi\r\n"}"# + "\nnot json\n"
        let uninitialised = try #require(try await Self.sluice(["outbox", "enqueue", "--outbox", bare], input: lines))
        #expect(uninitialised.status == 69, "\(uninitialised.error)")
        #expect(uninitialised.error.contains("run `sluice outbox init` first; nothing was enqueued"), "\(uninitialised.error)")
    }

    @Test func aLargeInputIsCheckedInHalvesAndTheFirstBadLineIsTheOneNamed() async throws {
        // Over 4 MB, the two halves of the input are checked at once; the error still names
        // the first bad line, counted over the whole input (blank lines too), and nothing is
        // written.
        guard sluiceCommand() != nil else { return }
        let directory = try Self.temporaryDirectory()
        let url = "sqlite:\(directory)/o.db"
        #expect(try await Self.sluice(["outbox", "init", "--outbox", url])?.status == 0)
        let body = String(repeating: "the quick brown fox jumps over the lazy dog\\r\\n", count: 45)
        func input(badAt bad: Set<Int>) -> String {
            (1...5_000).map { number in
                if number == 10 { return "\n" }
                let to = bad.contains(number) ? "not an address" : "r\(number)@example.org"
                return "{\"from\": \"a@example.com\", \"to\": [\"\(to)\"], \"raw\": \"From: a@example.com\\r\\n\\r\\n\(body)\"}\n"
            }.joined()
        }
        #expect(input(badAt: []).utf8.count > 8 << 20)
        for (bad, named) in [([4_500], "line 4500:"), ([1_200, 4_500], "line 1200:"), ([2_499, 2_501], "line 2499:"),
                             ([2_501], "line 2501:")] {
            let run = try #require(try await Self.sluice(["outbox", "enqueue", "--outbox", url], input: input(badAt: Set(bad))))
            #expect(run.status == 64 && run.error.contains("\(named) invalid address"), "\(bad): \(run.error)")
            #expect(run.error.contains("nothing was enqueued") && run.output.isEmpty, "\(run.error)")
        }
        let good = try #require(try await Self.sluice(["outbox", "enqueue", "--outbox", url], input: input(badAt: [])))
        #expect(good.status == 0, "\(good.error)")
        #expect(good.output.split(separator: "\n").count == 4_999)
    }

    /// `outbox enqueue` checks every line before it writes one, so it reads its input twice;
    /// it keeps the input on disk and holds one batch of messages, not the whole input. Held
    /// in memory, 100,000 lines took 351 MB. Here 10,000 lines of 2 KB may not raise the peak
    /// of 1,000 (one batch) by more than 16 MiB; the old code raised it by about 60.
    @Test func enqueueFromStandardInputHoldsABatchNotTheWholeInput() async throws {
        guard let sluice = sluiceCommand() else { return }
        let directory = try Self.temporaryDirectory()
        let url = "sqlite:\(directory)/o.db"
        #expect(try await Self.sluice(["outbox", "init", "--outbox", url])?.status == 0)
        let body = String(repeating: "the quick brown fox jumps over the lazy dog\\r\\n", count: 45)  // JSON's escapes
        func enqueue(_ count: Int) async throws -> (status: Int32, ids: [Int64], error: String, peak: Int) {
            let input = (0..<count).map {
                "{\"from\": \"a@example.com\", \"to\": [\"r\($0)@example.org\"], \"raw\": \"From: a@example.com\\r\\nSubject: \($0)\\r\\n\\r\\n\(body)\"}\n"
            }.joined()
            let command = memoryMeasuredCommand([sluice, "outbox", "enqueue", "--outbox", url])
            let child = try ChildProcess(command[0], Array(command.dropFirst()))
            let peak = child.peakResidentBytesSampler()
            Thread {
                child.writeInput(input.utf8)
                child.closeInput()
            }.start()
            let (output, error) = await child.outputAndError()
            let status = await child.exitStatus()
            let ids = output.split(separator: UInt8(ascii: "\n")).compactMap { Int64(String(decoding: $0, as: UTF8.self)) }
            return (status, ids, String(decoding: error, as: UTF8.self), try #require(await peak()))
        }
        let batch = try await enqueue(1_000)
        let many = try await enqueue(10_000)
        #expect(batch.status == 0, "\(batch.error)")
        #expect(many.status == 0, "\(many.error)")
        // One id a line, in the input's order, though each batch is written while the next is read.
        #expect(many.ids == Array(1_001...11_000))
        let added = many.peak - batch.peak
        #expect(added < 16 << 20, "the peak went from \(batch.peak >> 20) MiB for 1,000 lines to \(many.peak >> 20) MiB for 10,000")
        let outbox = try await openOutbox(url)
        #expect(try await outbox.status().recipients[.queued] == 11_000)
        await outbox.close()
    }

    @Test func theWorkerDrainsTheOutboxAndExitsWhenIdle() async throws {
        let directory = try Self.temporaryDirectory()
        let url = "sqlite:\(directory)/o.db"
        let outbox = try await openOutbox(url)
        try await outbox.initialize()
        _ = try await outbox.enqueue(contentsOf: (0..<300).map { outboxMessage("w\($0)", to: ["r\($0)@example.org"]) })
        let sink = try await startSink { $0.faults.rejectRecipients = .everyNth(10) }
        guard let run = try await Self.sluice([
            "worker", "--outbox", url, "--server", "127.0.0.1:\(sink.localAddress.port)", "--security", "none",
            "--exit-when-idle", "--batch", "50",
        ]) else { return }
        #expect(run.status == 0, "\(run.error)")
        #expect(run.error.contains("recipients delivered 270, deferred 0, failed 30"), "\(run.error)")
        let status = try await outbox.status()
        #expect(status.recipients[.delivered] == 270)
        #expect(status.recipients[.failed] == 30)
        #expect(sink.statistics.messages == 270)
        // The sink's refusals are 550 5.1.1: hard bounces, each on the suppression list now.
        #expect(run.error.contains("added to the suppression list 30"), "\(run.error)")
        let failed = try await outbox.list(state: .failed, limit: 100)
        #expect(failed.count == 30 && failed.allSatisfy { $0.recipients.first?.bounceClass == .invalidRecipient })
        let listed = try #require(try await Self.sluice(["suppression", "list", "--json", "--outbox", url]))
        let entries = listed.output.split(separator: "\n")
        #expect(entries.count == 30 && entries.allSatisfy { $0.contains("\"reason\":\"invalid-recipient\"") }, "\(listed.output)")
        await sink.shutdown()
        await outbox.close()
    }

    /// `sluice worker` runs its client and worker as a swift-service-lifecycle group: SIGTERM
    /// in the middle of a drain stops the claiming, finishes and records what is in flight,
    /// and exits 0 with nothing left leased and nothing delivered unrecorded.
    @Test func theWorkerStopsOnSIGTERMWithEverythingInFlightRecorded() async throws {
        guard let command = sluiceCommand() else { return }
        let directory = try Self.temporaryDirectory()
        let url = "sqlite:\(directory)/o.db"
        let outbox = try await openOutbox(url)
        try await outbox.initialize()
        _ = try await outbox.enqueue(contentsOf: (0..<1_000).map { outboxMessage("t\($0)", to: ["r\($0)@example.org"]) })
        // One connection, each batch of replies held: a drain of 1,000 takes 25 round trips
        // of 200 ms (stretched under the sanitizers, as the worker is slowed too), so SIGTERM
        // lands in it. With 400 and 50 ms, under AddressSanitizer the drain ended first.
        let sink = try await startSink { $0.replyDelay = .fixed(scaled(.milliseconds(200))) }
        let worker = try ChildProcess(command, [
            "worker", "--outbox", url, "--server", "127.0.0.1:\(sink.localAddress.port)", "--security", "none",
            "--batch", "20", "--concurrency", "40", "--connections", "1",
        ])
        try await eventually("the sink took a first batch", within: .seconds(30)) { sink.statistics.messages >= 20 }
        #expect(await worker.stopped(grace: scaled(.seconds(20))) == 0, "it stops on SIGTERM, not on SIGKILL")
        let (_, error) = await worker.outputAndError()
        let stderr = String(decoding: error, as: UTF8.self)
        #expect(stderr.contains("sluice worker: claimed"), "its summary: \(stderr)")
        let status = try await outbox.status()
        #expect(status.recipients[.leased] ?? 0 == 0, "nothing is left leased: \(status.recipients)")
        let delivered = status.recipients[.delivered] ?? 0
        #expect(delivered == sink.statistics.messages, "every message the sink took is recorded delivered")
        #expect(delivered < 1_000, "it stopped before the end: \(delivered)")
        #expect(sink.statistics.quits >= 1, "the client said QUIT")
        await sink.shutdown()
        await outbox.close()
    }

    @Test func theSuppressionListFromTheShell() async throws {
        let directory = try Self.temporaryDirectory()
        let url = "sqlite:\(directory)/o.db"
        guard let initialized = try await Self.sluice(["outbox", "init", "--outbox", url]) else { return }
        #expect(initialized.status == 0)
        let added = try #require(try await Self.sluice([
            "suppression", "add", "A@Example.org", "blocked.example", "--reason", "complaint", "--detail", "FBL",
            "--outbox", url]))
        #expect(added.status == 0 && added.output == "2 entries added or updated\n", "\(added.error)")
        let on = try #require(try await Self.sluice(["suppression", "list", "someone@blocked.example", "--outbox", url]))
        #expect(on.status == 0 && on.output.hasPrefix("blocked.example  complaint  since "), "\(on.output)")
        let off = try #require(try await Self.sluice(["suppression", "list", "b@example.org", "--outbox", url]))
        #expect(off.status == 1 && off.output.isEmpty)

        let csv = "\(directory)/list.csv"
        try "address,reason\nc@example.org,unsubscribed\n".write(toFile: csv, atomically: true, encoding: .utf8)
        let imported = try #require(try await Self.sluice(["suppression", "import", csv, "--outbox", url]))
        #expect(imported.status == 0 && imported.output == "1 entry imported\n", "\(imported.error)")
        let fromInput = try #require(try await Self.sluice(["suppression", "import", "-", "--outbox", url],
                                                          input: "d@example.org\nnot an address\n"))
        #expect(fromInput.status == 64)
        #expect(fromInput.error == "sluice suppression import: line 2: \"not an address\" is not an address or a domain; "
                + "nothing was imported\n", "\(fromInput.error)")

        let exported = try #require(try await Self.sluice(["suppression", "export", "--outbox", url]))
        #expect(exported.output.split(separator: "\r\n").map { $0.split(separator: ",").prefix(2).joined(separator: ",") } == [
            "target,reason", "a@example.org,complaint", "blocked.example,complaint", "c@example.org,unsubscribed",
        ])
        let removed = try #require(try await Self.sluice(["suppression", "remove", "a@example.org", "--outbox", url]))
        #expect(removed.output == "1 entry removed\n")
        let bad = try #require(try await Self.sluice(["suppression", "add", "not an address", "--outbox", url]))
        #expect(bad.status == 64 && bad.error.contains("is not an address or a domain"), "\(bad.error)")
        let reason = try #require(try await Self.sluice(["suppression", "add", "e@example.org", "--reason", "nope", "--outbox", url]))
        #expect(reason.status == 64 && reason.error.contains("is not a suppression reason"), "\(reason.error)")

        // What is on the list is recorded as suppressed when enqueued.
        let outbox = try await openOutbox(url)
        let id = try await outbox.enqueue(outboxMessage("s", to: ["c@example.org", "x@blocked.example", "a@example.org"]))
        let shown = try #require(try await Self.sluice(["outbox", "show", "\(id)", "--outbox", url]))
        #expect(shown.output.contains("c@example.org suppressed") && shown.output.contains("x@blocked.example suppressed")
                && shown.output.contains("a@example.org queued"), "\(shown.output)")
    }
}

extension OutboxCommandTests {
    @Test func postgresFromTheShellWithItsPasswordKeptOffTheCommandLine() async throws {
        guard let cluster = try await PostgresCluster.shared() else { return }
        let conninfo = try await cluster.createDatabase()
        guard let initialized = try await Self.sluice(["outbox", "init", "--outbox", conninfo]) else { return }
        #expect(initialized.status == 0, "\(initialized.error)")
        #expect(initialized.output.contains("created at schema version 2"))
        // Three batches, written two at a time over two connections.
        let count = 2_500
        let input = (0..<count).map { #"{"from": "a@example.com", "to": ["r\#($0)@example.org"], "raw": "From: a@example.com\r\nSubject: \#($0)\r\n\r\nbody\r\n"}"# }
            .joined(separator: "\n")
        let enqueued = try #require(try await Self.sluice(["outbox", "enqueue", "--outbox", conninfo], input: input))
        #expect(enqueued.status == 0, "\(enqueued.error)")
        // Each line's id is that line's message.
        let database = String(conninfo.split(separator: "=").last!)
        let stored = try await cluster.psql(
            "SELECT message_id || ' ' || address FROM sluice_recipients ORDER BY message_id", database: database)
        let printed = enqueued.output.split(separator: "\n").enumerated().map { "\($1) r\($0)@example.org" }
        #expect(Set(stored.split(separator: "\n").map(String.init)) == Set(printed))
        #expect(printed.count == count)

        // A service enqueues inside its own transaction, in SQL.
        let id = try await cluster.psql(
            "BEGIN; SELECT sluice_enqueue('a@example.com', ARRAY['sql@example.org'], convert_to(E'From: a@example.com\\r\\n\\r\\nfrom SQL\\r\\n', 'UTF8'), 'order-17'); COMMIT;",
            database: database)
        #expect(Int(id.trimmingCharacters(in: .whitespacesAndNewlines)) == count + 1)

        let sink = try await startSink()
        let worker = try #require(try await Self.sluice([
            "worker", "--outbox", conninfo, "--server", "127.0.0.1:\(sink.localAddress.port)", "--security", "none",
            "--exit-when-idle",
        ]))
        #expect(worker.status == 0, "\(worker.error)")
        let status = try #require(try await Self.sluice(["outbox", "status", "--json", "--outbox", conninfo]))
        let counts = try JSONDecoder().decode(StatusJSON.self, from: Data(status.output.utf8))
        #expect(counts.recipients["delivered"] == count + 1)
        #expect(sink.statistics.messages == count + 1)
        await sink.shutdown()

        for url in ["postgresql://postgres:secret@localhost/x", "host=/tmp password=secret dbname=x"] {
            let refused = try #require(try await Self.sluice(["outbox", "status", "--outbox", url]))
            #expect(refused.status == 64)
            #expect(refused.error.contains("PGPASSWORD"), "\(refused.error)")
            #expect(!refused.error.contains("secret"))
        }
        let unreachable = try #require(try await Self.sluice(["outbox", "status", "--outbox", "host=/nonexistent port=1 dbname=x"]))
        #expect(unreachable.status == 69)
        #expect(unreachable.error.contains("cannot connect to PostgreSQL"), "\(unreachable.error)")
    }
}
