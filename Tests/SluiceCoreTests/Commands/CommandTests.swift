import Testing
@testable import SluiceCore

@Suite("Envelope addresses")
struct EnvelopeAddressTests {
    @Test(arguments: [
        "user@example.com", "first.last+tag@sub.example.co.uk", "\"john doe\"@example.com",
        "\"a\\\"b\"@example.com", "postmaster@[192.0.2.1]", "x@[IPv6:2001:db8::1]", "!#$%&'*+-/=?^_`{|}~@example.com",
        "a@b", "user@xn--bcher-kva.example",
    ])
    func acceptsValidPaths(_ address: String) throws {
        let parsed = try EnvelopeAddress(address)
        #expect(parsed.address == address)
        #expect(!parsed.requiresSMTPUTF8)
    }

    static let invalid: [(String, AddressError.Kind)] = [
        ("a@b.com>\r\nRCPT TO:<x@y>", AddressError.Kind.controlCharacter),
        ("a@b.com> AUTH=<x@y>", .invalidDomain),
        ("a@b.com>", .invalidDomain),
        ("<a@b.com>", .invalidLocalPart),
        ("a b@example.com", .invalidLocalPart),
        ("a@exa mple.com", .invalidDomain),
        ("a\u{0}@example.com", .controlCharacter),
        ("a\n@example.com", .controlCharacter),
        ("", .empty),
        ("no-at-sign", .missingAt),
        ("@example.com", .invalidLocalPart),
        ("user@", .invalidDomain),
        (".user@example.com", .invalidLocalPart),
        ("us..er@example.com", .invalidLocalPart),
        ("user.@example.com", .invalidLocalPart),
        ("user@-example.com", .invalidDomain),
        ("user@example..com", .invalidDomain),
        ("user@[300.1.1.1]", .invalidDomain),
        ("user@[IPv6:1::2::3]", .invalidDomain),
        ("\"unterminated@example.com", .invalidLocalPart),
        (String(repeating: "a", count: 65) + "@example.com", .tooLong),
        ("a@" + String(repeating: "b", count: 64) + ".com", .invalidDomain),
        ("a@" + Array(repeating: String(repeating: "b", count: 60), count: 5).joined(separator: "."), .tooLong),
    ]

    @Test(arguments: invalid)
    func rejectsWhatIsNotAPathBeforeItReachesTheWire(_ address: String, _ kind: AddressError.Kind) {
        #expect { try EnvelopeAddress(address) } throws: { ($0 as? AddressError)?.kind == kind }
    }

    @Test func pathLengthIsBoundedAt256Octets() throws {
        // RFC 5321 §4.5.3.1.3: a path is at most 256 octets, its angle brackets included, so
        // an address of 254 fits and one of 255 does not. Local part 64, labels at most 63.
        let local = String(repeating: "a", count: 64)
        func address(length: Int) -> String {
            let lastLabel = length - 64 - 1 - 2 * 64
            return local + "@" + String(repeating: "b", count: 63) + "." + String(repeating: "c", count: 63) + "."
                + String(repeating: "d", count: lastLabel)
        }
        #expect(address(length: 254).utf8.count == 254 && address(length: 255).utf8.count == 255)
        #expect(try EnvelopeAddress(address(length: 254)).address.utf8.count + 2 == 256, "exactly 256 with brackets fits")
        #expect { try EnvelopeAddress(address(length: 255)) } throws: { ($0 as? AddressError)?.kind == .tooLong }
    }

    @Test(arguments: [
        ("user@example.com", "user", "example.com"),
        ("\"a@b\"@example.com", "\"a@b\"", "example.com"),
        ("\"q\\\"@x\"@[IPv6:2001:db8::1]", "\"q\\\"@x\"", "[IPv6:2001:db8::1]"),
        ("用户@例子.广告", "用户", "例子.广告"),
        ("a@b", "a", "b"),
    ])
    func theLocalPartEndsAtTheAtOutsideItsQuotes(_ address: String, _ local: String, _ domain: String) throws {
        let parsed = try EnvelopeAddress(address)
        #expect(parsed.localPart == local)
        #expect(parsed.domain == domain)
        var wire: [UInt8] = []
        parsed.encode(into: &wire)
        #expect(wire == Array(address.utf8))
        #expect(parsed == (try EnvelopeAddress(address)))
        #expect(parsed != (try EnvelopeAddress(local + "@other.example")))
    }

    @Test func utf8AddressesAreFlaggedForSMTPUTF8() throws {
        let address = try EnvelopeAddress("用户@例子.广告")
        #expect(address.requiresSMTPUTF8)
        #expect(try EnvelopeAddress("josé@example.com").requiresSMTPUTF8)
    }
}

@Suite("Command encoding")
struct CommandEncodingTests {
    private func line(_ command: SMTPCommand) -> String { String(decoding: command.encoded, as: UTF8.self) }

    @Test func encodesEachCommandAsOneLine() throws {
        var mail = MailParameters(size: 1024, body: .eightBitMIME, smtpUTF8: true, returnContent: .headers)
        try mail.setEnvelopeID("QQ314159+=x")
        var rcpt = RecipientParameters(notify: .on(success: true, failure: true, delay: false))
        try rcpt.setOriginalRecipient(EnvelopeAddress("a+b@example.com"))
        #expect(line(.ehlo(try SMTPDomain("client.example"))) == "EHLO client.example\r\n")
        #expect(line(.helo(try SMTPDomain("192.0.2.1"))) == "HELO [192.0.2.1]\r\n")
        #expect(line(.ehlo(try SMTPDomain("::1"))) == "EHLO [IPv6:::1]\r\n")
        #expect(line(.mail(from: try EnvelopeAddress("s@example.com"), mail))
                == "MAIL FROM:<s@example.com> SIZE=1024 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=QQ314159+2B+3Dx\r\n")
        #expect(line(.mail(from: nil, MailParameters())) == "MAIL FROM:<>\r\n")
        #expect(line(.recipient(try EnvelopeAddress("r@example.com"), rcpt))
                == "RCPT TO:<r@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+2Bb@example.com\r\n")
        #expect(line(.recipient(try EnvelopeAddress("r@example.com"), RecipientParameters(notify: .never)))
                == "RCPT TO:<r@example.com> NOTIFY=NEVER\r\n")
        #expect(line(.data) == "DATA\r\n")
        #expect(line(.bdat(size: 1234, last: true)) == "BDAT 1234 LAST\r\n")
        #expect(line(.bdat(size: 10, last: false)) == "BDAT 10\r\n")
        #expect(line(.reset) == "RSET\r\n")
        #expect(line(.noop) == "NOOP\r\n")
        #expect(line(.quit) == "QUIT\r\n")
        #expect(line(.startTLS) == "STARTTLS\r\n")
        #expect(line(.auth(mechanism: "PLAIN", initialResponse: Array("\0user\0pass".utf8))) == "AUTH PLAIN AHVzZXIAcGFzcw==\r\n")
        #expect(line(.auth(mechanism: "EXTERNAL", initialResponse: [])) == "AUTH EXTERNAL =\r\n")
        #expect(line(.auth(mechanism: "LOGIN", initialResponse: nil)) == "AUTH LOGIN\r\n")
        #expect(line(.authResponse(Array("user".utf8))) == "dXNlcg==\r\n")
        #expect(line(.authCancel) == "*\r\n")
    }

    @Test func onlyGroupEndingCommandsEndAPipelinedGroup() throws {
        let address = try EnvelopeAddress("a@b.c")
        #expect(!SMTPCommand.mail(from: address, MailParameters()).endsPipelineGroup)
        #expect(!SMTPCommand.recipient(address, RecipientParameters()).endsPipelineGroup)
        #expect(!SMTPCommand.reset.endsPipelineGroup)
        for command: SMTPCommand in [.ehlo(try SMTPDomain("x.example")), .data, .startTLS, .quit, .noop,
                                     .auth(mechanism: "PLAIN", initialResponse: nil)] {
            #expect(command.endsPipelineGroup, "\(command.verb)")
        }
    }

    @Test func parametersRefuseInjection() throws {
        var mail = MailParameters()
        #expect(throws: AddressError.self) { try mail.setEnvelopeID("id\r\nRCPT TO:<x@y>") }
        var rcpt = RecipientParameters()
        #expect(throws: AddressError.self) { try rcpt.setOriginalRecipient(EnvelopeAddress("ü@example.com")) }
        #expect(throws: AddressError.self) { try SMTPDomain("bad name") }
        #expect(throws: AddressError.self) { try SMTPDomain("host\r\nRSET") }
        #expect(throws: AddressError.self) { try SMTPDomain("exämple.com") }
        #expect(throws: AddressError.self) { try SMTPDomain("[not-a-literal]") }
        #expect(!SMTPCommand.isValidMechanismName("PLAIN\r\nRSET"))
        #expect(SMTPCommand.isValidMechanismName("SCRAM-SHA-256"))
    }
}

@Suite("Base64")
struct Base64Tests {
    @Test func matchesTheRFC4648TestVectors() {
        let vectors = [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("foob", "Zm9vYg=="),
                       ("fooba", "Zm9vYmE="), ("foobar", "Zm9vYmFy")]
        for (plain, encoded) in vectors {
            #expect(Base64.encode(Array(plain.utf8)) == encoded)
            #expect(Base64.decode(encoded) == Array(plain.utf8))
        }
    }

    @Test func decodingIsStrict() {
        for bad in ["Zg=", "Zg===", "Z===", "Zm9v!", "Zg==Zg==", "Zm 9v", "Zm9v\r\n"] {
            #expect(Base64.decode(bad) == nil, "\(bad.debugDescription)")
        }
    }
}
