import Foundation
import SluiceCore
import SluiceMIME
import Testing

/// A generator with a fixed seed, so an encoding is repeatable.
struct SeededGenerator: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {  // SplitMix64
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

extension Message {
    /// Encoded with a fixed seed and date, so the bytes are repeatable.
    func encodedForTest(_ options: EncodingOptions = EncodingOptions(), seed: UInt64 = 1) throws -> RawMessage {
        var message = self
        if message.date == nil { message.date = Date(timeIntervalSince1970: 1_795_000_000) }
        var generator = SeededGenerator(seed: seed)
        return try message.encoded(options, using: &generator)
    }

    var text: String { String(decoding: (try? encodedForTest())?.bytes ?? [], as: UTF8.self) }
}

@Suite("Message encoding")
struct MessageEncodingTests {
    let ada = try! Mailbox("Ada Lovelace <ada@example.com>")
    let bob = try! Mailbox("bob@example.net")

    @Test func aPlainMessageHasTheStandardHeadersInOrder() throws {
        var message = Message(from: ada, to: [bob], subject: "Hello", text: "Hi Bob,\nsee you.")
        message.messageID = "1@example.com"
        let raw = try message.encodedForTest()
        #expect(String(decoding: raw.bytes, as: UTF8.self) == """
            Date: Wed, 18 Nov 2026 11:06:40 +0000\r
            From: Ada Lovelace <ada@example.com>\r
            To: bob@example.net\r
            Subject: Hello\r
            Message-ID: <1@example.com>\r
            MIME-Version: 1.0\r
            Content-Type: text/plain; charset=utf-8\r
            Content-Transfer-Encoding: 7bit\r
            \r
            Hi Bob,\r
            see you.\r

            """)
        #expect(raw.messageID == "<1@example.com>")
    }

    @Test func datesAreRFC5322InUTC() throws {
        // Checked against `date -u -R -d @…`.
        for (seconds, text) in [(0, "Thu, 1 Jan 1970 00:00:00 +0000"), (951_782_400, "Tue, 29 Feb 2000 00:00:00 +0000"),
                                (1_795_000_000, "Wed, 18 Nov 2026 11:06:40 +0000"), (-1, "Wed, 31 Dec 1969 23:59:59 +0000"),
                                (4_107_542_399, "Sun, 28 Feb 2100 23:59:59 +0000")] {
            var message = Message(from: ada, to: [bob])
            message.date = Date(timeIntervalSince1970: TimeInterval(seconds))
            #expect(message.text.hasPrefix("Date: \(text)\r\n"), "\(seconds)")
        }
    }

    @Test func bccIsNeverWrittenButIsARecipient() throws {
        let eve = try Mailbox("Eve <eve@example.org>")
        let message = Message(from: ada, to: [bob], cc: [try Mailbox("carol@example.com")], bcc: [eve, bob])
        // `try`, not `text`'s `try?`: an encoder that threw would make the checks below pass on "".
        let text = String(decoding: try message.encodedForTest().bytes, as: UTF8.self)
        #expect(text.contains("\r\nTo: bob@example.net\r\n") && text.contains("\r\nCc: carol@example.com\r\n"), "\(text)")
        #expect(!text.lowercased().contains("bcc"))
        #expect(!text.contains("eve@example.org"))
        #expect(message.recipients.map(\.address.address) == ["bob@example.net", "carol@example.com", "eve@example.org"])
    }

    @Test func generatedMessageIDsAreUniqueAndUseTheSendersASCIIDomain() throws {
        let from = try Mailbox("news@bücher.example")
        var seen = Set<String>()
        for _ in 0..<1_000 {
            let id = try Message(from: from, to: [bob]).encoded().messageID ?? ""
            #expect(id.hasPrefix("<") && id.hasSuffix("@xn--bcher-kva.example>"))
            seen.insert(id)
        }
        #expect(seen.count == 1_000)
    }

    @Test func aNonASCIISubjectIsEncodedWordsOfAtMost75Characters() throws {
        let subject = "Réunion trimestrielle : résultats — 第3四半期の結果と今後の計画について 🚀 and some ASCII words to fold"
        let text = String(decoding: try Message(from: ada, to: [bob], subject: subject).encodedForTest().bytes, as: UTF8.self)
        let header = try #require(text.components(separatedBy: "\r\nSubject:").dropFirst().first?
            .components(separatedBy: "\r\nMessage-ID").first, "a Subject header: \(text)")
        let isASCII = header.unicodeScalars.allSatisfy { $0.isASCII }
        #expect(isASCII, "the header goes out as ASCII: \(header)")
        let words = header.split(whereSeparator: { $0 == " " || $0 == "\r\n" }).filter { $0.hasPrefix("=?") }
        #expect(!words.isEmpty, "the non-ASCII words are encoded words")
        for word in words {
            #expect(word.count <= 75)
            #expect(word.hasPrefix("=?utf-8?B?") || word.hasPrefix("=?utf-8?Q?"))
        }
        #expect(header.contains("and some ASCII words to fold"), "plain words stay readable")
    }

    @Test func qOrBWhicheverIsShorter() throws {
        // Mostly ASCII: Q is shorter. Short or all CJK: B is shorter (Q 9, B 8 for "Café").
        #expect(Message(from: ada, to: [bob], subject: "Zürich-based").text.contains("Subject: =?utf-8?Q?Z=C3=BCrich-based?="))
        #expect(Message(from: ada, to: [bob], subject: "Café").text.contains("Subject: =?utf-8?B?Q2Fmw6k=?="))
        #expect(Message(from: ada, to: [bob], subject: "日本語").text.contains("Subject: =?utf-8?B?5pel5pys6Kqe?="))
    }

    @Test(.needsPeers(python: ["email"])) func textThatLooksLikeAnEncodedWordIsEncodedSoItReadsBackLiterally() async throws {
        let subject = "literal =?utf-8?q?x?= here"
        let raw = try Message(from: ada, to: [bob], subject: subject).encodedForTest()
        #expect(!String(decoding: raw.bytes, as: UTF8.self).contains("Subject: literal =?utf-8?q?x?= here"))
        // Python's email package decodes the header back to exactly what was given, not "x".
        guard let view = try await PythonEmail.read(raw) else { return }
        #expect(view.subject == subject)
    }

    @Test func displayNamesAreAtomsQuotedOrEncoded() throws {
        let message = Message(from: try Mailbox(name: "Lovelace, Ada", address: "ada@example.com"),
                              to: [try Mailbox(name: "Zoë Martin", address: "z@example.com"),
                                   try Mailbox(name: "Say \"hi\"", address: "s@example.com")])
        let text = message.text
        #expect(text.contains("From: \"Lovelace, Ada\" <ada@example.com>\r\n"))
        #expect(text.contains("=?utf-8?Q?Zo=C3=AB_Martin?= <z@example.com>"))
        #expect(text.contains("\"Say \\\"hi\\\"\" <s@example.com>"))
    }

    @Test func longAddressListsFoldBetweenMailboxes() throws {
        let many = try (0..<12).map { try Mailbox(name: "Person \($0)", address: "person\($0)@example.com") }
        let text = Message(from: ada, to: many).text
        let toHeader = text.components(separatedBy: "\r\nMIME")[0].components(separatedBy: "To: ")[1]
        #expect(toHeader.contains(",\r\n "))
        for line in toHeader.components(separatedBy: "\r\n") { #expect(line.utf8.count <= 78) }
    }

    @Test func headerInjectionIsRefusedBeforeAnythingIsWritten() throws {
        var message = Message(from: ada, to: [bob], subject: "Hi\r\nBcc: eve@example.org")
        #expect { try message.encoded() } throws: { ($0 as? MessageError)?.kind == .invalidHeader }
        message.subject = "Hi\nX-Evil: 1"
        #expect { try message.encoded() } throws: { ($0 as? MessageError)?.kind == .invalidHeader }
        message.subject = "NUL\u{0}"
        #expect { try message.encoded() } throws: { ($0 as? MessageError)?.kind == .invalidHeader }
        message.subject = "ok"
        for header in [Header("X-Campaign", "a\r\nBcc: eve@example.org"), Header("X-Bad Name", "v"),
                       Header("X-Colon:", "v"), Header("", "v"), Header("X-É", "v"), Header("X\r\nBcc", "v")] {
            message.headers = [header]
            #expect { try message.encoded() } throws: { ($0 as? MessageError)?.kind == .invalidHeader }
        }
        for name in ["Bcc", "bcc", "From", "Content-Type", "MIME-Version", "Message-ID"] {
            message.headers = [Header(name, "x@example.org")]
            #expect { try message.encoded() } throws: { ($0 as? MessageError)?.kind == .reservedHeader }
        }
    }

    @Test func idsAndTypesAreChecked() throws {
        var message = Message(from: ada, to: [bob])
        for id in ["no-at-sign", "a@b@", "<a b@c>", "a@b\r\nX: y", "@example.com", "a..b@example.com"] {
            message.messageID = id
            #expect { try message.encoded() } throws: { ($0 as? MessageError)?.kind == .invalidMessageID }
        }
        message.messageID = "<ok.1@[192.0.2.1]>"
        #expect(try message.encoded().messageID == "<ok.1@[192.0.2.1]>")
        message.references = ["a@b", "bad id"]
        #expect { try message.encoded() } throws: { ($0 as? MessageError)?.kind == .invalidMessageID }
        message.references = []
        message.attachments = [Attachment(data: [1], fileName: "x", contentType: "application/pdf; x=\"\r\ny\"")]
        #expect { try message.encoded() } throws: { ($0 as? MessageError)?.kind == .invalidContentType }
        message.attachments = [.inline(data: [1], contentID: "no id")]
        #expect { try message.encoded() } throws: { ($0 as? MessageError)?.kind == .invalidMessageID }
        message.attachments = [Attachment(data: [1], fileName: "a\r\nb.txt")]
        #expect { try message.encoded() } throws: { ($0 as? MessageError)?.kind == .invalidHeader }
    }

    @Test func aUTF8LocalPartNeedsSMTPUTF8AndDomainsAreALabelsWithoutIt() throws {
        let message = Message(from: try Mailbox("Zoë <info@bücher.example>"), to: [try Mailbox("δοκιμή@example.gr")])
        #expect { try message.encoded() } throws: { ($0 as? MessageError)?.kind == .needsSMTPUTF8 }
        #expect(message.requiresSMTPUTF8)
        let utf8 = String(decoding: try message.encodedForTest(EncodingOptions(smtpUTF8: true)).bytes, as: UTF8.self)
        #expect(utf8.contains("To: δοκιμή@example.gr\r\n"))
        #expect(utf8.contains("<info@bücher.example>"))
        let ascii = Message(from: try Mailbox("Zoë <info@bücher.example>"), to: [bob]).text
        #expect(ascii.contains("<info@xn--bcher-kva.example>"))
    }

    @Test func transferEncodingsArePerPart() throws {
        func encoding(_ text: String, _ options: EncodingOptions = EncodingOptions()) throws -> String {
            let raw = String(decoding: try Message(from: ada, to: [bob], text: text).encodedForTest(options).bytes, as: UTF8.self)
            return raw.components(separatedBy: "Content-Transfer-Encoding: ")[1].components(separatedBy: "\r\n")[0]
        }
        #expect(try encoding("plain ASCII") == "7bit")
        #expect(try encoding("Grüße aus Köln, mostly ASCII text here") == "quoted-printable")
        #expect(try encoding("日本語のテキストです。日本語のテキストです。") == "base64")
        #expect(try encoding("Grüße", EncodingOptions(allow8BitMIME: true)) == "8bit")
        #expect(try encoding(String(repeating: "x", count: 1_200)) == "quoted-printable", "a line too long for 7bit")
        #expect(try encoding("NUL \u{0} in text", EncodingOptions(allow8BitMIME: true)) == "quoted-printable")
    }

    @Test func quotedPrintableKeepsLinesAt76AndEscapesTrailingWhitespace() throws {
        let body = "Résumé " + String(repeating: "a", count: 150) + " \nnext line ends with a tab\t\n" + String(repeating: "=", count: 4)
        let raw = try Message(from: ada, to: [bob], text: body).encodedForTest()
        let content = String(decoding: raw.bytes[raw.headerLength...], as: UTF8.self)
        for line in content.components(separatedBy: "\r\n") { #expect(line.utf8.count <= 76) }
        #expect(content.contains("=20\r\n"))
        #expect(content.contains("tab=09\r\n"))
        #expect(content.contains("=3D=3D=3D=3D"))
    }
}
