import Testing
import SluiceTransport  // OpenSSLCryptography, as the client wires it
@testable import SluiceCore

/// Every reply answers one command that has already been written. A reply that comes before
/// its command, one with no command to answer, or one that does not fit its command ends the
/// session with a protocol error, and nothing is reported accepted (ROBUSTNESS.md, Outcomes).
@Suite("Client state machine: replies paired with written commands")
struct ClientReplyPairingTests {
    private func noneAccepted(_ h: Harness) -> Bool {
        h.outcomes.allSatisfy { $0.status != .accepted && !$0.recipients.contains { $0.status == .accepted } }
    }

    @Test func aFinalReplyThatCameWithThe354AcceptsNothing() {
        var h = Harness()
        h.establish()
        h.enqueue(transaction(1, to: ["a@example.com"]))
        // The 250 comes before the content was written; the real end of data would get 554.
        #expect(h.server("250 ok\r\n250 ok\r\n354 go\r\n250 2.0.0 early\r\n") == "")
        #expect(h.closeError?.kind == .protocolViolation)
        #expect(!h.writes.joined().contains("Hello"), "the content never went out")
        #expect(h.outcomes.map(\.status) == [.deferred], "content not sent: deferred, never accepted")
        #expect(noneAccepted(h))
    }

    @Test func aFinalReplyThatCameWithThe354AcceptsNothingWithoutPipelining() {
        var h = Harness()
        h.establish(extensions: ["8BITMIME"])
        h.enqueue(transaction(1, to: ["a@example.com"]))
        h.server("250 ok\r\n")
        #expect(h.server("250 ok\r\n") == "DATA\r\n")
        #expect(h.server("354 go\r\n250 early\r\n") == "")
        #expect(h.closeError?.kind == .protocolViolation)
        #expect(h.outcomes.map(\.status) == [.deferred])
        #expect(noneAccepted(h))
    }

    @Test(arguments: [true, false])
    func dataAnsweredWith250IsAProtocolErrorNotAnAcceptance(pipelining: Bool) {
        var h = Harness()
        h.establish(extensions: pipelining ? ["PIPELINING"] : [])
        h.enqueue(transaction(1, to: ["a@example.com"]))
        if pipelining {
            h.server("250 ok\r\n250 ok\r\n250 2.0.0 queued\r\n")
        } else {
            h.server("250 ok\r\n")
            h.server("250 ok\r\n")
            h.server("250 2.0.0 queued\r\n")
        }
        #expect(h.closeError?.kind == .protocolViolation)
        #expect(h.closeError?.command == "DATA")
        #expect(!h.writes.joined().contains("Hello"))
        #expect(h.outcomes.map(\.status) == [.deferred])
        #expect(noneAccepted(h))
    }

    @Test func anExtraReplyToMAILIsNeverTakenForARecipientsAnswer() {
        // One recipient: MAIL gets two 250s, the recipient's real reply is 550 and DATA's 554.
        var h = Harness()
        h.establish()
        h.enqueue(transaction(1, to: ["a@example.com"]))
        h.server("250 ok\r\n250 extra\r\n550 5.1.1 no such user\r\n554 5.5.1 no valid recipients\r\n")
        #expect(h.closeError?.kind == .protocolViolation)
        #expect(noneAccepted(h))
        #expect(h.outcomes.map(\.status) == [.deferred], "the pairing is in doubt: nothing permanent is claimed either")
        #expect(!h.writes.joined().contains("Hello"))
    }

    @Test func anExtraReplyWithTwoRecipientsMakesNeitherAccepted() {
        // MAIL 250 250, first recipient 550, second 250, DATA 354: shifted by one, the client
        // would read "first accepted, second refused, DATA 250".
        var h = Harness()
        h.establish()
        h.enqueue(transaction(1, to: ["a@example.com", "b@example.com"]))
        h.server("250 ok\r\n250 extra\r\n550 5.1.1 no such user\r\n250 ok\r\n354 go\r\n")
        #expect(h.closeError?.kind == .protocolViolation)
        #expect(noneAccepted(h))
        #expect(!h.writes.joined().contains("Hello"))
    }

    @Test func aReplyBeforeItsCommandWithoutPipeliningIsAProtocolError() {
        var h = Harness()
        h.establish(extensions: ["8BITMIME"])
        #expect(h.enqueue(transaction(1, to: ["a@example.com"])) == "MAIL FROM:<sender@example.com>\r\n")
        // The second 250 would answer RCPT, which is not written yet.
        #expect(h.server("250 ok\r\n250 extra\r\n") == "")
        #expect(h.closeError?.kind == .protocolViolation)
        #expect(h.outcomes.map(\.status) == [.deferred])
        #expect(noneAccepted(h))
    }

    @Test func aReplyAfterEverythingWasAnsweredSettlesThatEventsOutcomesAgain() {
        // The transaction's replies are all there and say accepted, but one more follows in
        // the same read: which reply answered which command is in doubt, and the content went
        // out, so the outcome is unknown, not accepted.
        var h = Harness()
        h.establish()
        h.enqueue(transaction(1, to: ["a@example.com"]))
        #expect(h.server("250 ok\r\n250 ok\r\n354 go\r\n").contains("Hello"))
        h.server("250 2.0.0 queued\r\n250 surplus\r\n")
        #expect(h.closeError?.kind == .protocolViolation)
        #expect(h.outcomes.map(\.status) == [.unknown])
        #expect(h.outcomes[0].recipients.map(\.status) == [.unknown])
    }

    @Test func aThreeHundredReplyToAnythingButDATAIsAProtocolError() {
        var h = Harness()
        h.establish()
        h.enqueue(transaction(1, to: ["a@example.com"]))
        h.server("250 ok\r\n354 go\r\n")
        #expect(h.closeError?.kind == .protocolViolation)
        #expect(h.closeError?.command == "RCPT")
        #expect(noneAccepted(h))
    }

    @Test func anEHLOReplyThatCameWithTheGreetingIsAProtocolError() {
        var h = Harness()
        _ = h.connect()
        #expect(h.server("220 mx.example\r\n250-mx.example\r\n250 PIPELINING\r\n") == "")
        #expect(h.closeError?.kind == .protocolViolation)
        #expect(h.ready == nil)
    }

    @Test func everySplitOfTheServersRepliesGivesTheSameWrites() {
        // Each reply after the command it answers, split at every position.
        let greeting = Array("220 mx.example ESMTP\r\n".utf8)
        let ehlo = Array("250-mx.example\r\n250 PIPELINING\r\n".utf8)
        var reference = Harness()
        _ = reference.connect()
        reference.apply(reference.machine.bytesReceived(greeting))
        reference.apply(reference.machine.bytesReceived(ehlo))
        #expect(reference.ready?.pipelining == true)
        for (index, reply) in [greeting, ehlo].enumerated() {
            for cut in 0...reply.count {
                var h = Harness()
                _ = h.connect()
                if index == 1 { h.apply(h.machine.bytesReceived(greeting)) }
                h.apply(h.machine.bytesReceived(reply[..<cut]))
                h.apply(h.machine.bytesReceived(reply[cut...]))
                if index == 0 { h.apply(h.machine.bytesReceived(ehlo)) }
                #expect(h.writes == reference.writes, "reply \(index) split at \(cut)")
                #expect(h.ready == reference.ready)
                #expect(!h.isClosed)
            }
        }
        var oneByOne = Harness()
        _ = oneByOne.connect()
        for byte in greeting + ehlo { oneByOne.apply(oneByOne.machine.bytesReceived([byte])) }
        #expect(oneByOne.writes == reference.writes)
    }
}

@Suite("Client state machine: AUTH a server drives")
struct ClientAuthenticationBoundsTests {
    let credentials = try! SASLCredentials.password(username: "tim", password: "tanstaaftanstaaf")

    private func harness(_ mechanism: SASLMechanism) -> Harness {
        var h = Harness(Machine.Configuration(ehloName: try! SMTPDomain("client.example"), tls: .implicit,
                                              credentials: credentials, forcedMechanism: mechanism))
        _ = h.connect()
        h.server("220 mx\r\n")
        h.server("250-mx\r\n250 AUTH LOGIN PLAIN\r\n")
        return h
    }

    @Test(arguments: [SASLMechanism.plain, .login])
    func aServerThatChallengesForeverIsLeftAfterTheCancel(mechanism: SASLMechanism) {
        var h = harness(mechanism)
        var answers = 0
        for _ in 0..<300 where !h.isClosed {
            if !h.server("334 \r\n").isEmpty { answers += 1 }
        }
        #expect(h.isClosed, "the exchange is bounded")
        #expect(h.closeError?.kind == .authenticationFailed)
        #expect(h.writes.filter { $0 == "*\r\n" }.count <= 1, "one cancel, not one per challenge")
        #expect(answers <= OpeningStateMachine.maximumAuthenticationChallenges)
    }

    @Test func scramRefusesAnIterationCountAboveTheCap() {
        var exchange = SASLClient(mechanism: .scramSHA256, credentials: credentials, cryptography: OpenSSLCryptography(),
                                  host: "mx", port: 587)
        _ = exchange.startSCRAM(nonce: "abc")
        let within = "r=abcdef,s=QSXCR+Q6sek8bf92,i=\(SASLClient.maximumSCRAMIterations)"
        var copy = exchange
        guard case .respond = copy.challengeReceived(Base64.encode(Array(within.utf8))) else {
            Issue.record("the cap itself is allowed")
            return
        }
        let over = "r=abcdef,s=QSXCR+Q6sek8bf92,i=\(SASLClient.maximumSCRAMIterations + 1)"
        guard case .cancel(let error) = exchange.challengeReceived(Base64.encode(Array(over.utf8))) else {
            Issue.record("an iteration count over the cap was accepted")
            return
        }
        #expect(error.reason.contains("\(SASLClient.maximumSCRAMIterations + 1) SCRAM iterations"))
    }
}
