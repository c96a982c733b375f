import Foundation
import Sluice
import SluiceMIME
import SluiceSink
import SluiceTestSupport
import Testing

/// One-click unsubscribe (RFC 2369, RFC 8058): the fields as written, as Python's email package
/// reads them and as dkimpy verifies them, short and folded; a tampered link fails; and the
/// bulk API gives every copy its own signed link.
@Suite("One-click unsubscribe")
struct UnsubscribeTests {
    static let secret = Array("0123456789abcdef-not-a-real-secret".utf8)
    static let longURL = "https://example.com/unsubscribe?list=weekly-digest&campaign=2026-12&u="
        + String(repeating: "0123456789abcdef", count: 8)

    static func message(url: String, mailto: String? = "unsubscribe@example.com") throws -> Message {
        var message = Message(from: try Mailbox("News <news@example.com>"), to: [try Mailbox("reader@example.org")],
                              subject: "This week", text: "Hello\n")
        message.listUnsubscribe = try ListUnsubscribe(url: url, mailto: mailto, oneClick: true)
        return message
    }

    /// The header section's lines.
    static func headerLines(_ raw: RawMessage) -> [String] {
        let text = String(decoding: raw.bytes, as: UTF8.self)
        return text.components(separatedBy: "\r\n\r\n")[0].components(separatedBy: "\r\n")
    }

    @Test func theFieldsAreFoldedBetweenTheURIsNeverInsideOne() throws {
        let short = Self.headerLines(try Self.message(url: "https://example.com/u?t=1", mailto: "u@example.com").encoded())
        #expect(short.contains("List-Unsubscribe: <https://example.com/u?t=1>, <mailto:u@example.com>"), "\(short)")
        #expect(short.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"))

        let long = Self.headerLines(try Self.message(url: Self.longURL).encoded())
        let start = try #require(long.firstIndex { $0.hasPrefix("List-Unsubscribe:") })
        #expect(long[start] == "List-Unsubscribe: <\(Self.longURL)>,")
        #expect(long[start + 1] == " <mailto:unsubscribe@example.com>")
        #expect(long.allSatisfy { $0.utf8.count <= 998 })
    }

    @Test(.needsPeers(python: ["email"]))
    func pythonsEmailPackageReadsBothFields() async throws {
        guard let python = await peerPython(importing: ["email"]) else { return }
        let raw = try Self.message(url: Self.longURL).encoded()
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("unsub-\(UUID().uuidString).eml").path
        try Data(raw.bytes).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        let script = """
            import email, email.policy, sys
            m = email.message_from_binary_file(open(sys.argv[1], 'rb'), policy=email.policy.default)
            print(m['List-Unsubscribe']); print(m['List-Unsubscribe-Post'])
            """
        let run = try await runInBackground(python, ["-c", script, path])
        #expect(run.status == 0, "\(run.error)")
        #expect(run.output == "<\(Self.longURL)>, <mailto:unsubscribe@example.com>\nList-Unsubscribe=One-Click\n")
    }

    @Test func badFieldsAreRefusedBeforeAnythingIsWritten() throws {
        #expect(throws: MessageError.self) { try ListUnsubscribe() }
        #expect(throws: MessageError.self) { try ListUnsubscribe(url: "http://example.com/u", oneClick: true) }
        #expect(throws: MessageError.self) { try ListUnsubscribe(mailto: "u@example.com", oneClick: true) }
        #expect(throws: MessageError.self) { try ListUnsubscribe(url: "https://example.com/a b") }
        #expect(throws: MessageError.self) { try ListUnsubscribe(url: "https://example.com/u>\r\nBcc: x@example.org") }
        #expect(throws: MessageError.self) { try ListUnsubscribe(url: "https://example.com/" + String(repeating: "x", count: 960)) }
        #expect(throws: MessageError.self) { try ListUnsubscribe(mailto: "not an address") }
        // Set twice, once by hand: refused rather than written twice.
        var message = try Self.message(url: "https://example.com/u")
        message.headers = [Header("List-Unsubscribe", "<https://example.com/other>")]
        #expect(throws: MessageError.self) { try message.encoded() }
        #expect(throws: MessageError.self) {
            try UnsubscribeLinks(urlTemplate: "https://example.com/u?r={recipient}", secret: Self.secret)
        }
        #expect(throws: MessageError.self) { try UnsubscribeLinks(urlTemplate: "https://example.com/{token}", secret: [1, 2, 3]) }
    }

    @Test(.needsPeers(executables: ["openssl"], python: ["dkim", "nacl"]))
    func dkimpyVerifiesShortAndFoldedOneClickFieldsAndATamperedLinkFails() async throws {
        guard let keys = try await DKIMTestKeys.shared() else { return }
        for url in ["https://example.com/u?t=1", Self.longURL] {
            var signed = try Self.message(url: url).encoded()
            for signer in try keys.signers() { signed = try signer.sign(signed) }
            let text = String(decoding: signed.bytes, as: UTF8.self)
            let signatures = text.components(separatedBy: "DKIM-Signature:").dropFirst()
                .map { $0.replacingOccurrences(of: "\r\n ", with: "").replacingOccurrences(of: "\r\n\t", with: "") }
            #expect(signatures.count == 2 && signatures.allSatisfy {
                $0.lowercased().contains("list-unsubscribe:list-unsubscribe-post")
            }, "both fields in h=: \(signatures)")
            #expect(try await keys.verify(signed.bytes) == [true, true], "\(url)")
            let tampered = text.replacingOccurrences(of: "<https://example.com/u", with: "<https://evil.example/u")
            #expect(tampered != text)
            #expect(try await keys.verify(Array(tampered.utf8)) == [false, false], "a changed link fails: \(url)")
            let dropped = text.replacingOccurrences(of: "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n", with: "")
            #expect(try await keys.verify(Array(dropped.utf8)) == [false, false], "a removed one-click field fails")
        }
    }

    @Test func everyCopyOfABulkSendCarriesItsOwnSignedLink() async throws {
        let links = try UnsubscribeLinks(urlTemplate: "https://example.com/unsubscribe?r={recipient}&t={token}",
                                         secret: Self.secret, mailto: "unsubscribe@example.com")
        let recipients = try ["a@example.org", "B+news@example.org", "c@example.net"].map { try Mailbox($0) }
        try await withSinkAndClient { sink, client in
            var message = try Self.message(url: "https://example.com/placeholder")
            message.listUnsubscribe = nil
            var reports: [DeliveryReport] = []
            for try await report in try client.send(message, toEach: recipients, unsubscribe: links) { reports.append(report) }
            #expect(reports.count == 3 && reports.allSatisfy { $0.outcome == .accepted })
            #expect(Set(reports.compactMap(\.messageID)).count == 3, "a Message-ID each")
            let stored = try await sink.waitForMessages(count: 3)
            for copy in stored {
                let recipient = try #require(copy.recipients.first.map { "\($0)" })
                let lines = Self.headerLines(try RawMessage(copy.content))
                #expect(lines.contains("To: \(recipient)"), "\(lines)")
                let encoded = recipient.replacingOccurrences(of: "@", with: "%40").replacingOccurrences(of: "+", with: "%2B")
                let url = links.url(for: recipient)
                #expect(url.hasPrefix("https://example.com/unsubscribe?r=\(encoded)&t="))
                #expect(lines.contains { $0.contains("<\(url)>") }, "\(lines)")
                #expect(links.isValid(token: links.token(for: recipient), for: recipient.uppercased()))
                #expect(!links.isValid(token: links.token(for: "someone@else.example"), for: recipient), "a forged token")
            }
        }
    }

    @Test func aCopyThatCannotBeMadeIsReportedNotDropped() async throws {
        // A bad first copy throws before anything is sent.
        let links = try UnsubscribeLinks(urlTemplate: "https://example.com/u?t={token}", secret: Self.secret)
        try await withSinkAndClient { sink, client in
            var broken = try Self.message(url: "https://example.com/u")
            broken.listUnsubscribe = nil
            broken.headers = [Header("Subject", "twice")]
            #expect(throws: SMTPError.self) {
                _ = try client.send(broken, toEach: [try Mailbox("a@example.org")], unsubscribe: links)
            }
            #expect(sink.statistics.messages == 0)

            // A later copy whose address makes its link too long is reported, not dropped.
            let long = try UnsubscribeLinks(urlTemplate: "https://example.com/u?r={recipient}&t={token}" + String(repeating: "x", count: 820),
                                            secret: Self.secret)
            var fine = try Self.message(url: "https://example.com/u")
            fine.listUnsubscribe = nil
            let recipients = [try Mailbox("a@example.org"), try Mailbox(String(repeating: "b", count: 60) + "@" + String(repeating: "c", count: 60) + ".example")]
            var reports: [DeliveryReport] = []
            for try await report in try client.send(fine, toEach: recipients, unsubscribe: long) { reports.append(report) }
            #expect(reports.count == 2)
            let refused = try #require(reports.first { $0.outcome != .accepted })
            #expect(refused.error?.kind == .invalidInput && refused.error?.detail.contains("cannot be made") == true, "\(refused)")
            #expect(refused.envelope.recipients.map(\.address) == [recipients[1].address])
            #expect(sink.statistics.messages == 1)
        }
    }

    @Test func sendTakesTheFieldsFromItsFlagsAndRefusesWhatCannotWork() async throws {
        let sink = try await startSink()
        defer { Task { await sink.shutdown() } }
        let base = ["--from", "a@example.com", "--to", "b@example.org", "--subject", "news", "--text", "hello"]
        guard let sent = try await SendCommandTests.send(sink, base + [
            "--list-unsubscribe", "https://example.com/u?t=1, mailto:unsub@example.com", "--one-click"]) else { return }
        #expect(sent.status == 0, "\(sent.error)")
        let stored = try await sink.waitForMessages(count: 1)
        let lines = Self.headerLines(try RawMessage(stored[0].content))
        #expect(lines.contains("List-Unsubscribe: <https://example.com/u?t=1>, <mailto:unsub@example.com>"), "\(lines)")
        #expect(lines.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"))
        let refusals: [([String], String)] = [
            (["--list-unsubscribe", "http://example.com/u", "--one-click"], "is not https:"),
            (["--one-click"], "--one-click needs --list-unsubscribe"),
            (["--list-unsubscribe", "mailto:a@example.com", "--one-click"], "needs an https: URL"),
            (["--list-unsubscribe", "https://a.example/1,https://b.example/2"], "takes one URL"),
        ]
        for (flags, words) in refusals {
            let run = try #require(try await SendCommandTests.send(sink, base + flags))
            #expect(run.status == 64 && run.error.contains(words), "\(flags): \(run.error)")
        }
        #expect(sink.statistics.messages == 1, "nothing was sent for a refused flag")
    }
}
