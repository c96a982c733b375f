import Foundation
import Sluice
import SluiceOutbox
import SluiceSink
import SluiceTestSupport
import Testing

/// The outbox under load: workers killed outright while they drain an outbox into a faulty
/// sink (nothing is lost, and every duplicate is accounted for), and one very large batch.
/// They load both cores for a while, so `scripts/test.sh` runs them on their own, after the
/// rest of the suite, whose timing tests they would starve.
@Suite(.closesOutboxes) struct OutboxLoadTests {
    /// What the sink received: how many times each (Message-ID, recipient) pair came.
    struct Received {
        private(set) var counts: [String: Int] = [:]
        mutating func add(_ message: StoredMessage) {
            let text = String(decoding: message.content.prefix(2_048), as: UTF8.self)
            guard let start = text.range(of: "Message-ID: ")?.upperBound,
                  let end = text[start...].firstIndex(where: \.isNewline) else { return }
            let messageID = String(text[start..<end])
            for recipient in message.recipients { counts["\(messageID) \(recipient)", default: 0] += 1 }
        }
    }

    static func worker(_ command: String, url: String, port: Int, exitWhenIdle: Bool) throws -> ChildProcess {
        var arguments = ["worker", "--outbox", url, "--server", "127.0.0.1:\(port)", "--security", "none",
                         "--batch", "100", "--concurrency", "400", "--lease", "3s", "--retry-after", "1s",
                         "--retry-max", "2s", "--poll-interval", "200ms"]
        if exitWhenIdle { arguments.append("--exit-when-idle") }
        return try ChildProcess(command, arguments, input: .null, output: .null, error: exitWhenIdle ? .pipe : .null)
    }

    /// SQLite with one worker; PostgreSQL with three, one of them killed and started again.
    @Test(arguments: [(StoreKind.sqlite, 1), (StoreKind.postgres, 3)])
    func aWorkerKilledHalfwayLosesNothingAndItsDuplicatesAreBounded(store kind: StoreKind, workers: Int) async throws {
        guard let command = sluiceCommand() else { return }
        let sink = try await startSink { configuration in
            configuration.store = .memory
            configuration.faults.deferRecipients = .probability(0.05)
            configuration.faults.rejectRecipients = .probability(0.02)
            configuration.faults.dropAfterData = .probability(0.005)
            configuration.faults.seed = 24
        }
        let url: String
        switch kind {
        case .sqlite: url = "sqlite:\(try OutboxCommandTests.temporaryDirectory())/o.db"
        case .postgres:
            guard let cluster = try await PostgresCluster.shared() else { return }
            url = try await cluster.createDatabase()
        }
        let outbox = try await openOutbox(url)
        try await outbox.initialize()
        // PostgreSQL's run is the issue's 100,000; under a sanitizer (every client and server
        // instruction checked) a tenth of that.
        let total = kind == .postgres && ProcessInfo.processInfo.environment["SLUICE_SANITIZER"] == nil ? 100_000 : 10_000
        for start in stride(from: 0, to: total, by: 1_000) {
            _ = try await outbox.enqueue(contentsOf: (start..<start + 1_000).map {
                outboxMessage("c\($0)", to: ["a\($0)@example.org", "b\($0)@example.org"])
            })
        }

        // The first worker is killed (SIGKILL: no goodbye) once half the mail is in the sink;
        // the others go on, and it is started again.
        let first = try Self.worker(command, url: url, port: sink.localAddress.port, exitWhenIdle: false)
        var others: [ChildProcess] = []
        for _ in 1..<workers {
            others.append(try Self.worker(command, url: url, port: sink.localAddress.port, exitWhenIdle: true))
        }
        try await eventually("half the messages reach the sink", within: .seconds(300)) {
            sink.statistics.messages >= total / 2 || !first.isRunning
        }
        // What it held when it died: its leases (the others' are theirs; they are told apart
        // by owner, which names the process).
        kill(first.pid, SIGKILL)
        #expect(await first.exitStatus() == 128 + SIGKILL)
        let held = try await outbox.list(state: .leased, limit: 100_000).filter {
            $0.leaseOwner?.contains(":\(first.pid):") == true
        }
        let heldIDs = Set(held.compactMap(\.messageID))
        #expect(held.count <= 400)

        others.append(try Self.worker(command, url: url, port: sink.localAddress.port, exitWhenIdle: true))
        for worker in others {
            let (_, errorOutput) = await offThread { worker.readOutputAndError() }
            let status = await worker.exitStatus()
            #expect(status == 0, "\(String(decoding: errorOutput, as: UTF8.self))")
        }

        let records = try await outbox.list(limit: 100_000)
        #expect(records.count == total)
        let outboxStatus = try await outbox.status()
        #expect(outboxStatus.pendingRecipients == 0)
        var unknownIDs = Set<String>()
        var delivered = 0
        var failed = 0
        var received = Received()
        for message in sink.messages { received.add(message) }
        let counts = received.counts
        for record in records {
            let messageID = try #require(record.messageID)
            for recipient in record.recipients {
                let times = counts["\(messageID) \(recipient.address)", default: 0]
                if recipient.unknownOutcomes > 0 { unknownIDs.insert(messageID) }
                switch recipient.state {
                case .delivered:
                    delivered += 1
                    // Nothing lost: every recipient recorded delivered is in the sink.
                    #expect(times >= 1, "\(messageID) \(recipient.address) recorded delivered but never received")
                case .failed:
                    failed += 1
                    #expect(recipient.code == 550, "\(recipient)")
                default:
                    Issue.record("\(messageID) \(recipient.address) ended \(recipient.state)")
                }
                // Twice only where a worker died holding it, or no reply said whether it was taken.
                if times > 1 {
                    #expect(heldIDs.contains(messageID) || recipient.unknownOutcomes > 0,
                            "\(messageID) \(recipient.address) received \(times) times")
                }
            }
        }
        #expect(delivered + failed == 2 * total)
        // 2 % of RCPTs are refused for good (more attempts than recipients: deferrals are retried).
        #expect(failed > 2 * total / 100 / 2 && failed < 2 * total * 4 / 100, "\(failed)")
        let duplicates = counts.values.reduce(0) { $0 + max(0, $1 - 1) }
        print("crash (\(kind), \(workers) workers): \(delivered) delivered, \(failed) failed, \(held.count) held by the killed worker, "
              + "\(unknownIDs.count) messages with an unknown outcome, \(duplicates) duplicate deliveries")
        #expect(duplicates <= 2 * (held.count + unknownIDs.count))
        await outbox.close()
        await sink.shutdown()
    }

    @Test(arguments: StoreKind.allCases)
    func aBatchLargerThanOneStatementTakesIsWrittenWhole(store kind: StoreKind) async throws {
        guard let outbox = try await makeOutbox(kind) else { return }
        // PostgreSQL takes at most 65,535 parameters a statement; the contents go two a message.
        let results = try await outbox.enqueue(contentsOf: (0..<33_000).map { outboxMessage("b\($0)") })
        #expect(Set(results.map(\.id)).count == 33_000)
        #expect(try await outbox.status().recipients[.queued] == 33_000)
        let last = try #require(results.last)
        #expect(try await outbox.message(last.id)?.messageID == "<b32999@example.com>")
        #expect(try await outbox.store.content(id: last.id) == outboxMessage("b32999").content)
        await outbox.close()
    }

    /// Two campaigns to one list of 10,000 through a sink told to refuse 3 % of recipients with
    /// 550 5.1.1 and 1 % of messages with 554 5.7.1, and 1 % of the delivered bouncing later by
    /// DSN: the suppression list holds exactly the refused and the bounced addresses (not the
    /// policy refusals), the counts by class match what the sink did, and the second campaign
    /// sends nothing to a suppressed address.
    @Test func aCampaignsHardBouncesAreSuppressedAndTheNextCampaignSkipsThem() async throws {
        let first = try await startSink { configuration in
            configuration.store = .discard
            configuration.faults.rejectRecipients = .probability(0.03)
            configuration.faults.rejectData = .probability(0.01)
            configuration.faults.seed = 25
        }
        guard let outbox = try await makeOutbox(.sqlite) else { return }
        let list = (0..<10_000).map { "r\($0)@example.org" }
        func campaign(_ name: String) async throws {
            for start in stride(from: 0, to: list.count, by: 1_000) {
                _ = try await outbox.enqueue(contentsOf: (start..<start + 1_000).map {
                    outboxMessage("\(name)-\($0)", to: [list[$0]])
                })
            }
        }
        func drain(into sink: SMTPSink) async throws -> OutboxWorker {
            var configuration = SMTPClient.Configuration(host: "127.0.0.1", port: sink.localAddress.port, security: .none)
            configuration.retry = .none
            configuration.pool.maximumConnections = 8
            let client = try SMTPClient(configuration: configuration)
            var settings = OutboxWorker.Configuration()
            settings.exitWhenIdle = true
            settings.pollInterval = .milliseconds(20)
            let worker = OutboxWorker(outbox: outbox, client: client, configuration: settings)
            try await withDeadline(.seconds(300), "draining a campaign") { try await worker.run() }
            await client.shutdown()
            return worker
        }
        try await campaign("one")
        let worker = try await drain(into: first)
        let statistics = first.statistics
        await first.shutdown()

        var failed: [String: BounceClass] = [:]
        var after: Int64 = 0
        while case let page = try await outbox.list(state: .failed, after: after, limit: 1_000), let last = page.last {
            for record in page { failed[record.recipients[0].address] = record.recipients[0].bounceClass }
            after = last.id
        }
        let refusedAtRCPT = statistics.rejectionsByCode["550", default: 0]
        let refusedAtData = statistics.rejectionsByCode["554", default: 0]
        #expect(refusedAtRCPT > 200 && refusedAtData > 50, "the faults fired: \(statistics.rejectionsByCode)")
        #expect(failed.values.count { $0 == .invalidRecipient } == refusedAtRCPT)
        #expect(failed.values.count { $0 == .policy } == refusedAtData)
        #expect(failed.count == refusedAtRCPT + refusedAtData)
        #expect(worker.statistics.delivered == list.count - failed.count)
        #expect(statistics.recipients == list.count - failed.count)

        var suppressed = Set<String>()
        var cursor: String?
        while case let page = try await outbox.suppressions(after: cursor, limit: 1_000), let last = page.last {
            suppressed.formUnion(page.map(\.target))
            cursor = last.target
        }
        #expect(suppressed == Set(failed.filter { $0.value == .invalidRecipient }.keys), "exactly the hard bounces")
        #expect(worker.statistics.addedToSuppressionList == refusedAtRCPT)

        // 1 % of the delivered bounce later: a DSN each, matched by the returned Message-ID.
        var delivered: [(id: Int64, messageID: String, address: String)] = []
        after = 0
        while case let page = try await outbox.list(state: .delivered, after: after, limit: 1_000), let last = page.last {
            for record in page { delivered.append((record.id, record.messageID ?? "", record.recipients[0].address)) }
            after = last.id
        }
        let later = delivered.enumerated().filter { $0.offset % 100 == 0 }.map(\.element)
        for bounce in later {
            let result = try await outbox.ingestReport(BounceIngestionTests.dsn(
                envelopeID: nil, messageID: bounce.messageID, [(bounce.address, "failed", "5.1.1")]))
            #expect(result.bounced.map(\.address) == [bounce.address])
        }
        let hard = suppressed.union(later.map(\.address))
        #expect(try await outbox.status().recipients[.bounced] == later.count)

        let second = try await startSink { $0.store = .memory }
        try await campaign("two")
        let status = try await outbox.status()
        #expect(status.recipients[.suppressed] == hard.count, "recorded as suppressed at the enqueue")
        _ = try await drain(into: second)
        let received = Set(second.messages.flatMap { $0.recipients.map { "\($0)" } })
        #expect(received.count == list.count - hard.count)
        #expect(received.isSubset(of: Set(list)) && received.isDisjoint(with: hard))
        await second.shutdown()
    }
}
