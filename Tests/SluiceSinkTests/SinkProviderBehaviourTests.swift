import Foundation
import SluiceCore
import SluiceSink
import SluiceTestSupport
import SluiceTransport
import Testing

/// A sink that answers as mailbox providers do: greylisting, a tarpit, replies by domain.
@Suite("Sink: greylisting, tarpits and replies by domain")
struct SinkProviderBehaviourTests {
    /// Starts a sink with `faults`, opens a session to it that has said EHLO, runs `body`,
    /// and closes everything.
    static func withSession(_ faults: (inout SinkFaults) -> Void, _ body: (RawSession) async throws -> Void) async throws {
        let sink = try await startSink { faults(&$0.faults) }
        let group = EventLoopGroup(numberOfLoops: 1)
        let session = try await RawSession.open(to: sink.localAddress, on: group.loops[0])
        await session.replies(atLeast: 1)
        try await session.send("EHLO c.example\r\n")
        await session.replies(atLeast: 2)
        try await body(session)
        await session.connection.close()
        await sink.shutdown()
        await group.shutdown()
    }

    /// The code of the reply to `RCPT TO:<recipient>` in a new transaction from `sender`.
    static func recipientCode(_ session: RawSession, from sender: String, to recipient: String) async throws -> Int {
        let before = session.replies.count
        try await session.send("RSET\r\nMAIL FROM:<\(sender)>\r\nRCPT TO:<\(recipient)>\r\n")
        let replies = await session.replies(atLeast: before + 3)
        return replies.count >= before + 3 ? replies[before + 2].code.rawValue : 0
    }

    @Test func aNewTripletIsGreylistedUntilItRetriesAfterTheDelay() async throws {
        let delay = Duration.seconds(1)
        try await Self.withSession({ $0.greylist = delay }) { session in
            let clock = ContinuousClock()
            let first = clock.now  // the sink sees the triplet first at or after this
            #expect(try await Self.recipientCode(session, from: "s@example.com", to: "a@example.org") == 450)
            let firstAnswered = clock.now  // and at or before this
            let reply = session.replies.last!
            #expect(reply.enhancedCode == EnhancedStatusCode("4.7.1") && reply.text.contains("Greylisted, try again in 1 second "),
                    "the wait left, rounded up: \(reply)")
            let retry = try await Self.recipientCode(session, from: "s@example.com", to: "a@example.org")
            // A retry answered within the delay of `first` was decided too soon, however slow
            // the machine; one answered later proves nothing either way.
            if clock.now - first < delay { #expect(retry == 450, "too soon") }
            #expect(try await Self.recipientCode(session, from: "other@example.com", to: "a@example.org") == 450, "another sender")
            try await Task.sleep(until: firstAnswered + delay + .milliseconds(50), clock: clock)
            #expect(try await Self.recipientCode(session, from: "s@example.com", to: "a@example.org") == 250, "retried after the delay")
            #expect(try await Self.recipientCode(session, from: "s@example.com", to: "a@example.org") == 250, "and it stays passed")
            #expect(try await Self.recipientCode(session, from: "s@example.com", to: "b@example.org") == 450, "a new recipient waits")
        }
    }

    @Test func aTarpitHoldsEachRecipientsReply() async throws {
        try await Self.withSession({ $0.tarpit = .milliseconds(300) }) { session in
            let clock = ContinuousClock()
            let start = clock.now
            try await session.send("MAIL FROM:<s@example.com>\r\nRCPT TO:<a@example.org>\r\nRCPT TO:<b@example.org>\r\n")
            let replies = await session.replies(atLeast: 5)
            let elapsed = clock.now - start
            #expect(replies.suffix(3).map(\.code.rawValue) == [250, 250, 250])
            #expect(elapsed >= .milliseconds(600), "two recipients, each held 300 ms: \(elapsed)")
        }
    }

    @Test func repliesByDomainAnswerTheirDomainsAtTheirRatesAndA421Closes() async throws {
        let rules = try ReplyRule.parse("""
            # provider behaviour
            fail.test   100%  550 5.1.1 No such user here
            half.test   1/2   452 4.2.2 Mailbox full   # every second one
            limit.test  1     421 4.7.0 Rate limited, try later
            """)
        #expect(rules.count == 3 && rules[1].reply.enhancedCode == EnhancedStatusCode("4.2.2"))
        try await Self.withSession({ $0.replies = rules }) { session in
            #expect(try await Self.recipientCode(session, from: "s@example.com", to: "x@fail.test") == 550)
            #expect(session.replies.last!.text.contains("No such user here"))
            #expect(try await Self.recipientCode(session, from: "s@example.com", to: "x@other.test") == 250, "no rule, no fault")
            let halves = [try await Self.recipientCode(session, from: "s@example.com", to: "x@half.test"),
                          try await Self.recipientCode(session, from: "s@example.com", to: "y@HALF.test")]
            #expect(halves == [250, 452], "every second one, the domain in any case")
            #expect(try await Self.recipientCode(session, from: "s@example.com", to: "x@limit.test") == 421)
            await session.collector.waitForClose()
        }
    }

    @Test(arguments: ["example.com 2%", "example.com 2% 250 OK", "example.com lots 550 No", "a@b.test 1 550 No",
                      "example.com 1 550 4.1.1 Wrong class", "example.com 1 550 5.1.1", "example.com 150% 550 No"])
    func aRuleThatDoesNotParseNamesItsLine(line: String) {
        #expect(throws: ReplyRuleError.self) { try ReplyRule.parse("# ok\n\n" + line) }
        let error = try? #require(throws: ReplyRuleError.self) { try ReplyRule.parse("# ok\n\n" + line) }
        #expect(error?.line == 3)
    }
}
