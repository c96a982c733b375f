import Testing
import SluiceCore
@testable import SluiceSink
import SluiceTestSupport

@Suite("Server state machine")
struct ServerStateMachineTests {
    static let session = "EHLO client.example\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n"
        + "Subject: t\r\n\r\n..dotted line\r\nbody\r\n.\r\nQUIT\r\n"

    @Test func pipelinedSessionGetsOneReplyPerCommandInOrder() {
        var h = ServerHarness()
        #expect(h.connect().hasPrefix("220 localhost ESMTP"))
        let replies = h.client(Self.session)
        #expect(ServerHarness.codes(replies) == ["250", "250", "250", "250", "354", "250", "221"])
        #expect(replies.contains("250-PIPELINING") && replies.contains("250-CHUNKING") && replies.contains("250 DSN"))
        #expect(h.closed)
        #expect(h.stored.count == 1)
        #expect(h.stored[0].from?.address == "s@example.com")
        #expect(h.stored[0].recipients.map(\.address) == ["a@example.com", "b@example.com"])
        #expect(String(decoding: h.stored[0].content, as: UTF8.self) == "Subject: t\r\n\r\n.dotted line\r\nbody\r\n")
    }

    @Test func everySplitOfTheClientBytesGivesTheSameRepliesAndMessage() {
        var reference = ServerHarness()
        _ = reference.connect()
        let expected = reference.client(Self.session)
        let bytes = Array(Self.session.utf8)
        for cut in 0...bytes.count {
            var h = ServerHarness()
            _ = h.connect()
            let replies = h.client(Array(bytes[..<cut])) + h.client(Array(bytes[cut...]))
            #expect(replies == expected, "split at \(cut)")
            #expect(h.stored == reference.stored)
        }
        var oneByOne = ServerHarness()
        _ = oneByOne.connect()
        let replies = bytes.map { oneByOne.client([$0]) }.joined()
        #expect(replies == expected)
    }

    @Test func aMessageIsAnsweredOnlyAfterItIsStored() {
        var h = ServerHarness()
        h.holdDeliveries = true
        _ = h.connect()
        let before = h.client(Self.session)
        #expect(ServerHarness.codes(before) == ["250", "250", "250", "250", "354"], "no 250 and no 221 yet")
        #expect(h.waiting != nil)
        let after = h.apply(h.machine.deliveryFinished(.stored(id: "Q1")))
        #expect(ServerHarness.codes(after) == ["250", "221"])
        #expect(after.contains("queued as Q1"))

        var failing = ServerHarness()
        failing.holdDeliveries = true
        _ = failing.connect()
        _ = failing.client(Self.session)
        let refused = failing.apply(failing.machine.deliveryFinished(.failed(SMTPReply(.localErrorInProcessing, nil, "disk full"))))
        #expect(ServerHarness.codes(refused) == ["451", "221"])
    }

    @Test func aDrainingSessionIsAnsweredByItsNextCommandQUITWithA221() {
        var quitting = ServerHarness()
        _ = quitting.connect()
        _ = quitting.client("EHLO c\r\n")
        #expect(quitting.apply(quitting.machine.drainRequested()).isEmpty, "between commands, the next command decides")
        #expect(!quitting.closed)
        #expect(ServerHarness.codes(quitting.client("QUIT\r\n")) == ["221"])
        #expect(quitting.closed)

        var mailing = ServerHarness()
        _ = mailing.connect()
        _ = mailing.client("EHLO c\r\n")
        _ = mailing.apply(mailing.machine.drainRequested())
        let refused = mailing.client("MAIL FROM:<s@example.com>\r\nQUIT\r\n")
        #expect(ServerHarness.codes(refused) == ["421"], "nothing new starts, and nothing after the 421 is read")
        #expect(mailing.closed)

        var silent = ServerHarness()
        _ = silent.connect()
        _ = silent.client("EHLO c\r\n")
        _ = silent.apply(silent.machine.drainRequested())
        let settled = silent.apply(silent.machine.drainSettled())
        #expect(ServerHarness.codes(settled) == ["421"] && silent.closed, "the moment is over: \(settled)")
    }

    @Test func contentInFlightAtTheDrainGetsItsReplyThenQUITOrThe421() {
        var h = ServerHarness()
        h.holdDeliveries = true
        _ = h.connect()
        _ = h.client(Self.session)
        _ = h.apply(h.machine.drainRequested())
        #expect(ServerHarness.codes(h.apply(h.machine.deliveryFinished(.stored(id: "Q1")))) == ["250", "221"],
                "the QUIT sent behind the content is answered")

        var late = ServerHarness()
        late.holdDeliveries = true
        _ = late.connect()
        _ = late.client("EHLO c\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<a@example.com>\r\nDATA\r\nx\r\n.\r\n")
        _ = late.apply(late.machine.drainRequested())
        _ = late.apply(late.machine.drainSettled())
        #expect(!late.closed, "the message being stored is not cut off")
        let replies = late.apply(late.machine.deliveryFinished(.stored(id: "Q1")))
        #expect(ServerHarness.codes(replies) == ["250", "421"] && late.closed, "\(replies)")
    }

    @Test func smuggledSecondMessageIsNeverStored() {
        for attack in ["a\n.\nMAIL FROM:<evil@example.com>\r\n", "a\r.\rMAIL FROM:<evil@example.com>\r\n",
                       "a\r\n.\nMAIL FROM:<evil@example.com>\r\n", "a\n.\r\nMAIL FROM:<evil@example.com>\r\n"] {
            var h = ServerHarness()
            _ = h.connect()
            let replies = h.client("EHLO c\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<a@example.com>\r\nDATA\r\n" + attack
                                   + "RCPT TO:<x@example.com>\r\nDATA\r\nevil\r\n.\r\n")
            #expect(h.stored.isEmpty, "\(attack.debugDescription)")
            #expect(replies.contains("521 5.5.2"))
            #expect(h.closed)
        }
    }

    @Test func nothingSentBefore354IsContent() {
        var h = ServerHarness()
        _ = h.connect()
        // DATA is refused (no recipient), so the lines behind it are commands, not content.
        let replies = h.client("EHLO c\r\nMAIL FROM:<s@example.com>\r\nDATA\r\nSubject: x\r\n.\r\n")
        #expect(ServerHarness.codes(replies) == ["250", "250", "554", "500", "500"])
        #expect(h.stored.isEmpty)
    }

    @Test func startTLSWithPipelinedPlaintextAnswersOnlyThe220() {
        var configuration = Server.Configuration()
        configuration.startTLS = true
        var h = ServerHarness(configuration)
        _ = h.connect()
        _ = h.client("EHLO c\r\n")
        let replies = h.client("STARTTLS\r\nRSET\r\nMAIL FROM:<a@example.com>\r\n")
        #expect(ServerHarness.codes(replies) == ["220"])
        #expect(h.startedTLS)
        // Plaintext that arrives before the handshake starts is dropped, not run after it.
        #expect(h.client("RSET\r\nNOOP\r\n") == "")
        // After TLS nothing of the plaintext survives: MAIL needs a new EHLO.
        #expect(h.apply(h.machine.tlsEstablished()) == "", "nothing buffered in plaintext is answered")
        #expect(ServerHarness.codes(h.client("MAIL FROM:<a@example.com>\r\n")) == ["503"])
        let ehlo = h.client("EHLO c\r\n")
        #expect(!ehlo.contains("STARTTLS"), "not offered twice")
    }

    @Test func garbageGetsErrorsNeverACrash() {
        var h = ServerHarness()
        _ = h.connect()
        #expect(ServerHarness.codes(h.client("FOO\r\nBAR baz\r\n\r\n")) == ["500", "500", "500"])
        #expect(ServerHarness.codes(h.client([0x45, 0x48, 0x00, 0x4C, 13, 10])) == ["500"])
        #expect(ServerHarness.codes(h.client([0x4D, 0x41, 0x49, 0x4C, 0x20, 0xFF, 0xFE, 13, 10])) == ["500"])
        #expect(ServerHarness.codes(h.client("MAIL FROM:<a@b.com>\r\n")) == ["503"], "EHLO first")
        #expect(ServerHarness.codes(h.client("EHLO\r\n")) == ["501"])
        #expect(!h.closed)
    }

    @Test func verbsAreCaseInsensitiveInASCIIOnly() {
        var h = ServerHarness()
        _ = h.connect()
        // RFC 5321 2.4: verbs in any case. Only ASCII folds: "ſ" (U+017F) uppercases to "S"
        // in Unicode, and a server that folded it would take "ſTARTTLS" for STARTTLS.
        let replies = h.client("eHlO c\r\nmail FROM:<a@example.com>\r\nRcPt TO:<b@example.com>\r\nrset\r\n"
                               + "\u{17F}TARTTLS\r\nnoop\r\nMAILX\r\nMAI\r\n")
        #expect(ServerHarness.codes(replies) == ["250", "250", "250", "250", "500", "250", "500", "500"])
    }

    @Test func anEndlessCommandLineIsAnsweredOnceAndNotBuffered() {
        var h = ServerHarness()
        _ = h.connect()
        var replies = ""
        let chunk = [UInt8](repeating: UInt8(ascii: "A"), count: 64 * 1024)
        for _ in 0..<160 {  // 10 MiB with no line end
            replies += h.client(chunk)
            #expect(h.machine.bufferedInputCount <= 128 * 1024)
        }
        replies += h.client("\r\nNOOP\r\n")
        #expect(ServerHarness.codes(replies) == ["500", "250"])
    }

    @Test func oneMegabyteOfBase64AfterAUTHIsRefused() {
        var configuration = Server.Configuration()
        configuration.users = ["u": "p"]
        var h = ServerHarness(configuration)
        _ = h.connect()
        _ = h.client("EHLO c\r\n")
        #expect(ServerHarness.codes(h.client("AUTH PLAIN\r\n")) == ["334"])
        let flood = String(repeating: "QUFB", count: 256 * 1024) + "\r\n"
        let replies = h.client(flood)
        #expect(ServerHarness.codes(replies).first == "500")
        #expect(ServerHarness.codes(h.client("NOOP\r\n")) == ["250"])
    }

    @Test func limitsOnRecipientsAndSize() {
        var configuration = Server.Configuration()
        configuration.maximumRecipients = 2
        configuration.maximumMessageSize = 10
        var h = ServerHarness(configuration)
        _ = h.connect()
        let replies = h.client("EHLO c\r\nMAIL FROM:<s@example.com> SIZE=11\r\nMAIL FROM:<s@example.com>\r\n"
                               + "RCPT TO:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nRCPT TO:<c@example.com>\r\n"
                               + "DATA\r\n0123456789ABCDEF\r\n.\r\n")
        #expect(ServerHarness.codes(replies) == ["250", "552", "250", "250", "250", "452", "354", "552"])
        #expect(h.stored.isEmpty, "a message over the limit is never stored, even partly")
        #expect(replies.contains("250 SIZE 10") || replies.contains("250-SIZE 10"))
    }

    @Test func bdatChunksAreReadExactlyEvenWhenRefused() {
        var h = ServerHarness()
        _ = h.connect()
        let refused = h.client("EHLO c\r\nBDAT 5 LAST\r\nQUIT?\r\n")
        #expect(ServerHarness.codes(refused) == ["250", "503", "500"], "the five bytes were data, not a command")
        let replies = h.client("MAIL FROM:<s@example.com> BODY=BINARYMIME\r\nRCPT TO:<a@example.com>\r\nBDAT 6\r\nhello\nBDAT 8 LAST\r\n world\r\n")
        #expect(ServerHarness.codes(replies) == ["250", "250", "250", "250"])
        #expect(h.stored.first?.content == Array("hello\n world\r\n".utf8), "BINARYMIME content is taken as is")
    }

    @Test func authPlainAndLoginAgainstConfiguredUsers() {
        var configuration = Server.Configuration()
        configuration.users = ["tim": "tanstaaftanstaaf"]
        configuration.requireAuthentication = true
        var h = ServerHarness(configuration)
        _ = h.connect()
        #expect(h.client("EHLO c\r\n").contains("AUTH PLAIN LOGIN"))
        #expect(ServerHarness.codes(h.client("MAIL FROM:<a@example.com>\r\n")) == ["530"])
        #expect(ServerHarness.codes(h.client("AUTH PLAIN AHRpbQB3cm9uZw==\r\n")) == ["535"])
        #expect(ServerHarness.codes(h.client("AUTH LOGIN\r\n")) == ["334"])
        #expect(ServerHarness.codes(h.client("dGlt\r\n")) == ["334"])
        #expect(ServerHarness.codes(h.client("dGFuc3RhYWZ0YW5zdGFhZg==\r\n")) == ["235"])
        #expect(ServerHarness.codes(h.client("AUTH PLAIN AHRpbQB0YW5zdGFhZnRhbnN0YWFm\r\n")) == ["503"], "no AUTH after success")
        #expect(ServerHarness.codes(h.client("MAIL FROM:<a@example.com>\r\n")) == ["250"])

        var cancelled = ServerHarness(configuration)
        _ = cancelled.connect()
        _ = cancelled.client("EHLO c\r\n")
        #expect(ServerHarness.codes(cancelled.client("AUTH PLAIN\r\n*\r\n")) == ["334", "501"])
        #expect(ServerHarness.codes(cancelled.client("AUTH PLAIN !!!\r\n")) == ["501"])
    }

    @Test func authOverPlaintextIsRefusedWhenTLSIsOffered() {
        var configuration = Server.Configuration()
        configuration.users = ["u": "p"]
        configuration.startTLS = true
        var h = ServerHarness(configuration)
        _ = h.connect()
        #expect(!h.client("EHLO c\r\n").contains("AUTH"))
        #expect(ServerHarness.codes(h.client("AUTH PLAIN AHUAcA==\r\n")) == ["538"])
    }

    @Test func faultsAreInjectedWhereTheyAreScripted() {
        var faults = ScriptedFaults()
        faults.onRecipient["bad@example.com"] = .reply(SMTPReply(.mailboxUnavailable, EnhancedStatusCode("5.1.1"), "no"))
        faults.onRecipient["later@example.com"] = .reply(SMTPReply(.mailboxBusy, nil, "busy"))
        faults.onEndOfData = .closeWithoutReply
        var h = ServerHarness(faults: faults)
        _ = h.connect()
        let replies = h.client("EHLO c\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<bad@example.com>\r\nRCPT TO:<later@example.com>\r\n"
                               + "RCPT TO:<ok@example.com>\r\nDATA\r\nx\r\n.\r\n")
        #expect(ServerHarness.codes(replies) == ["250", "250", "550", "450", "250", "354"], "no reply after the terminator")
        #expect(h.closed)
        #expect(h.stored.isEmpty)

        var phase = ScriptedFaults()
        phase.onCommand["MAIL"] = .replyAndClose(SMTPReply(.serviceNotAvailable, nil, "going away"))
        var p = ServerHarness(faults: phase)
        _ = p.connect()
        #expect(ServerHarness.codes(p.client("EHLO c\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<a@example.com>\r\n")) == ["250", "421"])
        #expect(p.closed)
    }

    @Test func idleTimeoutIs421AndClose() {
        var h = ServerHarness()
        _ = h.connect()
        #expect(ServerHarness.codes(h.apply(h.machine.timeoutFired())) == ["421"])
        #expect(h.closed)
    }

    /// The idle timer running out while the sink stores a message (an fsync under load took
    /// longer than the soak's 2 s) is the sink's wait, not the client's: the message gets its
    /// 250. A 421 there answered content already stored, and the client sent it again.
    @Test func theIdleTimeoutNeverAnswersAMessageBeingStored() {
        var h = ServerHarness()
        h.holdDeliveries = true
        _ = h.connect()
        _ = h.client("EHLO c\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<a@example.com>\r\nDATA\r\nx\r\n.\r\n")
        #expect(h.waiting != nil)
        #expect(h.apply(h.machine.timeoutFired()).isEmpty && !h.closed)
        let replies = h.apply(h.machine.deliveryFinished(.stored(id: "Q1")))
        #expect(ServerHarness.codes(replies) == ["250"], "\(replies)")
        #expect(ServerHarness.codes(h.apply(h.machine.timeoutFired())) == ["421"] && h.closed, "idle after its reply")
    }

    /// Found by Fuzz/FuzzServerCommands on its own seed: when the terminator arrived in a
    /// read of its own, the machine asked for an empty write before the delivery.
    @Test(arguments: 1...31)
    func everyWriteHoldsWholeRepliesHoweverTheInputIsSplit(split: Int) {
        let session = Array("EHLO c.example\r\nMAIL FROM:<a@example.com> SIZE=20\r\nRCPT TO:<b@example.org>\r\nDATA\r\n"
            .utf8) + Array("Subject: x\r\n\r\nbody\r\n..dot\r\n.\r\nQUIT\r\n".utf8)
        var machine = Server(configuration: .init())
        var writes = machine.connected(secure: false).compactMap(\.written)
        for start in stride(from: 0, to: session.count, by: split) {
            for action in machine.bytesReceived(session[start..<min(session.count, start + split)]) {
                if let bytes = action.written { writes.append(bytes) }
                if case .deliver = action { writes += machine.deliveryFinished(.stored(id: "1")).compactMap(\.written) }
            }
        }
        for bytes in writes {
            #expect(bytes.count >= 5 && bytes.suffix(2) == Array("\r\n".utf8), "a write of \(bytes.count) bytes")
        }
        #expect(ServerHarness.codes(writes.map { String(decoding: $0, as: UTF8.self) }.joined())
                == ["220", "250", "250", "250", "354", "250", "221"])
    }
}

@Suite("Server state machine: what a driver needs against hostile clients")
struct ServerHostileClientTests {
    @Test func inputProgressTellsEachHalfSentLineAndContentApart() {
        var h = ServerHarness()
        _ = h.connect()
        #expect(h.machine.inputProgress == .idle)
        h.client("NO")
        let first = h.machine.inputSequence
        #expect(h.machine.inputProgress == .commandLine)
        h.client("OP\r\nNO")
        #expect(h.machine.inputProgress == .commandLine)
        #expect(h.machine.inputSequence != first, "a new line is half-sent, not the same one")
        h.client("OP\r\n")
        #expect(h.machine.inputProgress == .idle)
        h.client("EHLO c\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
        #expect(h.machine.inputProgress == .content)
        h.client("x\r\n.\r\n")
        #expect(h.machine.inputProgress == .idle)
    }

    @Test func aDeadlineClosesWith421() {
        var h = ServerHarness()
        _ = h.connect()
        h.client("MAIL FROM:<slow")
        #expect(ServerHarness.codes(h.apply(h.machine.deadlineExceeded())) == ["421"])
        #expect(h.closed)
    }

    @Test func afterAFailedAUTHNothingIsReadUntilTheHoldEnds() {
        var configuration = Server.Configuration()
        configuration.users = ["ada": "right"]
        configuration.authenticationRequiresTLS = false
        var h = ServerHarness(configuration)
        _ = h.connect()
        h.client("EHLO c\r\n")
        var failures: [Int] = []
        let bad = "AUTH PLAIN " + Base64.encode(Array("\u{0}ada\u{0}wrong".utf8)) + "\r\n"
        for action in h.machine.bytesReceived(Array((bad + "NOOP\r\n").utf8)) {
            if case .authenticationFailed(let count) = action { failures.append(count) }
        }
        #expect(failures == [1])
        #expect(h.machine.bufferedInputCount == 6, "the NOOP waits")
        #expect(ServerHarness.codes(h.apply(h.machine.holdEnded())) == ["250"])
    }
}

/// Inputs Fuzz/FuzzServerCommands found that crashed or misled the server machine; each
/// stays here so it can never come back.
@Suite("Server state machine: fuzz findings")
struct ServerFuzzFindingTests {
    /// `MAIL FROM:<a> =` trapped (index out of range): splitting "=" gave no key at all.
    @Test(arguments: ["=", "==", "=8BITMIME", "SIZE=", "BODY=", "AUTH="])
    func aMailParameterWithoutAKeyOrValueIsRefusedAndTheSessionGoesOn(parameter: String) {
        var h = ServerHarness()
        _ = h.connect()
        let replies = h.client("EHLO c\r\nMAIL FROM:<a@example.com> \(parameter)\r\nMAIL FROM:<a@example.com>\r\nNOOP\r\n")
        let codes = ServerHarness.codes(replies)
        #expect(codes.count == 4, "\(replies)")
        if parameter == "AUTH=" {
            #expect(codes.dropFirst().first == "250", "RFC 4954 §5: AUTH= is accepted and ignored")
        } else {
            #expect(codes.dropFirst().first.map { $0.hasPrefix("5") } == true, "\(replies)")
            #expect(codes.dropFirst(2).first == "250", "the next MAIL is taken")
        }
        #expect(!h.closed)
    }

    /// A BDAT message with a bare CR was stored; one relayed on by DATA could smuggle.
    @Test(arguments: ["abc\r\u{FF}\n", "abc\ndef\r\n", "abc\r\n\r"])
    func bareLineEndingsInBDATContentAreRefusedUnlessBinary(content: String) {
        let bytes = Array(content.utf8)
        for body in ["", " BODY=8BITMIME", " BODY=BINARYMIME"] {
            var h = ServerHarness()
            _ = h.connect()
            let envelope = "EHLO c\r\nMAIL FROM:<a@example.com>\(body)\r\nRCPT TO:<b@example.com>\r\n"
            // Split over two chunks, so a CR at the end of one and LF at the start of the
            // next still count as one CRLF.
            let replies = h.client(Array((envelope + "BDAT 2\r\n").utf8) + bytes.prefix(2)
                + Array("BDAT \(bytes.count - 2) LAST\r\n".utf8) + bytes.dropFirst(2) + Array("NOOP\r\n".utf8))
            let codes = ServerHarness.codes(replies)
            if body == " BODY=BINARYMIME" {
                #expect(codes.suffix(3) == ["250", "250", "250"], "stored as sent: \(replies)")
                #expect(h.stored.map(\.content) == [bytes])
            } else {
                #expect(codes.suffix(3) == ["250", "554", "250"], "\(replies)")
                #expect(h.stored.isEmpty)
            }
        }
    }

    @Test func aCRLFSplitAcrossBDATChunksIsNotBare() {
        var h = ServerHarness()
        _ = h.connect()
        let replies = h.client("EHLO c\r\nMAIL FROM:<a@example.com>\r\nRCPT TO:<b@example.com>\r\n"
            + "BDAT 3\r\nab\rBDAT 5 LAST\r\n\ncd\r\n")
        #expect(ServerHarness.codes(replies).suffix(2) == ["250", "250"], "\(replies)")
        #expect(h.stored.map(\.content) == [Array("ab\r\ncd\r\n".utf8)])
    }

    @Test func thePathIsCutAtItsBracketsAndTheParametersTrimmed() {
        var h = ServerHarness()
        _ = h.connect()
        let replies = h.client("EHLO c\r\n"
            + "MAIL FROM:  <a@example.com>   SIZE=10  \r\n"      // spaces around both: 250
            + "RCPT TO:<ü@exämple.com>\r\n"                       // UTF-8 without SMTPUTF8: 553
            + "RCPT TO:<b@example.com\r\n"                        // no closing bracket: 501
            + "RCPT TO: b@example.com\r\n"                        // no brackets: 501
            + "RCPT TO:<\u{301}b@example.com>\r\n"               // a mark after the bracket: 553
            + "RCPT TO:<>\r\n"                                    // an empty forward path: 501
            + "RSET\r\nMAIL FROM:<a@example.com> SMTPUTF8 SIZE=x\r\n"  // a bad parameter: 501
            + "MAIL FROM:<a@example.com> SMTPUTF8\r\nRCPT TO:<ü@exämple.com>\r\n")  // 250 250
        #expect(ServerHarness.codes(replies) == ["250", "250", "553", "501", "501", "553", "501", "250", "501", "250", "250"],
                "\(replies)")
    }

    @Test func mailParametersMatchInAnyASCIICaseAndNothingElse() {
        var h = ServerHarness()
        _ = h.connect()
        let replies = h.client("EHLO c\r\n"
            + "MAIL FROM:<a@example.com> size=10 body=8bitmime\r\nRSET\r\n"   // any ASCII case: 250
            + "MAIL FROM:<a@example.com> \u{17F}ize=10\r\n"                     // "ſize" is not SIZE: 555
            + "MAIL FROM:<a@example.com> BODY=8b\u{131}tm\u{131}me\r\n"       // nor "8bıtmıme" 8BITMIME: 504
            + "MAIL FROM:<a@example.com> =\r\n"                                 // a lone "=": 555
            + "MAIL FROM:<a@example.com> SIZE=\r\n")                            // an empty SIZE: 501
        #expect(ServerHarness.codes(replies) == ["250", "250", "250", "555", "504", "555", "501"], "\(replies)")
    }

    @Test func theFromAndToKeywordsMatchInAnyASCIICaseAndNothingElse() {
        var h = ServerHarness()
        _ = h.connect()
        let replies = h.client("EHLO c\r\nMAIL fRoM:<a@example.com>\r\nRCPT to:<b@example.com>\r\nRSET\r\n"
            + "MAIL \u{17F}ROM:<a@example.com>\r\nMAIL FROM\u{131}<a@example.com>\r\n")
        #expect(ServerHarness.codes(replies) == ["250", "250", "250", "250", "501", "501"], "\(replies)")
    }
}

extension Server.Action {
    /// The bytes of a write action.
    var written: [UInt8]? {
        if case .write(let bytes) = self { bytes } else { nil }
    }
}

@Suite("Server state machine: the bare line ending check")
struct BareLineEndingTests {
    /// The plain byte-by-byte rule the word-at-a-time check must agree with.
    static func reference(_ bytes: [UInt8]) -> Bool {
        var previous: UInt8 = 0
        for byte in bytes {
            if byte == 10, previous != 13 { return true }
            if previous == 13, byte != 10 { return true }
            previous = byte
        }
        return previous == 13
    }

    @Test func agreesWithTheByteByByteRuleWhereverTheLineEndingsFall() {
        // A bare CR, a bare LF and CRLFs at every offset of contents up to four blocks of
        // sixteen and a bit, so that each falls inside a block, at its edges, across two
        // blocks and in the bytes after the last.
        var checked = 0
        for length in 0...70 {
            for position in 0..<max(length, 1) {
                for insert: [UInt8] in [[13], [10], [13, 10], [10, 13], [13, 13, 10]] {
                    var bytes = [UInt8](repeating: UInt8(ascii: "a"), count: length)
                    let end = min(position + insert.count, length)
                    bytes.replaceSubrange(min(position, length)..<end, with: insert.prefix(end - min(position, length)))
                    #expect(Server.containsBareLineEnding(bytes) == Self.reference(bytes), "\(bytes)")
                    checked += 1
                }
            }
        }
        var generator = SystemRandomNumberGenerator()
        // 0x8A and 0x8D share CR's and LF's low bits; 0x0B and 0x0C after an LF or a CR are
        // what a word-wide zero-byte test with a borrow would also mark.
        let alphabet: [UInt8] = [13, 10, 13, 10, UInt8(ascii: "x"), UInt8(ascii: "y"), 0x8A, 0x8D, 0x0B, 0x0C]
        for _ in 0..<2000 {
            let bytes = (0..<Int.random(in: 0...200, using: &generator)).map { _ in alphabet.randomElement(using: &generator)! }
            #expect(Server.containsBareLineEnding(bytes) == Self.reference(bytes), "\(bytes)")
            checked += 1
        }
        // Valid texts, whose lines hold the bytes nearest CR and LF, then each with one byte
        // made a CR or an LF: random bytes alone are nearly always invalid somewhere.
        let near: [UInt8] = [0x0B, 0x0C, 0x0E, 0x09, 0x8A, 0x8D, 0x00, 0xFF, UInt8(ascii: "x")]
        for _ in 0..<500 {
            var bytes: [UInt8] = []
            for _ in 0..<Int.random(in: 1...12, using: &generator) {
                bytes += (0..<Int.random(in: 0...20, using: &generator)).map { _ in near.randomElement(using: &generator)! }
                bytes += [13, 10]
            }
            #expect(!Server.containsBareLineEnding(bytes), "\(bytes)")
            bytes[Int.random(in: 0..<bytes.count, using: &generator)] = Bool.random(using: &generator) ? 13 : 10
            #expect(Server.containsBareLineEnding(bytes) == Self.reference(bytes), "\(bytes)")
            checked += 2
        }
        #expect(!Server.containsBareLineEnding(Array("line one\r\nline two\r\n".utf8)))
        #expect(Server.containsBareLineEnding(Array("line one\r\nline\rtwo\r\n".utf8)))
        #expect(checked > 15_000)
    }
}
