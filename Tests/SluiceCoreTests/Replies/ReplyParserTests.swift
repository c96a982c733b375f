import Testing
@testable import SluiceCore

/// Feeds `transcript` to a fresh parser in the given pieces and collects every reply, or the
/// first error.
func parse(_ pieces: [ArraySlice<UInt8>], limits: ReplyParser.Limits = .init()) -> Result<[SMTPReply], SMTPProtocolError> {
    var parser = ReplyParser(limits: limits)
    var replies: [SMTPReply] = []
    do {
        for piece in pieces {
            parser.append(piece)
            while let reply = try parser.nextReply() { replies.append(reply) }
        }
        return .success(replies)
    } catch {
        return .failure(error)
    }
}

/// Every way of feeding `transcript`: whole, one byte at a time, and split at each position.
func everySplit(_ transcript: String) -> [[ArraySlice<UInt8>]] {
    let bytes = Array(transcript.utf8)
    var ways: [[ArraySlice<UInt8>]] = [[bytes[...]], bytes.indices.map { bytes[$0...$0] }]
    for cut in 1..<max(bytes.count, 1) { ways.append([bytes[..<cut], bytes[cut...]]) }
    return ways
}

@Suite("Reply parser")
struct ReplyParserTests {
    static let transcripts: [(String, [SMTPReply])] = [
        ("220 mail.example.com ESMTP ready\r\n", [SMTPReply(.serviceReady, nil, "mail.example.com ESMTP ready")]),
        ("250-mail.example.com\r\n250-PIPELINING\r\n250-SIZE 35882577\r\n250 CHUNKING\r\n",
         [SMTPReply(code: .ok, lines: ["mail.example.com", "PIPELINING", "SIZE 35882577", "CHUNKING"])]),
        ("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n",
         [SMTPReply(.ok, EnhancedStatusCode("2.1.0"), "Ok"), SMTPReply(.ok, EnhancedStatusCode("2.1.5"), "Ok"),
          SMTPReply(.startMailInput, nil, "End data with <CR><LF>.<CR><LF>")]),
        ("250\r\n250 \r\n", [SMTPReply(.ok, nil, ""), SMTPReply(.ok, nil, "")]),
        ("550-5.1.1 The email account that you tried to reach does not exist.\r\n550 5.1.1 Try again.\r\n",
         [SMTPReply(code: .mailboxUnavailable, enhancedCode: EnhancedStatusCode("5.1.1"),
                    lines: ["The email account that you tried to reach does not exist.", "Try again."])]),
        ("299 a code nobody named\r\n", [SMTPReply(SMTPStatusCode(rawValue: 299)!, nil, "a code nobody named")]),
        ("421 4.7.0 closing\r\n", [SMTPReply(.serviceNotAvailable, EnhancedStatusCode("4.7.0"), "closing")]),
        // An enhanced code whose class does not match the reply is just text.
        ("250 5.1.1 odd\r\n", [SMTPReply(.ok, nil, "5.1.1 odd")]),
        ("250 2.0.0\r\n", [SMTPReply(.ok, EnhancedStatusCode("2.0.0"), "")]),
    ]

    @Test(arguments: transcripts.indices)
    func parsesTheSameRepliesWhateverTheSplit(_ index: Int) throws {
        let (transcript, expected) = Self.transcripts[index]
        for pieces in everySplit(transcript) {
            #expect(try parse(pieces).get() == expected, "split \(pieces.map(\.count))")
        }
    }

    @Test func judgesCodesByTheirFirstDigit() throws {
        #expect(SMTPStatusCode(rawValue: 299)!.isPositiveCompletion)
        #expect(SMTPStatusCode(rawValue: 399)!.isPositiveIntermediate)
        #expect(SMTPStatusCode(rawValue: 471)!.isTransient)
        #expect(SMTPStatusCode(rawValue: 599)!.isPermanent)
        #expect(SMTPStatusCode(rawValue: 199) == nil)
        #expect(SMTPStatusCode(rawValue: 600) == nil)
        #expect(SMTPStatusCode.mustIssueStartTlsFirst.rawValue == 530)
        #expect(SMTPStatusCode.clientNotPermitted == SMTPStatusCode.temporaryAuthenticationFailure)
    }

    static let malformed: [(String, SMTPProtocolError.Kind)] = [
        ("abc hello\r\n", .malformedReply),
        ("25x hello\r\n", .malformedReply),
        ("150 too low\r\n", .malformedReply),
        ("650 too high\r\n", .malformedReply),
        ("25\r\n", .malformedReply),
        ("250+separator\r\n", .malformedReply),
        ("250-first\r\n251 second\r\n", .mixedReplyCodes),
        ("250 bare LF\n", .malformedReply),
        ("250 bare\rCR\r\n", .malformedReply),
        ("250 nul\u{0}\r\n", .malformedReply),
    ]

    @Test(arguments: malformed.indices)
    func malformedRepliesAreProtocolErrorsWhateverTheSplit(_ index: Int) {
        let (transcript, kind) = Self.malformed[index]
        for pieces in everySplit(transcript) {
            switch parse(pieces) {
            case .success(let replies): Issue.record("parsed \(replies) from \(transcript.debugDescription)")
            case .failure(let error): #expect(error.kind == kind, "\(error)")
            }
        }
    }

    @Test func anEndlessLineDoesNotGrowMemory() {
        var parser = ReplyParser()
        let chunk = [UInt8](repeating: UInt8(ascii: "a"), count: 1024)
        parser.append(Array("250 ".utf8))
        var failure: SMTPProtocolError?
        for _ in 0..<10_000 {
            parser.append(chunk)
            do { _ = try parser.nextReply() } catch { failure = error; break }
            #expect(parser.bufferedByteCount < 8 * 1024)
        }
        #expect(failure?.kind == .lineTooLong)
    }

    @Test func endlessContinuationLinesAreBounded() {
        var parser = ReplyParser()
        var failure: SMTPProtocolError?
        let line = Array("250-this reply never ends\r\n".utf8)
        for _ in 0..<1_000_000 {
            parser.append(line)
            do { _ = try parser.nextReply() } catch { failure = error; break }
        }
        #expect(failure?.kind == .replyTooLong)
        #expect(parser.bufferedByteCount <= ReplyParser.Limits().maximumReplyLength + line.count)
    }

    @Test func aFailedParserStaysFailed() {
        var parser = ReplyParser()
        parser.append(Array("xyz\r\n250 ok\r\n".utf8))
        #expect(throws: SMTPProtocolError.self) { try parser.nextReply() }
        #expect(throws: SMTPProtocolError.self) { try parser.nextReply() }
    }

    /// The lines of an unfinished reply are kept as positions in the parser's buffer, which it
    /// compacts as it reads: they must survive that, at every point a read can end.
    @Test func aReplyStillBeingReadSurvivesTheBufferBeingCompacted() throws {
        let before = String(repeating: "250 2.0.0 Ok: queued as 0123456789\r\n", count: 150)  // over 4 KB, read first
        let multiline = "250-first line\r\n250-" + String(repeating: "x", count: 3000) + "\r\n250 last line\r\n"
        let bytes = Array((before + multiline).utf8)
        for cut in stride(from: before.utf8.count, to: bytes.count, by: 7) {
            var parser = ReplyParser()
            var replies: [SMTPReply] = []
            // Everything read before the multiline reply, then its bytes in two reads, the
            // second large enough that the parser moves its buffer down first.
            for piece in [bytes[..<cut], bytes[cut...]] {
                parser.append(piece)
                while let reply = try parser.nextReply() { replies.append(reply) }
            }
            #expect(replies.count == 151)
            #expect(replies.last?.lines == ["first line", String(repeating: "x", count: 3000), "last line"], "cut at \(cut)")
            #expect(replies.dropLast().allSatisfy { $0.text == "Ok: queued as 0123456789" })
        }
    }

    @Test func unparsedBytesCanBeTakenForTheStartTLSCheck() throws {
        var parser = ReplyParser()
        parser.append(Array("220 go ahead\r\n250-injected\r\n".utf8))
        #expect(try parser.nextReply()?.code == .serviceReady)
        #expect(parser.hasPartialReply)
        #expect(parser.takeUnparsedBytes() == Array("250-injected\r\n".utf8))
        #expect(!parser.hasPartialReply)
    }

    @Test func repliesEncodeToWhatTheyParseFrom() throws {
        for (transcript, replies) in Self.transcripts where !transcript.hasPrefix("250 5.1.1") {
            let encoded = replies.flatMap(\.encoded)
            #expect(try parse([encoded[...]]).get() == replies)
        }
    }

    @Test func enhancedCodesParseStrictly() {
        #expect(EnhancedStatusCode("2.1.5")?.description == "2.1.5")
        #expect(EnhancedStatusCode("5.7.123")?.detail == 123)
        #expect(EnhancedStatusCode("3.1.1") == nil)
        #expect(EnhancedStatusCode("2.1") == nil)
        #expect(EnhancedStatusCode("2.1.1234") == nil)
        #expect(EnhancedStatusCode("2..1") == nil)
        #expect(EnhancedStatusCode("22.1.1") == nil)
    }
}

@Suite("EHLO capabilities")
struct CapabilitiesTests {
    @Test func readsEveryKnownKeywordAndKeepsUnknownOnes() {
        let reply = SMTPReply(code: .ok, lines: [
            "mx.example.com Hello client [192.0.2.1]", "PIPELINING", "SIZE 10240000", "8BITMIME", "SMTPUTF8",
            "CHUNKING", "BINARYMIME", "STARTTLS", "AUTH PLAIN LOGIN CRAM-MD5", "AUTH=LOGIN", "ENHANCEDSTATUSCODES",
            "DSN", "REQUIRETLS", "X-EXPERIMENT a b",
        ])
        let capabilities = SMTPCapabilities(ehloReply: reply)
        #expect(capabilities.serverName == "mx.example.com")
        #expect(capabilities.pipelining && capabilities.chunking && capabilities.binaryMIME)
        #expect(capabilities.eightBitMIME && capabilities.smtpUTF8 && capabilities.startTLS)
        #expect(capabilities.enhancedStatusCodes && capabilities.deliveryStatusNotifications && capabilities.requireTLS)
        #expect(capabilities.maximumMessageSize == 10_240_000)
        #expect(capabilities.authenticationMechanisms == ["PLAIN", "LOGIN", "CRAM-MD5"])
        #expect(capabilities.extensions["X-EXPERIMENT"] == ["a", "b"])
        #expect(capabilities.supports("pipelining"))
    }

    @Test func aBareServerOffersNothing() {
        let capabilities = SMTPCapabilities(ehloReply: SMTPReply(.ok, nil, "tiny.example"))
        #expect(!capabilities.pipelining && !capabilities.startTLS && capabilities.maximumMessageSize == nil)
        #expect(capabilities.authenticationMechanisms.isEmpty)
        #expect(SMTPCapabilities(ehloReply: SMTPReply(code: .ok, lines: ["x", "SIZE"])).maximumMessageSize == 0)
    }
}
