import Testing
@testable import SluiceCore

@Suite("Client state machine: session")
struct ClientSessionTests {
    @Test func greetingEHLOAndReadyWithTheRFCTimeouts() {
        var h = Harness()
        #expect(h.connect() == "")
        #expect(h.timers == [.seconds(300)], "greeting: 5 minutes")
        #expect(h.server("220 mx.example ESMTP\r\n") == "EHLO client.example\r\n")
        h.server("250-mx.example\r\n250-PIPELINING\r\n250 SIZE 1000000\r\n")
        #expect(h.ready?.pipelining == true)
        #expect(h.ready?.maximumMessageSize == 1_000_000)
        #expect(!h.isClosed)
    }

    @Test func a554GreetingRefusesTheSession() {
        var h = Harness()
        _ = h.connect()
        #expect(h.server("554 no SMTP service here\r\n") == "")
        #expect(h.closeError?.kind == .greetingRefused)
        #expect(h.closeError?.reply?.code == .transactionFailed)
    }

    @Test func ehloRefusedFallsBackToHELOWithoutExtensions() {
        var h = Harness()
        _ = h.connect()
        h.server("220 old.example\r\n")
        #expect(h.server("502 5.5.1 EHLO not implemented\r\n") == "HELO client.example\r\n")
        h.server("250 old.example\r\n")
        #expect(h.ready == SMTPCapabilities(serverName: "old.example"))
        // Without PIPELINING: one command, one reply.
        #expect(h.enqueue(transaction(1, to: ["a@example.com", "b@example.com"])) == "MAIL FROM:<sender@example.com>\r\n")
        #expect(h.server("250 ok\r\n") == "RCPT TO:<a@example.com>\r\n")
        #expect(h.server("250 ok\r\n") == "RCPT TO:<b@example.com>\r\n")
        #expect(h.server("250 ok\r\n") == "DATA\r\n")
        #expect(h.server("354 go\r\n") == "Subject: hi\r\n\r\nHello\r\n.\r\n")
        #expect(h.server("250 queued\r\n") == "")
        #expect(h.outcomes.map(\.status) == [.accepted])
    }

    @Test func aMalformedReplyClosesWithAProtocolError() {
        var h = Harness()
        _ = h.connect()
        h.server("220 ok\r\n")
        h.server("250-mx\r\n251 mixed\r\n")
        #expect(h.closeError?.kind == .protocolViolation)
    }

    @Test func unsolicited421OnAnIdleConnectionCloses() {
        var h = Harness()
        h.establish()
        h.server("421 4.4.2 idle too long\r\n")
        #expect(h.closeError?.kind == .serviceClosing)
        #expect(h.closeError?.isTransient == true)
    }

    @Test func timeoutClosesAndTheConnectionIsNotReused() {
        var h = Harness()
        h.establish()
        h.enqueue(transaction(1, to: ["a@example.com"]))
        #expect(h.timers.last == .seconds(300), "MAIL: 5 minutes")
        h.apply(h.machine.timeoutFired())
        #expect(h.closeError?.kind == .timeout)
        #expect(h.outcomes.first?.status == .deferred)
        #expect(h.enqueue(transaction(2, to: ["b@example.com"])) == "")
        #expect(h.notAttempted == [2])
    }

    @Test func quitWhenIdleThenClose() {
        var h = Harness()
        h.establish()
        #expect(h.apply(h.machine.quitRequested()) == "QUIT\r\n")
        h.server("221 bye\r\n")
        #expect(h.closed == .some(nil), "a clean close")
    }

    @Test func quitWaitsForWhatIsInFlightAndHandsBackWhatIsNot() {
        var h = Harness()
        h.establish()
        h.enqueue(transaction(1, to: ["a@example.com"]))
        h.enqueue(transaction(2, to: ["b@example.com"]))
        #expect(h.apply(h.machine.quitRequested()) == "")
        #expect(h.notAttempted == [2])
        h.server("250 ok\r\n250 ok\r\n")
        #expect(h.server("354 go\r\n") == "Subject: hi\r\n\r\nHello\r\n.\r\n")
        #expect(h.server("250 queued\r\n") == "QUIT\r\n")
        #expect(h.outcomes.map(\.status) == [.accepted])
    }
}

@Suite("Client state machine: STARTTLS and AUTH")
struct ClientSecurityTests {
    private func configuration(_ tls: Machine.TLSPolicy, credentials: SASLCredentials? = nil,
                               allowPlaintext: Bool = false) -> Machine.Configuration {
        Machine.Configuration(ehloName: try! SMTPDomain("client.example"), tls: tls, credentials: credentials,
                              allowPlaintextAuthentication: allowPlaintext, serverHost: "mx.example", serverPort: 587)
    }
    let credentials = try! SASLCredentials.password(username: "tim", password: "tanstaaftanstaaf")

    @Test func startTLSThenANewEHLOAndNothingLearnedBeforeSurvives() {
        var h = Harness(configuration(.startTLSRequired, credentials: credentials))
        _ = h.connect()
        h.server("220 mx\r\n")
        #expect(h.server("250-mx\r\n250-STARTTLS\r\n250 AUTH LOGIN\r\n") == "STARTTLS\r\n")
        #expect(h.server("220 2.0.0 ready\r\n") == "")
        #expect(h.startedTLS)
        #expect(h.timers.last == .seconds(120), "the handshake is bounded too")
        #expect(h.apply(h.machine.tlsEstablished()) == "EHLO client.example\r\n")
        // After TLS the server offers PLAIN; the pre-TLS "LOGIN" must not be used.
        #expect(h.server("250-mx\r\n250-PIPELINING\r\n250 AUTH PLAIN\r\n") == "AUTH PLAIN AHRpbQB0YW5zdGFhZnRhbnN0YWFm\r\n")
        h.server("235 2.7.0 ok\r\n")
        #expect(h.ready?.authenticationMechanisms == ["PLAIN"])
        #expect(!h.isClosed)
    }

    @Test func requiredTLSNeverFallsBackWhenSTARTTLSIsNotOffered() {
        var h = Harness(configuration(.startTLSRequired))
        _ = h.connect()
        h.server("220 mx\r\n")
        #expect(h.server("250-mx\r\n250 PIPELINING\r\n") == "")
        #expect(h.closeError?.kind == .tlsRequired)
        #expect(h.enqueue(transaction(1, to: ["a@example.com"])) == "", "no MAIL ever goes out")
    }

    @Test func requiredTLSFailsOn454Or502ToSTARTTLS() {
        for refusal in ["454 4.7.0 TLS not available\r\n", "502 5.5.1 no\r\n"] {
            var h = Harness(configuration(.startTLSRequired, credentials: credentials))
            _ = h.connect()
            h.server("220 mx\r\n")
            h.server("250-mx\r\n250-STARTTLS\r\n250 AUTH PLAIN\r\n")
            #expect(h.server(refusal) == "", "no AUTH after a refused STARTTLS")
            #expect(h.closeError?.kind == .tlsRequired)
        }
    }

    @Test func opportunisticTLSGoesOnInPlaintextWhenNotOffered() {
        var h = Harness(configuration(.startTLSOpportunistic))
        _ = h.connect()
        h.server("220 mx\r\n")
        h.server("250-mx\r\n250 PIPELINING\r\n")
        #expect(h.ready != nil)
        #expect(!h.startedTLS)
    }

    /// The classic CVE-2011-0411 attack, a reply injected behind the 220, whole or partial.
    @Test(arguments: ["220 ready\r\n250-fake\r\n250 AUTH PLAIN\r\n", "220 ready\r\n2"])
    func bytesAfterThe220ToSTARTTLSAreAnInjection(_ reply: String) {
        var h = Harness(configuration(.startTLSRequired))
        _ = h.connect()
        h.server("220 mx\r\n")
        h.server("250-mx\r\n250 STARTTLS\r\n")
        h.server(reply)
        #expect(h.closeError?.kind == .tlsInjection)
        #expect(h.isClosed)
    }

    @Test func credentialsAreNeverSentOverPlaintextUnlessAllowed() {
        var h = Harness(configuration(.none, credentials: credentials))
        _ = h.connect()
        h.server("220 mx\r\n")
        #expect(h.server("250-mx\r\n250 AUTH PLAIN LOGIN\r\n") == "")
        #expect(h.closeError?.kind == .authenticationNotAllowed)
        #expect(!h.writes.joined().contains("AUTH"))

        var allowed = Harness(configuration(.none, credentials: credentials, allowPlaintext: true))
        _ = allowed.connect()
        allowed.server("220 mx\r\n")
        #expect(allowed.server("250-mx\r\n250 AUTH PLAIN LOGIN\r\n").hasPrefix("AUTH PLAIN "))
    }

    @Test func implicitTLSCountsAsEncrypted() {
        var h = Harness(configuration(.implicit, credentials: credentials))
        _ = h.connect()
        h.server("220 mx\r\n")
        #expect(h.server("250-mx\r\n250 AUTH PLAIN\r\n").hasPrefix("AUTH PLAIN "))
    }

    /// The error a session ends with when the server answers AUTH PLAIN with `reply`.
    private func authenticationFailure(_ reply: String) -> SMTPSessionError? {
        var h = Harness(configuration(.implicit, credentials: credentials))
        _ = h.connect()
        h.server("220 mx\r\n")
        h.server("250-mx\r\n250 AUTH PLAIN\r\n")
        h.server(reply)
        return h.closeError
    }

    @Test func a535IsAPermanentAuthenticationFailureAnd454ATransientOne() {
        let permanent = authenticationFailure("535 5.7.8 bad credentials\r\n")
        #expect(permanent?.kind == .authenticationFailed)
        #expect(permanent?.isTransient == false)
        let transient = authenticationFailure("454 4.7.0 try later\r\n")
        #expect(transient?.kind == .authenticationFailed)
        #expect(transient?.isTransient == true)
    }

    @Test func aMalformedChallengeCancelsAndThePasswordIsNeverSent() {
        var h = Harness(Machine.Configuration(ehloName: try! SMTPDomain("client.example"), tls: .implicit,
                                              credentials: credentials, forcedMechanism: .login))
        _ = h.connect()
        h.server("220 mx\r\n")
        #expect(h.server("250-mx\r\n250 AUTH LOGIN PLAIN\r\n") == "AUTH LOGIN\r\n")
        #expect(h.server("334 %%%not-base64\r\n") == "*\r\n")
        h.server("501 5.7.0 cancelled\r\n")
        #expect(h.closeError?.kind == .authenticationFailed)
        let everything = h.writes.joined()
        #expect(!everything.contains(Base64.encode(Array("tanstaaftanstaaf".utf8))))
        #expect(!everything.contains("tanstaaf"))
    }

    @Test func noCommonMechanismFailsBeforeSendingAnything() {
        var h = Harness(configuration(.implicit, credentials: credentials))
        _ = h.connect()
        h.server("220 mx\r\n")
        #expect(h.server("250-mx\r\n250 AUTH GSSAPI\r\n") == "")
        #expect(h.closeError?.kind == .authenticationNotAllowed)
    }
}

@Suite("Client state machine: transactions")
struct ClientTransactionTests {
    @Test func pipeliningSendsTheEnvelopeInOneWriteAndContentWithTheNextEnvelope() {
        var h = Harness()
        h.establish()
        #expect(h.enqueue(transaction(1, to: ["a@example.com", "b@example.com"]))
                == "MAIL FROM:<sender@example.com>\r\nRCPT TO:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
        #expect(h.enqueue(transaction(2, to: ["c@example.com"])) == "", "DATA ends the group: wait for 354")
        #expect(h.server("250 2.1.0 ok\r\n250 2.1.5 ok\r\n550 5.1.1 no such user\r\n") == "")
        #expect(h.server("354 go ahead\r\n")
                == "Subject: hi\r\n\r\nHello\r\n.\r\nMAIL FROM:<sender@example.com>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n",
                "content, terminator and the next envelope in one write")
        #expect(h.writes.count == 3, "EHLO, the first group, content with the second group")
        h.server("250 2.0.0 queued as A\r\n")
        let first = h.outcomes[0]
        #expect(first.status == .accepted)
        #expect(first.recipients.map(\.status) == [.accepted, .rejected], "one rejected recipient does not fail the other")
        #expect(first.recipients[1].reply?.enhancedCode == EnhancedStatusCode("5.1.1"))
        #expect(first.acceptedRecipients == [address("a@example.com")])
        h.server("250 ok\r\n250 ok\r\n354 go\r\n")
        h.server("250 queued as B\r\n")
        #expect(h.outcomes.map(\.id) == [1, 2])
        #expect(h.outcomes.map(\.status) == [.accepted, .accepted])
    }

    /// RFC 3461 §5.2: ENVID, RET, NOTIFY and ORCPT go to a server that offers DSN, and to no
    /// other (which would refuse them with a 555).
    @Test(arguments: [true, false])
    func dsnParametersGoOnlyToAServerThatOffersDSN(offered: Bool) throws {
        var h = Harness()
        h.establish(extensions: ["PIPELINING"] + (offered ? ["DSN"] : []))
        let plain = transaction(1, to: ["a@example.com"])
        var with = plain.transaction
        try with.parameters.setEnvelopeID("sluice.42")
        with.parameters.returnContent = .headers
        var recipient = RecipientParameters(notify: .never)
        try recipient.setOriginalRecipient(address("a@example.com"))
        with.recipients[0].parameters = recipient
        let written = h.enqueue(TestTransaction(transaction: with, body: plain.body))
        if offered {
            #expect(written == "MAIL FROM:<sender@example.com> RET=HDRS ENVID=sluice.42\r\n"
                    + "RCPT TO:<a@example.com> NOTIFY=NEVER ORCPT=rfc822;a@example.com\r\nDATA\r\n")
        } else {
            #expect(written == "MAIL FROM:<sender@example.com>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n")
        }
    }

    @Test func chunkingSendsWholeTransactionsBackToBack() {
        var h = Harness()
        h.establish(extensions: ["PIPELINING", "CHUNKING", "8BITMIME"])
        let body = "Subject: x\r\n\r\n.dot\r\n"
        let one = h.enqueue(transaction(1, to: ["a@example.com"], body: body))
        #expect(one == "MAIL FROM:<sender@example.com>\r\nRCPT TO:<a@example.com>\r\nBDAT 20 LAST\r\nSubject: x\r\n\r\n.dot\r\n",
                "BDAT content is not dot-stuffed")
        let two = h.enqueue(transaction(2, to: ["b@example.com"], body: body))
        #expect(two.hasPrefix("RSET\r\nMAIL FROM:"), "a second transaction goes out at once, after RSET")
        h.server("250 ok\r\n250 ok\r\n250 2.0.0 queued\r\n250 reset\r\n250 ok\r\n250 ok\r\n250 queued\r\n")
        #expect(h.outcomes.map(\.status) == [.accepted, .accepted])
    }

    @Test func chunkingKeepsAtMostTheConfiguredTransactionsInFlight() {
        var h = Harness(Machine.Configuration(ehloName: try! SMTPDomain("client.example"), tls: .none,
                                              maximumTransactionsInFlight: 2))
        h.establish(extensions: ["PIPELINING", "CHUNKING"])
        h.enqueue(transaction(1, to: ["a@example.com"]))
        h.enqueue(transaction(2, to: ["a@example.com"]))
        #expect(h.enqueue(transaction(3, to: ["a@example.com"])) == "")
        #expect(h.server("250 ok\r\n250 ok\r\n250 queued\r\n").hasPrefix("RSET\r\nMAIL"), "the third starts when the first ends")
    }

    @Test func everyRecipientRejectedAndDATARefusedSendsNoContentThenResets() {
        var h = Harness()
        h.establish()
        h.enqueue(transaction(1, to: ["a@example.com", "b@example.com"]))
        h.enqueue(transaction(2, to: ["c@example.com"]))
        h.server("250 ok\r\n550 no\r\n550 no\r\n")
        let next = h.server("554 5.5.1 no valid recipients\r\n")
        #expect(next == "RSET\r\nMAIL FROM:<sender@example.com>\r\nRCPT TO:<c@example.com>\r\nDATA\r\n")
        #expect(!h.writes.joined().contains("Hello"), "the content of the rejected message never went out")
        #expect(h.outcomes.first?.status == .rejected)
        #expect(h.outcomes.first?.recipients.map(\.status) == [.rejected, .rejected])
    }

    @Test func aLenient354WithNoRecipientGetsOnlyTheTerminator() {
        var h = Harness()
        h.establish()
        h.enqueue(transaction(1, to: ["a@example.com"]))
        h.server("250 ok\r\n550 no\r\n")
        #expect(h.server("354 go anyway\r\n") == ".\r\n")
        h.server("250 accepted an empty message\r\n")
        #expect(h.outcomes.first?.status == .rejected, "nothing was delivered, whatever the server said")
        #expect(h.outcomes.first?.recipients.first?.status == .rejected)
    }

    @Test func withoutPipeliningAllRejectedMeansNoDATAAtAll() {
        var h = Harness()
        h.establish(extensions: ["8BITMIME"])
        h.enqueue(transaction(1, to: ["a@example.com"]))
        h.server("250 ok\r\n")
        #expect(h.server("550 no\r\n") == "", "no DATA")
        #expect(h.outcomes.first?.status == .rejected)
        #expect(h.enqueue(transaction(2, to: ["b@example.com"])) == "RSET\r\n")
    }

    @Test func recipientsPast452AreDeferredWhileTheAcceptedGoAhead() {
        var h = Harness()
        h.establish()
        h.enqueue(transaction(1, to: ["a@example.com", "b@example.com", "c@example.com"]))
        h.server("250 ok\r\n250 ok\r\n452 4.5.3 too many recipients\r\n452 4.5.3 too many recipients\r\n")
        #expect(h.server("354 go\r\n").hasPrefix("Subject: hi"))
        h.server("250 queued\r\n")
        let outcome = h.outcomes[0]
        #expect(outcome.status == .accepted)
        #expect(outcome.recipients.map(\.status) == [.accepted, .deferred, .deferred], "deferred, not dropped")
    }

    @Test func aTransientFinalReplyDefersAndAPermanentOneRejects() {
        for (reply, status) in [("451 4.3.0 try later\r\n", DeliveryStatus.deferred), ("554 5.7.1 spam\r\n", .rejected)] {
            var h = Harness()
            h.establish()
            h.enqueue(transaction(1, to: ["a@example.com"]))
            h.server("250 ok\r\n250 ok\r\n354 go\r\n")
            h.server(reply)
            #expect(h.outcomes.first?.status == status)
            #expect(h.outcomes.first?.recipients.first?.status == status)
        }
    }

    @Test func aRejectedMAILFailsTheMessageWithItsReply() {
        var h = Harness()
        h.establish()
        h.enqueue(transaction(1, to: ["a@example.com"]))
        h.server("553 5.1.8 bad sender\r\n503 5.5.1 need MAIL\r\n503 5.5.1 need MAIL\r\n")
        #expect(h.outcomes.first?.status == .rejected)
        #expect(h.outcomes.first?.reply?.code == .mailboxNameNotAllowed)
        #expect(h.outcomes.first?.recipients.first?.reply?.code == .mailboxNameNotAllowed)
    }

    @Test func connectionLostAfterTheTerminatorIsUnknownAndBeforeItDeferred() {
        var h = Harness()
        h.establish()
        h.enqueue(transaction(1, to: ["a@example.com"]))
        h.enqueue(transaction(2, to: ["b@example.com"]))
        h.enqueue(transaction(3, to: ["c@example.com"]))
        h.server("250 ok\r\n250 ok\r\n354 go\r\n")  // 1's terminator and 2's envelope are written
        h.apply(h.machine.connectionClosed(error: nil))
        #expect(h.closeError?.kind == .connectionLost)
        let byID = Dictionary(uniqueKeysWithValues: h.outcomes.map { ($0.id, $0) })
        #expect(byID[1]?.status == .unknown, "never reported as sent, never silently retried")
        #expect(byID[1]?.recipients.first?.status == .unknown)
        #expect(byID[2]?.status == .deferred)
        #expect(h.notAttempted == [3], "work not started goes elsewhere")
    }

    @Test func a421MidSessionDefersInFlightWorkAndHandsBackTheRest() {
        var h = Harness()
        h.establish()
        h.enqueue(transaction(1, to: ["a@example.com"]))
        h.enqueue(transaction(2, to: ["b@example.com"]))
        h.server("250 ok\r\n421 4.3.2 shutting down\r\n")
        #expect(h.closeError?.kind == .serviceClosing)
        #expect(h.outcomes.first?.status == .deferred)
        #expect(h.outcomes.first?.reply?.code == .serviceNotAvailable)
        #expect(h.notAttempted == [2])
    }

    @Test func utf8AddressesNeedSMTPUTF8BeforeAnyByteIsSent() {
        var h = Harness()
        h.establish()
        let utf8 = transaction(1, to: ["josé@example.com"])
        #expect(h.enqueue(utf8) == "", "nothing reaches the wire")
        #expect(h.outcomes.first?.status == .rejected)
        #expect(h.outcomes.first?.error?.kind == .refusedLocally)

        var capable = Harness()
        capable.establish(extensions: ["PIPELINING", "SMTPUTF8", "8BITMIME"])
        #expect(capable.enqueue(utf8).hasPrefix("MAIL FROM:<sender@example.com> SMTPUTF8\r\nRCPT TO:<josé@example.com>"))
    }

    @Test func eightBitContentNeeds8BITMIME() {
        var h = Harness()
        h.establish(extensions: ["PIPELINING"])
        h.enqueue(transaction(1, to: ["a@example.com"], body: "Subject: café\r\n\r\nçà\r\n"))
        #expect(h.outcomes.first?.error?.kind == .refusedLocally)
        var capable = Harness()
        capable.establish(extensions: ["PIPELINING", "8BITMIME"])
        #expect(capable.enqueue(transaction(1, to: ["a@example.com"], body: "Subject: café\r\n\r\nçà\r\n"))
                .hasPrefix("MAIL FROM:<sender@example.com> BODY=8BITMIME\r\n"))
    }

    @Test func sizeIsDeclaredAndAnOversizedMessageRefusedLocally() {
        var h = Harness()
        h.establish(extensions: ["PIPELINING", "SIZE 100"])
        #expect(h.enqueue(transaction(1, to: ["a@example.com"], body: String(repeating: "x", count: 200))) == "")
        #expect(h.outcomes.last?.error?.kind == .refusedLocally)
        #expect(h.enqueue(transaction(2, to: ["a@example.com"])).hasPrefix("MAIL FROM:<sender@example.com> SIZE=22\r\n"))
    }

    @Test func timersFollowTheReplyAwaited() {
        var h = Harness()
        h.establish()
        h.timers = []
        h.enqueue(transaction(1, to: ["a@example.com"]))
        #expect(h.timers == [.seconds(300)], "MAIL")
        h.server("250 ok\r\n")
        #expect(h.timers.last == .seconds(300), "RCPT")
        h.server("250 ok\r\n")
        #expect(h.timers.last == .seconds(120), "DATA: 2 minutes")
        h.server("354 go\r\n")
        #expect(h.timers.last == .seconds(600), "after the final dot: 10 minutes")
    }

    @Test func aBatchOfRepliesSetsTheTimerOnceAfterItsWrite() {
        var h = Harness()
        h.establish()
        h.enqueue(transaction(1, to: ["a@example.com"]))
        // MAIL, RCPT and DATA answered in one read: the head of the queue moves three times,
        // and only where it ends (the end of data, 10 minutes) is a timer to set.
        let actions = h.machine.bytesReceived(Array("250 ok\r\n250 ok\r\n354 go\r\n".utf8))
        let timers = actions.filter { if case .armTimer = $0 { true } else if case .cancelTimer = $0 { true } else { false } }
        #expect(timers == [.armTimer(.seconds(600))])
        #expect(actions.last == .armTimer(.seconds(600)))
        if case .write = actions.first {} else { Issue.record("the content's write comes first: \(actions)") }
    }

    @Test func actionsAppendedToACallersArrayAreThoseReturned() {
        var returned = Harness()
        var appended = Harness()
        returned.establish()
        appended.establish()
        let test = transaction(1, to: ["a@example.com"])
        returned.bodies[1] = test
        let expectedOnEnqueue = returned.machine.transactionEnqueued(test.transaction)
        // Into a caller's array that already holds something: appended after it.
        var buffer: [Action] = [.cancelTimer]
        appended.machine.transactionEnqueued(test.transaction, into: &buffer)
        #expect(buffer == [.cancelTimer] + expectedOnEnqueue)
        // Into an empty one, event after event, as a connection reuses it.
        for reply in ["250 ok\r\n", "250 ok\r\n354 go\r\n", "250 queued\r\n"] {
            let expected = returned.machine.bytesReceived(Array(reply.utf8))
            buffer.removeAll(keepingCapacity: true)
            Array(reply.utf8).withUnsafeBytes { appended.machine.bytesReceived($0, into: &buffer) }
            #expect(buffer == expected, "after \(reply.debugDescription)")
        }
        #expect(!buffer.isEmpty, "the last reply finishes the transaction")
    }

    @Test func aPendingTransactionCanBeCancelledButNotAStartedOne() {
        var h = Harness()
        h.establish()
        h.enqueue(transaction(1, to: ["a@example.com"]))
        h.enqueue(transaction(2, to: ["b@example.com"]))
        let startedOne = h.machine.cancelPending(id: 1)
        let pendingOne = h.machine.cancelPending(id: 2)
        #expect(!startedOne)
        #expect(pendingOne)
        h.server("250 ok\r\n250 ok\r\n")
        #expect(h.server("354 go\r\n") == "Subject: hi\r\n\r\nHello\r\n.\r\n", "transaction 2 is gone")
    }

    @Test func a421ToAnEarlierCommandLeavesLaterPipelinedTransactionsUnattemptedNotUnknown() {
        var h = Harness()
        h.establish(extensions: ["PIPELINING", "CHUNKING"])
        h.enqueue(transaction(1, to: ["a@example.com"]))
        h.enqueue(transaction(2, to: ["b@example.com"]))  // RSET, MAIL, RCPT, BDAT and content, all written
        h.server("250 ok\r\n421 4.4.2 closing\r\n")   // MAIL of 1 accepted; its RCPT answered 421
        #expect(h.outcomes.map(\.id) == [1])
        #expect(h.outcomes.first?.status == .deferred, "transaction 1 was started: transient, not unknown")
        #expect(h.notAttempted == [2], "the server processes nothing after a 421: 2 goes elsewhere")
    }

    @Test func anIdleConnectionIsCheckedWithRSETBeforeContentGoesOnIt() {
        var h = Harness()
        h.establish(extensions: ["PIPELINING", "CHUNKING"])
        h.enqueue(transaction(1, to: ["a@example.com"]))
        h.server("250 ok\r\n250 ok\r\n250 queued\r\n")
        _ = h.apply(h.machine.idleConnectionReused())
        #expect(h.enqueue(transaction(2, to: ["b@example.com"])) == "RSET\r\n", "only the probe goes out")
        #expect(h.server("250 reset\r\n").hasPrefix("MAIL FROM:<sender@example.com>\r\n"), "then the transaction")
    }

    @Test func aServerThatLeftAnIdleConnectionCostsTheNextMessageNothing() {
        for answer in ["421 4.4.2 idle timeout\r\n", nil] {
            var h = Harness()
            h.establish(extensions: ["PIPELINING", "CHUNKING"])
            h.enqueue(transaction(1, to: ["a@example.com"]))
            h.server("250 ok\r\n250 ok\r\n250 queued\r\n")
            _ = h.apply(h.machine.idleConnectionReused())
            h.enqueue(transaction(2, to: ["b@example.com"]))
            if let answer {
                h.server(answer)
            } else {
                h.apply(h.machine.connectionClosed(error: nil))
            }
            #expect(h.notAttempted == [2], "never written, so it moves to another connection")
            #expect(h.outcomes.map(\.id) == [1])
            #expect(h.isClosed)
        }
    }

    @Test func aCancelledTransactionWithoutPipeliningStopsBeforeDATAAndTheNextOneResets() {
        var h = Harness(Machine.Configuration(ehloName: try! SMTPDomain("client.example"), tls: .none, usePipelining: false))
        h.establish(extensions: ["8BITMIME"])
        #expect(h.enqueue(transaction(1, to: ["a@example.com"])) == "MAIL FROM:<sender@example.com>\r\n")
        _ = h.apply(h.machine.cancelStarted(id: 1))
        #expect(h.server("250 ok\r\n") == "", "no RCPT, no DATA for a cancelled transaction")
        #expect(h.outcomes.first?.error?.kind == .cancelled)
        #expect(h.outcomes.first?.status == .deferred)
        #expect(h.enqueue(transaction(2, to: ["b@example.com"])) == "RSET\r\n", "the next transaction starts clean")
    }

    @Test func aCancelledTransactionAwaiting354ClosesInsteadOfSendingContent() {
        var h = Harness()
        h.establish()
        h.enqueue(transaction(1, to: ["a@example.com"]))
        h.enqueue(transaction(2, to: ["b@example.com"]))
        _ = h.apply(h.machine.cancelStarted(id: 1))
        #expect(h.server("250 ok\r\n250 ok\r\n354 go\r\n") == "", "no content is ever sent for it")
        #expect(h.outcomes.first?.error?.kind == .cancelled)
        #expect(h.isClosed)
        #expect(h.notAttempted == [2], "the one behind it moves to another connection")
    }

    @Test func cancellingAfterTheEndOfDataChangesNothing() {
        var h = Harness()
        h.establish(extensions: ["PIPELINING", "CHUNKING"])
        h.enqueue(transaction(1, to: ["a@example.com"]))  // BDAT with content: the end of data is written
        #expect(h.apply(h.machine.cancelStarted(id: 1)) == "")
        h.server("250 ok\r\n250 ok\r\n250 queued\r\n")
        #expect(h.outcomes.first?.status == .accepted, "its real outcome is reported")
    }
}
