import Foundation
import Sluice
import SluiceSink
import SluiceTestSupport
import Testing

/// The client's rules from ROBUSTNESS.md, each against the real sink.
@Suite("SMTPClient robustness")
struct ClientRobustnessTests {
    @Test func a452AfterSomeRecipientsSendsToThoseAndRetriesTheRest() async throws {
        try await withSinkAndClient(sink: { $0.server.maximumRecipients = 2 }) { sink, client in
            let report = try await client.send(testMessage(), envelope: envelope("a@example.org", "b@example.org", "c@example.org"))
            #expect(report.outcome == .accepted)
            #expect(report.attempts == 2)
            let stored = try await sink.waitForMessages(count: 2)
            #expect(stored.map { $0.recipients.map(\.address) } == [["a@example.org", "b@example.org"], ["c@example.org"]])
        }
    }

    @Test func thousandsOfRecipientsToAServerThatStopsReadingDoNotDeadlock() async throws {
        // The sink stops reading while its replies are not being read; the client must keep
        // reading replies while it writes 5,000 RCPT commands.
        try await withSinkAndClient(sink: { $0.server.maximumRecipients = 10_000 }) { sink, client in
            let recipients = (0..<5_000).map { "recipient.number.\($0)@example.org" }
            let report = try await client.send(testMessage(), envelope: try Envelope(from: "sender@example.com", to: recipients))
            #expect(report.outcome == .accepted, "\(report)")
            #expect(report.recipients.count == 5_000)
            let stored = try await sink.waitForMessages(count: 1)
            #expect(stored[0].recipients.count == 5_000,
                    "attempts \(report.attempts); stored \(stored.map(\.recipients.count)) recipients")
        }
    }

    @Test func aConnectionThatTimedOutIsNeverReused() async throws {
        try await withSinkAndClient(sink: { $0.replyDelay = .fixed(.milliseconds(300)) }, client: {
            $0.pipelining.enabled = false
            $0.timeouts.mail = .milliseconds(100)
            $0.retry.maximumAttempts = 2
        }) { sink, client in
            let error = await smtpError { try await client.send(testMessage(), envelope: envelope()) }
            #expect(error?.kind == .timeout)
            #expect(error?.report?.outcome == .deferred, "MAIL timed out: nothing was sent, safe to retry")
            #expect(error?.report?.attempts == 2)
            try await Task.sleep(for: .milliseconds(400))
            #expect(sink.statistics.sessions == 2, "each try had a connection of its own")
            #expect(sink.statistics.messages == 0)
        }
    }

    @Test func aUTF8AddressNeverGoesToAServerWithoutSMTPUTF8() async throws {
        try await withSinkAndClient(sink: { $0.server.smtpUTF8 = false }) { sink, client in
            let error = await smtpError {
                try await client.send(testMessage(), envelope: try Envelope(from: "sender@example.com", to: ["jöran@example.org"]))
            }
            #expect(error?.kind == .rejected, "the server's capabilities refuse it: the message, not the input, is at fault")
            #expect(error?.report?.outcome == .rejected)
            #expect(sink.statistics.messages == 0)
            #expect(sink.statistics.protocolErrors == 0, "no 8-bit byte reached the server")
        }
    }

    @Test func faultsChurnAndCancellationLeaveNoHandleOrSocketBehind() async throws {
        let group = EventLoopGroup(numberOfLoops: 2)
        let sink = try await startSink {
            $0.faults.rejectRecipients = .probability(0.1)
            $0.faults.deferData = .probability(0.1)
            $0.faults.disconnect = .probability(0.02)
            $0.faults.disconnectPhase = .rcpt
        }
        let client = try makeClient(for: sink) {
            $0.eventLoopGroup = group
            $0.pool.maximumConnections = 6
            $0.pool.maximumMessagesPerConnection = 10
        }
        var outcomes: [DeliveryReport.Outcome: Int] = [:]
        let mails = (0..<1_000).map { OutgoingMail(envelope: envelope("r\($0)@example.org"), message: testMessage("c\($0)")) }
        let reportsByRecipient = try await withDeadline(.seconds(120), "1,000 messages under faults") {
            var seen: [String: [DeliveryReport.Outcome]] = [:]
            for try await report in client.send(contentsOf: mails, maximumInFlight: 100) {
                seen[report.envelope.recipients[0].address.address, default: []].append(report.outcome)
            }
            return seen
        }
        for outcome in reportsByRecipient.values.flatMap({ $0 }) { outcomes[outcome, default: 0] += 1 }
        // By recipient, not by sum: one duplicate and one loss would add up to 1,000 too.
        #expect(reportsByRecipient.count == 1_000, "a report for each of the 1,000 recipients")
        #expect(reportsByRecipient.values.allSatisfy { $0.count == 1 },
                "reported twice: \(reportsByRecipient.filter { $0.value.count != 1 }.keys.prefix(3))")
        // Some sends are cancelled while queued behind a slow connection.
        let cancelled = (0..<20).map { index in Task { try await client.send(testMessage("x\(index)"), envelope: envelope()) } }
        for task in cancelled { task.cancel() }
        for task in cancelled { _ = try? await task.value }
        #expect(outcomes.values.reduce(0, +) == 1_000, "every message reported exactly once")
        #expect((outcomes[.accepted] ?? 0) > 0)
        await client.shutdown()
        #expect(group.liveHandleCount == 0, "shutdown returns once every connection and timer is closed")
        await sink.shutdown()
        try await waitUntil { socketDescriptors(touchingPorts: [sink.localAddress.port]).isEmpty }
        await group.shutdown()
    }
}
