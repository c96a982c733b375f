import Foundation
import Sluice
@testable import SluiceOutbox
import SluiceTestSupport
import Testing

/// The suppression list in both stores: what is on it is recorded and never sent, whether it
/// was there at the enqueue or came after; hard bounces join it by themselves; it survives a
/// CSV round trip; and a version 1 outbox is migrated to it with its messages kept.
@Suite(.closesOutboxes) struct SuppressionTests {
    @Test(arguments: StoreKind.allCases)
    func addressesAndDomainsOnTheListAreRecordedAsSuppressedAndNeverSent(store kind: StoreKind) async throws {
        let relay = try await ScriptedRelay.start { _, _ in "250 2.1.5 ok" }
        let clock = ManualClock()
        guard let outbox = try await makeOutbox(kind, clock: clock) else { return }
        try await outbox.suppress("<Gone@Example.ORG>")
        try await outbox.suppress("@blocked.example", reason: Suppression.Reason.complaint, detail: "ARF report")
        try await outbox.suppress("lapsed@example.org", expiresAt: clock.now().addingTimeInterval(-1))
        let id = try await outbox.enqueue(outboxMessage("s", to: [
            "gone@example.org", "someone@Blocked.Example", "ok@example.org", "lapsed@example.org",
        ]))
        let queued = try #require(try await outbox.message(id))
        #expect(queued.recipients.map(\.state) == [.suppressed, .suppressed, .queued, .queued])
        #expect(try await outbox.suppression(for: "GONE@example.org")?.reason == "manual")
        #expect(try await outbox.suppression(for: "x@blocked.example")?.target == "blocked.example")
        #expect(try await outbox.suppression(for: "lapsed@example.org") == nil, "a lapsed entry stops nothing")

        // A message whose every recipient is suppressed is finished at once.
        let none = try await outbox.enqueue(outboxMessage("none", to: ["gone@example.org"]))
        #expect(try await outbox.message(none)?.dueAt == nil)

        let client = try relayClient(port: relay.port)
        let (_, task) = OutboxWorkerTests.start(outbox, client) { $0.exitWhenIdle = true }
        try await task.value
        let sent = try #require(try await outbox.message(id))
        #expect(sent.recipients.map(\.state) == [.suppressed, .suppressed, .delivered, .delivered])
        #expect(relay.rcptCount("gone@example.org") == 0 && relay.rcptCount("someone@Blocked.Example") == 0)
        #expect(relay.rcptCount("ok@example.org") == 1 && relay.rcptCount("lapsed@example.org") == 1)
        await client.shutdown()
        await relay.shutdown()
    }

    @Test(arguments: StoreKind.allCases)
    func anAddressSuppressedWhileItsMessageWaitsIsNotSent(store kind: StoreKind) async throws {
        let relay = try await ScriptedRelay.start { _, _ in "250 2.1.5 ok" }
        guard let outbox = try await makeOutbox(kind) else { return }
        let id = try await outbox.enqueue(outboxMessage("w", to: ["unsubscribed@example.org", "stays@example.org"]))
        let alone = try await outbox.enqueue(outboxMessage("a", to: ["unsubscribed@example.org"]))
        try await outbox.suppress("unsubscribed@example.org", reason: Suppression.Reason.unsubscribed)
        let client = try relayClient(port: relay.port)
        let (worker, task) = OutboxWorkerTests.start(outbox, client) { $0.exitWhenIdle = true }
        try await task.value
        let record = try #require(try await outbox.message(id))
        #expect(record.recipients.map(\.state) == [.suppressed, .delivered])
        #expect(record.recipients[0].attempts == 0, "suppressed is not an attempt")
        #expect(record.recipients[0].reply?.contains("unsubscribed") == true)
        #expect(try await outbox.message(alone)?.recipients.map(\.state) == [.suppressed])
        #expect(try await outbox.message(alone)?.dueAt == nil)
        #expect(relay.rcptCount("unsubscribed@example.org") == 0)
        #expect(worker.statistics.suppressed == 2)
        await client.shutdown()
        await relay.shutdown()
    }

    @Test(arguments: StoreKind.allCases)
    func hardBouncesJoinTheListWithTheirClassAndTheNextCampaignSkipsThem(store kind: StoreKind) async throws {
        let relay = try await ScriptedRelay.start { address, _ in
            switch address {
            case "gone@example.org": "550 5.1.1 The email account that you tried to reach does not exist."
            case "full@example.org": "552 5.2.2 The email account that you tried to reach is over quota."
            case "blocked@example.org": "550 5.7.1 Service unavailable, Client host [192.0.2.1] blocked using Spamhaus."
            case "later@example.org": "450 4.2.1 The user you are trying to contact is receiving mail too quickly."
            default: "250 2.1.5 ok"
            }
        }
        let clock = ManualClock()
        guard let outbox = try await makeOutbox(kind, clock: clock) else { return }
        let list = ["ok@example.org", "gone@example.org", "full@example.org", "blocked@example.org", "later@example.org"]
        let first = try await outbox.enqueue(outboxMessage("c1", to: list))
        let client = try relayClient(port: relay.port)
        let (worker, task) = OutboxWorkerTests.start(outbox, client) { $0.suppressionLifetime = .seconds(30 * 86_400) }
        try await eventually("the first campaign is recorded") {
            try await outbox.message(first)?.recipients[1].attempts == 1
        }
        let record = try #require(try await outbox.message(first))
        #expect(record.recipients.map(\.state) == [.delivered, .failed, .failed, .failed, .deferred])
        #expect(record.recipients.map(\.bounceClass) == [nil, .invalidRecipient, .mailboxFull, .policy, .rateLimited])
        // Only the address that does not exist is a hard bounce; a full mailbox, a block of the
        // sender and a rate limit are not the address's fault.
        let entries = try await outbox.suppressions()
        #expect(entries.map(\.target) == ["gone@example.org"])
        #expect(entries.first?.reason == "invalid-recipient")
        #expect(entries.first?.detail?.contains("does not exist") == true)
        #expect(entries.first?.expiresAt == clock.now().addingTimeInterval(30 * 86_400))
        task.cancel()
        try await task.value
        let second = try await outbox.enqueue(outboxMessage("c2", to: list))
        #expect(try await outbox.message(second)?.recipients.map(\.state) == [.queued, .suppressed, .queued, .queued, .queued])
        #expect(worker.statistics.addedToSuppressionList == 1)
        await client.shutdown()
        await relay.shutdown()
    }

    @Test(arguments: StoreKind.allCases)
    func theListSurvivesACSVRoundTripAndABadLineImportsNothing(store kind: StoreKind) async throws {
        let clock = ManualClock()
        guard let outbox = try await makeOutbox(kind, clock: clock) else { return }
        let imported = try await outbox.importSuppressions(csv: """
            email,reason,expires_at,detail,list
            a@example.org,complaint,,"said ""stop"", twice",news\r
            B@Example.org,,2030-01-01,,news
            example.net,unsubscribed,2030-01-01T12:00:00Z,"two
            lines",news

            """)
        #expect(imported == 3)
        let csv = try await outbox.exportSuppressions()
        let now = clock.now().formatted(Date.ISO8601FormatStyle())
        #expect(csv == """
            target,reason,created_at,expires_at,detail\r
            a@example.org,complaint,\(now),,"said ""stop"", twice"\r
            b@example.org,manual,\(now),2030-01-01T00:00:00Z,\r
            example.net,unsubscribed,\(now),2030-01-01T12:00:00Z,"two
            lines"\r

            """)
        // Read back, the export is the same list.
        guard let other = try await makeOutbox(kind, clock: clock) else { return }
        #expect(try await other.importSuppressions(csv: csv) == 3)
        #expect(try await other.suppressions() == (try await outbox.suppressions()))

        let bad = await #expect(throws: OutboxError.self) {
            try await outbox.importSuppressions(csv: "c@example.org\nnot an address\nd@example.org\n")
        }
        #expect(bad?.message == "line 2: \"not an address\" is not an address or a domain; nothing was imported")
        let reason = await #expect(throws: OutboxError.self) {
            try await outbox.importSuppressions(csv: "c@example.org,bounced\n")
        }
        #expect(reason?.message.hasPrefix("line 1: \"bounced\" is not a suppression reason") == true)
        #expect(try await outbox.suppressions().count == 3, "nothing of a refused file was added")

        #expect(try await outbox.unsuppress(["A@example.org", "nobody@example.org"]) == 1)
        #expect(try await outbox.suppressions().map(\.target) == ["b@example.org", "example.net"])
    }

    @Test(arguments: StoreKind.allCases)
    func aVersion1OutboxIsMigratedWithItsMessagesKept(store kind: StoreKind) async throws {
        guard let outbox = try await makeOutbox(kind, initialize: false) else { return }
        // The schema as version 1 wrote it, with one message in it.
        switch kind {
        case .sqlite:
            try await execute("CREATE TABLE sluice_schema (version INTEGER NOT NULL)", on: outbox)
            for statement in SQLiteStore.schema { try await execute(statement, on: outbox) }
            try await execute("""
                INSERT INTO sluice_schema (version) VALUES (1);
                INSERT INTO sluice_messages (id, sender, size, created_at, not_before, age_from, due_at)
                    VALUES (1, 'a@example.com', 20, 0, 0, 0, 0);
                INSERT INTO sluice_contents (message_id, content) VALUES (1, 'Subject: x\r\n\r\nbody\r\n');
                INSERT INTO sluice_recipients (message_id, position, address, state) VALUES (1, 0, 'b@example.org', 'queued');
                """, on: outbox)
        case .postgres:
            try await execute(PostgresSchema.create, on: outbox)
            for statement in [
                "INSERT INTO sluice_messages (sender, size, not_before, age_from, due_at) VALUES ('a@example.com', 20, now(), now(), now())",
                "INSERT INTO sluice_contents (message_id, content) SELECT id, 'Subject: x' FROM sluice_messages",
                "INSERT INTO sluice_recipients (message_id, position, address, state) SELECT id, 0, 'b@example.org', 'queued' FROM sluice_messages",
            ] {
                try await execute(statement, on: outbox)
            }
        }
        let old = await #expect(throws: OutboxError.self) { try await outbox.status() }
        #expect(old?.kind == .notInitialized)
        #expect(old?.message.contains("migrate it to 2") == true, "\(String(describing: old))")
        #expect(try await outbox.initialize() == 1)
        #expect(try await outbox.initialize() == 2, "a second init is a no-op")
        let ids = try await outbox.list().map(\.id)
        #expect(ids.count == 1)
        #expect(try await outbox.message(ids[0])?.recipients.map(\.state) == [.queued])
        try await outbox.suppress("b@example.org")
        let next = try await outbox.enqueue(outboxMessage("after", to: ["b@example.org"]))
        #expect(try await outbox.message(next)?.recipients.map(\.state) == [.suppressed])
    }

    @Test func theASCIIPathNormalizesAsTheCharacterPathDoes() throws {
        // A worker normalizes every address it claims, so ASCII is read as bytes; it must agree
        // with the reading by characters, target for target, on what it keeps and what it refuses.
        let pieces = ["a", "B", "z", "Z", "0", "@", "@", ".", ".", "-", "_", " ", "\t", "\r", "\n", "<", ">", ",",
                      "\u{7F}", "\u{01}", "\"", "example", "ORG", "user"]
        var generator = SystemRandomNumberGenerator()
        var compared = 0
        for _ in 0..<20_000 {
            let target = (0..<Int.random(in: 0...12, using: &generator))
                .map { _ in pieces.randomElement(using: &generator)! }.joined()
            let byCharacters = try? Suppression.normalizedByCharacters(target)
            guard let byBytes = Suppression.normalizedASCII(target) else {
                Issue.record("ASCII \(target.debugDescription) was not read as bytes")
                continue
            }
            #expect(byBytes == byCharacters, "\(target.debugDescription)")
            if byCharacters != nil { compared += 1 }
        }
        #expect(compared > 500, "too few valid targets to compare")
        // Beyond ASCII, the characters decide (a space joined to a combining accent is no space).
        #expect(Suppression.normalizedASCII("b@bücher.example") == nil)
        #expect((try? Suppression.normalized(" \u{301}a@example.org")) == nil)
        #expect(try Suppression.normalized(" <B@Bücher.Example>\r") == "b@bücher.example")
    }

    @Test func aPostgreSQLArrayLiteralCarriesEveryValueAsItIs() async throws {
        guard let outbox = try await makeOutbox(.postgres), let store = outbox.store as? PostgresStore else { return }
        let values: [String?] = ["plain", "with \"quotes\"", "back\\slash\\", "{braces},comma", "", nil, "NULL",
                                 "ünïcødé ✉︎", "nul\u{0}dropped", " spaced "]
        let rows = try await store.rows("SELECT v FROM unnest($1::text[]) WITH ORDINALITY AS t(v, n) ORDER BY n",
                                        [.text(pgArray(values))])
        #expect(rows.map { $0[0] } == values.map { $0?.replacingOccurrences(of: "\u{0}", with: "") })
    }

    @Test(arguments: ["", " ", "a@", "@", "a@b@", "a b@example.org", "a@example..org", "a@.example.org", "x,y@example.org"])
    func aTargetThatIsNeitherAnAddressNorADomainIsRefused(target: String) {
        #expect(throws: OutboxError.self) { try Suppression.normalized(target) }
    }
}
