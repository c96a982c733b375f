import Foundation
@testable import Sluice
import SluiceSink
import SluiceTestSupport
import Testing

@Suite("SMTPClient delivery")
struct ClientDeliveryTests {
    @Test func sendsAMessageThatTheSinkStoresByteForByte() async throws {
        try await withSinkAndClient { sink, client in
            let message = testMessage("exact")
            let report = try await client.send(message, envelope: envelope("a@example.org", "b@example.org"))
            #expect(report.outcome == .accepted)
            #expect(report.recipients.map(\.status) == [.accepted, .accepted])
            #expect(report.recipients.allSatisfy { $0.code == 250 })
            #expect(report.messageID == "<exact@example.com>")
            #expect(report.attempts == 1)
            let stored = try await sink.waitForMessages(count: 1)
            #expect(stored[0].content == message.chunk.array, "the sink stores exactly the normalised message")
            #expect(stored[0].recipients.map(\.address) == ["a@example.org", "b@example.org"])
            #expect(stored[0].from?.address == "sender@example.com")
            #expect(stored[0].heloName == "client.test")
        }
    }

    @Test(arguments: [(true, true), (true, false), (false, false)])
    func everyPipeliningModeDeliversEveryMessage(pipelining: Bool, chunking: Bool) async throws {
        try await withSinkAndClient(client: {
            $0.pipelining.enabled = pipelining
            $0.pipelining.chunking = chunking
            $0.pool.maximumConnections = 2
        }) { sink, client in
            let reports = try await withThrowingTaskGroup(of: DeliveryReport.self) { group in
                for index in 0..<60 {
                    group.addTask { try await client.send(testMessage("m\(index)"), envelope: envelope("r\(index)@example.org")) }
                }
                return try await group.reduce(into: []) { $0.append($1) }
            }
            #expect(reports.count == 60)
            #expect(reports.allSatisfy { $0.outcome == .accepted })
            let stored = try await sink.waitForMessages(count: 60)
            #expect(Set(stored.map { $0.recipients[0].address }) == Set((0..<60).map { "r\($0)@example.org" }))
            #expect(sink.statistics.sessions <= 2)
        }
    }

    @Test func rejectedRecipientDoesNotFailTheOthers() async throws {
        try await withSinkAndClient(sink: { $0.faults.rejectRecipients = .everyNth(2) }) { sink, client in
            let report = try await client.send(testMessage(), envelope: envelope("a@example.org", "b@example.org", "c@example.org"))
            #expect(report.outcome == .partiallyAccepted)
            #expect(report.recipients.map(\.status) == [.accepted, .rejected, .accepted])
            #expect(report.recipients[1].code == 550)
            #expect(report.failedRecipients.map(\.address.address) == ["b@example.org"])
            let stored = try await sink.waitForMessages(count: 1)
            #expect(stored[0].recipients.map(\.address) == ["a@example.org", "c@example.org"])
        }
    }

    @Test func everyRecipientRejectedThrowsWithTheReportAndSendsNoContent() async throws {
        try await withSinkAndClient(sink: { $0.faults.rejectRecipients = .everyNth(1) }) { sink, client in
            let error = await smtpError { try await client.send(testMessage(), envelope: envelope("a@example.org", "b@example.org")) }
            #expect(error?.kind == .rejected)
            #expect(error?.isTransient == false)
            #expect(error?.report?.outcome == .rejected)
            #expect(error?.report?.recipients.map(\.status) == [.rejected, .rejected])
            #expect(error?.report?.attempts == 1, "a permanent refusal is never retried")
            try await Task.sleep(for: .milliseconds(50))
            #expect(sink.messages.isEmpty)
        }
    }

    @Test func deferredDataIsRetriedUntilAccepted() async throws {
        try await withSinkAndClient(sink: { $0.faults.deferData = .everyNth(2) }) { sink, client in
            // The sink defers every second DATA: the first message is accepted, the second
            // deferred once and accepted on its retry.
            _ = try await client.send(testMessage("first"), envelope: envelope())
            let report = try await client.send(testMessage("second"), envelope: envelope())
            #expect(report.outcome == .accepted)
            #expect(report.attempts == 2)
            #expect(try await sink.waitForMessages(count: 2).count == 2)
        }
    }

    @Test func deferredRecipientsAreRetriedAloneAndTheReportMergesBothTries() async throws {
        try await withSinkAndClient(sink: { $0.faults.deferRecipients = .everyNth(2) }) { sink, client in
            let report = try await client.send(testMessage(), envelope: envelope("a@example.org", "b@example.org"))
            #expect(report.outcome == .accepted)
            #expect(report.attempts == 2)
            let stored = try await sink.waitForMessages(count: 2)
            #expect(stored.map { $0.recipients.map(\.address) } == [["a@example.org"], ["b@example.org"]],
                    "the retry goes only to the recipient that was deferred")
        }
    }

    @Test func retriesStopAtTheLimitAndTheMessageIsDeferred() async throws {
        try await withSinkAndClient(sink: { $0.faults.deferData = .everyNth(1) }, client: { $0.retry.maximumAttempts = 3 }) { sink, client in
            let error = await smtpError { try await client.send(testMessage(), envelope: envelope()) }
            #expect(error?.kind == .deferred)
            #expect(error?.isTransient == true)
            #expect(error?.code == 451)
            #expect(error?.report?.attempts == 3)
            #expect(error?.report?.outcome == .deferred)
            #expect(sink.messages.isEmpty)
        }
    }

    @Test func aLostReplyAfterTheDataIsUnknownAndNeverRetried() async throws {
        try await withSinkAndClient(sink: {
            $0.faults.disconnect = .everyNth(1)
            $0.faults.disconnectPhase = .afterData
        }) { sink, client in
            let error = await smtpError { try await client.send(testMessage(), envelope: envelope()) }
            #expect(error?.kind == .unknownOutcome)
            #expect(error?.report?.outcome == .unknown)
            #expect(error?.report?.recipients.map(\.status) == [.unknown])
            #expect(error?.report?.attempts == 1, "an unknown outcome is never retried silently")
        }
    }

    @Test func a421MidSessionDefersTheMessageAndTheRetryGoesOnAFreshConnection() async throws {
        try await withSinkAndClient(sink: {
            $0.faults.disconnect = .everyNth(2)
            $0.faults.disconnectPhase = .rcpt
        }, client: { $0.pool.maximumConnections = 1 }) { sink, client in
            var accepted = 0
            for index in 0..<6 {
                let report = try await client.send(testMessage("m\(index)"), envelope: envelope())
                #expect(report.outcome == .accepted)
                accepted += 1
            }
            #expect(accepted == 6)
            #expect(try await sink.waitForMessages(count: 6).count == 6)
            #expect(sink.statistics.sessions > 1, "each 421 closed a session")
        }
    }

    @Test func emptyEnvelopeIsRefusedBeforeAnyConnection() async throws {
        try await withSinkAndClient { sink, client in
            let empty = Envelope(from: nil, to: [])
            let error = await smtpError { try await client.send(testMessage(), envelope: empty) }
            #expect(error?.kind == .invalidInput)
            #expect(sink.statistics.sessions == 0)
        }
    }

    @Test func invalidEHLONameAndCredentialsAreRefusedWhenTheClientIsMade() throws {
        var configuration = SMTPClient.Configuration(host: "127.0.0.1", port: 25, security: .none)
        configuration.ehloName = "bad name\r\nMAIL FROM:<x@y>"
        #expect(throws: SMTPError.self) { try SMTPClient(configuration: configuration) }
        configuration.ehloName = "client.test"
        configuration.credentials = .password(username: "u", password: "p\r\nQUIT")
        #expect { try SMTPClient(configuration: configuration) } throws: { ($0 as? SMTPError)?.kind == .invalidInput }
    }
}

@Suite("SMTPClient against a greylisting sink")
struct ClientGreylistTests {
    @Test func theClientsRetriesGetAGreylistedMessageThrough() async throws {
        let sink = try await startSink { $0.faults.greylist = .milliseconds(300) }
        let client = try makeClient(for: sink) {
            $0.retry.maximumAttempts = 6
            $0.retry.backoff = Backoff(initial: .milliseconds(150), maximum: .milliseconds(300))
        }
        let report = try await client.send(testMessage(), envelope: try Envelope(from: "s@example.com", to: ["a@example.org"]))
        #expect(report.outcome == .accepted, "\(report)")
        #expect(report.attempts >= 2, "greylisted first (450 4.7.1), accepted on a later try: \(report.attempts)")
        #expect((sink.statistics.rejectionsByCode["450"] ?? 0) >= 1)
        await client.shutdown()
        await sink.shutdown()
    }
}
