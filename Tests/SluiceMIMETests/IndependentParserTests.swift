import Foundation
import PropertyBased
import SluiceMIME
import SluiceTestSupport
import SluiceTransport
import Testing

/// Python's standard `email` package (policy `default`) reads what Sluice writes, and sees
/// exactly what was built: subject, addresses, display names, bodies, attachment bytes, the
/// intended headers and no others, and no defects.
@Suite("MIME read back by Python's email package")
struct IndependentParserTests {
    /// Compares Python's view of a message with the message it was built from.
    static func compare(_ view: PythonView, with message: Message, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(view.error == nil, sourceLocation: sourceLocation)
        #expect(view.defects == [], sourceLocation: sourceLocation)
        #expect(view.subject == message.subject, sourceLocation: sourceLocation)
        // Addresses and display names. Python 3.11's policy.default phrase parser keeps the
        // whitespace between adjacent encoded-words (RFC 2047 §6.2 says to drop it) and turns
        // each run of whitespace into one space, so its names are compared without
        // whitespace; the legacy API, which follows §6.2, must give every name exactly.
        func withoutWhitespace(_ text: String) -> String {
            String(String.UnicodeScalarView(text.unicodeScalars.filter { !$0.properties.isWhitespace }))
        }
        for (header, built, seen) in [("From", [message.from], view.from), ("Sender", message.sender.map { [$0] } ?? [], view.sender),
                                      ("To", message.to, view.to), ("Cc", message.cc, view.cc), ("Reply-To", message.replyTo, view.replyTo)] {
            #expect(seen?.map(\.address) ?? [] == built.map { $0.asciiAddress!.address }, "\(header)", sourceLocation: sourceLocation)
            #expect(seen?.map { withoutWhitespace($0.name) } ?? [] == built.map { withoutWhitespace($0.name ?? "") },
                    "\(header)", sourceLocation: sourceLocation)
            let legacy = view.legacyNames?[header] ?? nil
            #expect(legacy ?? [] == built.map { $0.name ?? "" }, "\(header) (legacy API)", sourceLocation: sourceLocation)
        }
        let hasBody = message.textBody != nil || message.htmlBody != nil
        #expect(view.text == message.textBody.map(expectedText) ?? (hasBody || !message.attachments.isEmpty ? nil : "\n"),
                sourceLocation: sourceLocation)
        #expect(view.html == message.htmlBody.map(expectedText), sourceLocation: sourceLocation)
        let attachments = view.attachments ?? []
        #expect(attachments.count == message.attachments.count, sourceLocation: sourceLocation)
        for (seen, built) in zip(attachments, message.attachments) {
            // Python's get_filename unquotes the value (dropping surrounding quotes or angle
            // brackets, which RFC 2231 does not ask for) and strips whitespace around it.
            #expect(seen.fileName == built.fileName.map { stripped(pythonUnquoted($0)) }, sourceLocation: sourceLocation)
            #expect(seen.contentType == built.contentType, sourceLocation: sourceLocation)
            switch built.source {
            case .bytes(let bytes): #expect(seen.bytes == bytes, sourceLocation: sourceLocation)
            case .file(let path): #expect(seen.bytes == Array(FileManager.default.contents(atPath: path) ?? Data()),
                                          sourceLocation: sourceLocation)
            }
            switch built.disposition {
            case .attachment:
                #expect(seen.disposition == "attachment", sourceLocation: sourceLocation)
            case .inline(let contentID):
                #expect(seen.disposition == "inline", sourceLocation: sourceLocation)
                #expect(seen.contentID == "<\(contentID)>", sourceLocation: sourceLocation)
            }
        }
        // Exactly the intended top-level headers: the standard ones and the custom ones.
        var expected = ["Date", "From"]
        if message.sender != nil { expected.append("Sender") }
        if !message.replyTo.isEmpty { expected.append("Reply-To") }
        if !message.to.isEmpty { expected.append("To") }
        if !message.cc.isEmpty { expected.append("Cc") }
        if message.subject != nil { expected.append("Subject") }
        expected.append("Message-ID")
        if !message.inReplyTo.isEmpty { expected.append("In-Reply-To") }
        if !message.references.isEmpty { expected.append("References") }
        if message.priority != .normal { expected += ["X-Priority", "Importance"] }
        expected += message.headers.map(\.name)
        expected += ["MIME-Version", "Content-Type", "Content-Transfer-Encoding"]
        var seenNames = view.headerNames
        if view.contentType?.hasPrefix("multipart/") == true { expected.removeLast() }
        #expect(seenNames == expected, sourceLocation: sourceLocation)
        seenNames = (view.headers ?? []).filter { $0[0] != "Subject" }.map { $0[1] }
        for (name, value) in zip(message.headers.map(\.name), message.headers.map(\.value)) {
            #expect(view.headers?.contains([name, value]) == true, "\(name): \(value)", sourceLocation: sourceLocation)
        }
    }

    @Test(.needsPeers(python: ["email"])) func representativeMessagesReadBackExactly() async throws {
        let messages = try RepresentativeMessages.all()
        guard let views = try await PythonEmail.read(try messages.map { try $0.message.encodedForTest() }) else { return }
        for ((name, message), view) in zip(messages, views) {
            Self.compare(view, with: message)
            #expect(view.error == nil, "\(name)")
        }
    }

    @Test func representativeMessagesMatchTheirGoldenFiles() throws {
        // The golden files were written by this encoder and then checked by hand and by
        // Python (the test above). SLUICE_UPDATE_GOLDEN=1 rewrites them after an intended change.
        let update = ProcessInfo.processInfo.environment["SLUICE_UPDATE_GOLDEN"] == "1"
        let directory = packageRoot() + "/Tests/SluiceMIMETests/Golden"
        for (name, message) in try RepresentativeMessages.all() {
            let encoded = try message.encodedForTest()
            checkWireRules(encoded)
            let path = "\(directory)/\(name).eml"
            if update {
                try Data(encoded.bytes).write(to: URL(fileURLWithPath: path))
                continue
            }
            let golden = try #require(FileManager.default.contents(atPath: path), "missing \(path)")
            #expect(Array(golden) == encoded.bytes, "\(name).eml differs from the encoder's output")
        }
    }

    @Test(.needsPeers(python: ["email"])) func injectionAttemptsStayInsideTheirHeader() async throws {
        // Encoded CR/LF inside encoded-words, specials in names, a Bcc: everything decodes to
        // text in the header it was given for; Python sees exactly the intended headers.
        var message = Message(from: try Mailbox(name: "Eve\u{2028}Bcc: x@evil.example", address: "eve@example.com"),
                              to: [try Mailbox(name: "=?utf-8?q?a=0D=0ABcc:_x@evil.example?=", address: "a@example.com")],
                              bcc: [try Mailbox("hidden@example.com")],
                              subject: "=?utf-8?q?Hi=0D=0ABcc:_x@evil.example?= \u{85} \u{2028}\tend", text: "body")
        message.headers = [Header("X-Note", "value =?utf-8?q?=0D=0AX-Injected:_1?=; (comment) <angle> \"quote\"")]
        message.replyTo = [try Mailbox(name: "\"Quoted\" <tricky>, also@example.com", address: "r@example.com")]
        let encoded = try message.encodedForTest()
        checkWireRules(encoded)
        #expect(!String(decoding: encoded.bytes, as: UTF8.self).contains("hidden@example.com"))
        guard let view = try await PythonEmail.read(encoded) else { return }
        Self.compare(view, with: message)
    }

    @Test(.needsPeers(python: ["email"])) func fileNamesWithRFC2231CharactersAreQuotedAndReadBack() async throws {
        // Found by the property test below in CI: `filename=0''` is a valid RFC 2045 token, but
        // Python takes a bare `'`, `*` or `%` for a broken RFC 2231 value and drops the name.
        for fileName in ["0''", "'-", "it's.txt", "a*b.txt", "100%.txt", "utf-8''x.txt"] {
            var message = Message(from: try Mailbox("a@example.com"), to: [try Mailbox("b@example.com")], text: "see attached")
            message.attachments = [Attachment(data: [1, 2, 3], fileName: fileName)]
            let encoded = try message.encodedForTest()
            checkWireRules(encoded)
            #expect(String(decoding: encoded.bytes, as: UTF8.self).contains("filename=\"\(fileName)\""), "\(fileName)")
            guard let view = try await PythonEmail.read(encoded) else { return }
            Self.compare(view, with: message)
        }
    }

    // MARK: Properties

    static let characters: [Character] = Array("aZ09 .,:;!?'\"()<>[]@\\=?_-/\t" + "éüßçñøÅ" + "ДЖЯ" + "日本語中文" + "🚀👍🏽🇫🇷" + "\u{301}\u{200B}\u{00A0}")
    static let unicodeText = Gen<Character?>.element(of: characters).map { $0 ?? "a" }.array(of: 0...90).map { String($0) }
    static let lineText = Gen<Character?>.element(of: characters + ["\n", "\r\n", "\r"]).map { $0 ?? "a" }
        .array(of: 0...400).map { String($0) }

    @Test(.needsPeers(python: ["email"])) func randomUnicodeSubjectsNamesAndBodiesReadBackExactly() async throws {
        let built = Locked<[Message]>([])
        await propertyCheck(count: 250, input: Self.unicodeText, Self.unicodeText, Self.lineText, Self.unicodeText) {
            subject, name, body, fileName in
            let trimmed = name.trimmingCharacters(in: .whitespaces)
            var message = Message(from: try Mailbox(name: trimmed.isEmpty ? nil : trimmed, address: "from@example.com"),
                                  to: [try Mailbox(name: subject.isEmpty ? nil : subject, address: "to@bücher.example")],
                                  subject: subject, text: body, html: "<p>\(body)</p>")
            if !fileName.isEmpty {
                message.attachments = [Attachment(data: Array(body.utf8) + [0, 255, 13], fileName: fileName)]
            }
            let encoded = try message.encodedForTest()
            checkWireRules(encoded)
            built.withLock { $0.append(message) }
        }
        let messages = built.withLock { $0 }
        guard let views = try await PythonEmail.read(try messages.map { try $0.encodedForTest() }) else { return }
        for (message, view) in zip(messages, views) {
            Self.compare(view, with: message)
        }
    }
}

/// What Python's `email.utils.unquote` makes of a parameter value.
func pythonUnquoted(_ text: String) -> String {
    guard text.count > 1 else { return text }
    if text.hasPrefix("\""), text.hasSuffix("\"") {
        return String(text.dropFirst().dropLast()).replacingOccurrences(of: "\\\\", with: "\\")
            .replacingOccurrences(of: "\\\"", with: "\"")
    }
    if text.hasPrefix("<"), text.hasSuffix(">") { return String(text.dropFirst().dropLast()) }
    return text
}

/// Without leading and trailing Unicode whitespace, as Python's `str.strip()` leaves it.
func stripped(_ text: String) -> String {
    var scalars = Array(text.unicodeScalars)[...]
    while let first = scalars.first, first.properties.isWhitespace { scalars.removeFirst() }
    while let last = scalars.last, last.properties.isWhitespace { scalars.removeLast() }
    return String(String.UnicodeScalarView(scalars))
}

/// The messages the golden files hold.
enum RepresentativeMessages {
    static func all() throws -> [(name: String, message: Message)] {
        let ada = try Mailbox("Ada Lovelace <ada@example.com>")
        let bob = try Mailbox("Bob <bob@example.net>")

        var text = Message(from: ada, to: [bob], subject: "Quarterly numbers",
                           text: "Hi Bob,\n\nThe numbers are in. See you on Monday.\n\n-- \nAda\n")
        text.messageID = "text.1@example.com"

        var alternative = Message(from: ada, to: [bob], cc: [try Mailbox("carol@example.org")],
                                  subject: "Your receipt", text: "Thank you for your order.\nTotal: 12.00 EUR",
                                  html: "<html><body><p>Thank you for your order.</p><p>Total: <b>12.00 EUR</b></p></body></html>")
        alternative.messageID = "alt.1@example.com"
        alternative.replyTo = [try Mailbox("Support <support@example.com>")]
        alternative.headers = [Header("List-Unsubscribe", "<https://example.com/unsubscribe?token=0123456789abcdef0123456789abcdef0123456789abcdef>, <mailto:unsubscribe@example.com>"),
                               Header("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")]

        var attachments = Message(from: ada, to: [bob], subject: "Report and data",
                                  text: "Two files attached.")
        attachments.messageID = "att.1@example.com"
        attachments.priority = .high
        attachments.attachments = [
            Attachment(data: Array("id,value\n1,2.5\n2,3.75\n".utf8), fileName: "data.csv"),
            Attachment(data: (0..<600).map { UInt8(truncatingIfNeeded: $0 &* 7) }, fileName: "blob.bin",
                       contentType: "application/octet-stream"),
        ]

        var inline = Message(from: ada, to: [bob], subject: "Newsletter",
                             text: "Our logo, and the news.", html: "<p><img src=\"cid:logo.1@example.com\"> The news.</p>")
        inline.messageID = "inline.1@example.com"
        inline.attachments = [.inline(data: [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + Array(repeating: 0, count: 100),
                                      contentID: "logo.1@example.com", fileName: "logo.png")]

        var unicode = Message(from: try Mailbox(name: "Zoë Ünal-Øster", address: "zoe@bücher.example"),
                              to: [try Mailbox(name: "山田 太郎", address: "taro@example.jp"),
                                   try Mailbox(name: "Jürgen \"Jo\" Müller, PhD", address: "jo@example.de")],
                              subject: "Grüße aus Köln — 東京からのお知らせ 🚀 Ünïcödé everywhere, in a subject long enough to fold",
                              text: "Grüße!\nこんにちは世界。\nEmoji: 🚀👍🏽🇫🇷\nA line with trailing space \nend",
                              html: "<p>Grüße! こんにちは世界。 🚀</p>")
        unicode.messageID = "uni.1@example.com"
        unicode.inReplyTo = ["prev.1@example.com"]
        unicode.references = ["root.1@example.com", "prev.1@example.com"]
        unicode.headers = [Header("X-Campaign", "Sommer-Aktion 2026 — Überraschung")]
        unicode.attachments = [
            Attachment(data: Array("Résumé".utf8), fileName: "Lebenslauf – Jürgen Müller (endgültige Fassung, überarbeitet).txt"),
            Attachment(data: [1, 2, 3], fileName: "日本語のファイル.bin"),
        ]
        return [("text", text), ("alternative", alternative), ("attachments", attachments), ("inline", inline),
                ("unicode", unicode)]
    }
}

@Suite("File attachments")
struct FileAttachmentTests {
    @Test(.needsPeers(python: ["email"])) func aFileIsStreamedIntoBase64AndReadsBackByteForByte() async throws {
        // 1 MB and 3 bytes: many 57 KiB pieces and a short last line.
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-attachment-\(UUID().uuidString).bin").path
        var generator = SeededGenerator(seed: 7)
        let content = (0..<1_000_003).map { _ in UInt8.random(in: 0...255, using: &generator) }
        try Data(content).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }

        var message = Message(from: try Mailbox("a@example.com"), to: [try Mailbox("b@example.com")], text: "see attached")
        message.attachments = [Attachment(contentsOfFile: path, fileName: "report.pdf")]
        #expect(message.attachments[0].contentType == "application/pdf")
        let encoded = try message.encodedForTest()
        checkWireRules(encoded)
        let body = String(decoding: encoded.bytes, as: UTF8.self).components(separatedBy: "Content-Transfer-Encoding: base64\r\n\r\n")[1]
        let lines = body.components(separatedBy: "\r\n")
        let base64Lines = lines.prefix { !$0.isEmpty }
        #expect(base64Lines.dropLast().allSatisfy { $0.utf8.count == 76 }, "every line but the last is 76 characters")
        guard let view = try await PythonEmail.read(encoded) else { return }
        #expect(view.attachments?.first?.bytes == content)
        #expect(view.attachments?.first?.fileName == "report.pdf")
    }

    @Test(.needsPeers(python: ["email"])) func anEmptyFileIsAnEmptyAttachment() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-empty-\(UUID().uuidString).txt").path
        try #require(FileManager.default.createFile(atPath: path, contents: nil))
        defer { try? FileManager.default.removeItem(atPath: path) }
        var message = Message(from: try Mailbox("a@example.com"), to: [try Mailbox("b@example.com")], text: "nothing attached")
        message.attachments = [Attachment(contentsOfFile: path, fileName: "empty.txt")]
        let encoded = try message.encodedForTest()
        checkWireRules(encoded)
        guard let view = try await PythonEmail.read(encoded) else { return }
        #expect(view.attachments?.count == 1)
        #expect(view.attachments?.first?.bytes == [])
        #expect(view.attachments?.first?.fileName == "empty.txt")
    }

    @Test func anUnreadableFileIsATypedErrorNamingIt() throws {
        var message = Message(from: try Mailbox("a@example.com"), to: [try Mailbox("b@example.com")])
        message.attachments = [Attachment(contentsOfFile: "/nonexistent/sluice/file.pdf")]
        #expect { try message.encoded() } throws: { error in
            guard let error = error as? MessageError else { return false }
            return error.kind == .unreadable && error.description.contains("/nonexistent/sluice/file.pdf")
        }
    }
}
