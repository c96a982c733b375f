import SluiceCore
import SluiceMIME
import Testing

@Suite("Mailbox")
struct MailboxTests {
    @Test(arguments: [
        ("ada@example.com", nil, "ada@example.com"),
        ("<ada@example.com>", nil, "ada@example.com"),
        ("Ada Lovelace <ada@example.com>", "Ada Lovelace", "ada@example.com"),
        ("  Ada   Lovelace   <ada@example.com>  ", "Ada Lovelace", "ada@example.com"),
        ("\"Lovelace, Ada\" <ada@example.com>", "Lovelace, Ada", "ada@example.com"),
        ("\"Ada \\\"the Countess\\\"\" <ada@example.com>", "Ada \"the Countess\"", "ada@example.com"),
        ("=?utf-8?q?Ad=C3=A1?= <ada@example.com>", "Adá", "ada@example.com"),
        ("=?UTF-8?B?w4lsaXNl?= =?UTF-8?B?IE1hcnRpbg==?= <e@example.com>", "Élise Martin", "e@example.com"),
        ("=?iso-8859-1?q?Jos=E9?= Smith <j@example.com>", "José Smith", "j@example.com"),
        ("ada@example.com (Ada Lovelace)", "Ada Lovelace", "ada@example.com"),
        ("Ada (the first programmer) <ada@example.com>", "Ada", "ada@example.com"),
        ("\"a b\"@example.com", nil, "\"a b\"@example.com"),
        ("Zoë <zoë@bücher.example>", "Zoë", "zoë@bücher.example"),
    ] as [(String, String?, String)])
    func mailboxesParseAsPeopleWriteThem(text: String, name: String?, address: String) throws {
        let mailbox = try Mailbox(text)
        #expect(mailbox.name == name)
        #expect(mailbox.address.address == address)
    }

    @Test(arguments: [
        ("", AddressError.Kind.empty),
        ("Ada", .missingAt),
        ("Ada <ada@example.com", .invalidLocalPart),
        ("Ada <ada@example.com> trailing", .invalidDisplayName),
        ("team: a@example.com, b@example.com;", .invalidDisplayName),
        ("a@example.com>\r\nRCPT TO:<x@y.z>", .controlCharacter),
        ("Evil\r\nBcc: x@y.z <a@example.com>", .controlCharacter),
        ("a@example.com> AUTH=<x@y.z>", .invalidDisplayName),
        ("a@example.com, b@example.com", .invalidDomain),
        ("a..b@example.com", .invalidLocalPart),
        ("a@-example.com", .invalidDomain),
        ("\"unterminated <a@example.com>", .invalidLocalPart),
    ])
    func invalidMailboxesAreTypedErrors(text: String, kind: AddressError.Kind) {
        #expect { try Mailbox(text) } throws: { ($0 as? AddressError)?.kind == kind }
    }

    @Test func aDisplayNameWithALineBreakIsRefused() {
        #expect { try Mailbox(name: "Ada\nBcc: eve@example.com", address: "ada@example.com") } throws: {
            ($0 as? AddressError)?.kind == .controlCharacter
        }
    }

    @Test func listsSplitOnlyAtTopLevelCommas() throws {
        let list = try Mailbox.list("a@example.com, \"Lovelace, Ada\" <ada@example.com>,Bob <bob@example.com> ")
        #expect(list.map(\.address.address) == ["a@example.com", "ada@example.com", "bob@example.com"])
        #expect(list.map(\.name) == [nil, "Lovelace, Ada", "Bob"])
        #expect { try Mailbox.list(" , ") } throws: { ($0 as? AddressError)?.kind == .empty }
        #expect { try Mailbox.list("a@example.com, not an address") } throws: { ($0 as? AddressError)?.kind == .missingAt }
    }

    @Test func internationalDomainsBecomeALabelsByLibIDN2() throws {
        // The A-labels are IDNA2008's (RFC 5891), as `idn2` and Python's `idna` give them.
        let mailbox = try Mailbox("info@bücher.example")
        #expect(mailbox.asciiAddress?.address == "info@xn--bcher-kva.example")
        #expect(try mailbox.envelopeAddress(smtpUTF8: false).address == "info@xn--bcher-kva.example")
        #expect(try mailbox.envelopeAddress(smtpUTF8: true).address == "info@bücher.example")
        #expect(!mailbox.requiresSMTPUTF8)
        // Non-transitional: ß stays ß (xn--fa-hia), it is not mapped to "ss".
        #expect(try Mailbox("a@faß.de").asciiAddress?.address == "a@xn--fa-hia.de")
        #expect(try Mailbox("a@例え.テスト").asciiAddress?.address == "a@xn--r8jz45g.xn--zckzah")
        // Upper case is mapped by UTS #46 before conversion.
        #expect(try Mailbox("a@BÜCHER.example").asciiAddress?.address == "a@xn--bcher-kva.example")
    }

    @Test func aUTF8LocalPartNeedsSMTPUTF8() throws {
        let mailbox = try Mailbox("δοκιμή@παράδειγμα.δοκιμή")
        #expect(mailbox.requiresSMTPUTF8)
        #expect(mailbox.asciiAddress == nil)
        #expect { try mailbox.envelopeAddress(smtpUTF8: false) } throws: { ($0 as? AddressError)?.kind == .needsSMTPUTF8 }
        #expect(try mailbox.envelopeAddress(smtpUTF8: true).address == "δοκιμή@παράδειγμα.δοκιμή")
    }

    @Test func aDomainIDNARejectsIsAnError() {
        // A label with a disallowed code point (U+2488, "1." as one character) fails IDNA.
        #expect { try Mailbox("a@\u{2488}example.com") } throws: { ($0 as? AddressError)?.kind == .invalidDomain }
    }
}
