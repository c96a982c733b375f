import Foundation
@testable import Sluice
import SluiceSink
import SluiceTestSupport
import Testing

@Suite("SMTPClient with built messages")
struct ClientMessageTests {
    @Test func aBuiltMessageGoesToEveryRecipientWithBccInTheEnvelopeOnly() async throws {
        try await withSinkAndClient { sink, client in
            var message = Message(from: try Mailbox("Ada <ada@bücher.example>"), to: [try Mailbox("Bob <bob@example.org>")],
                                  cc: [try Mailbox("carol@example.org")], bcc: [try Mailbox("hidden@example.org")],
                                  subject: "Grüße", text: "Hallo!", html: "<p>Hallo!</p>")
            message.attachments = [Attachment(data: [0, 1, 2, 255], fileName: "data.bin")]
            let report = try await client.send(message)
            #expect(report.outcome == .accepted)
            #expect(report.recipients.map(\.address.address) == ["bob@example.org", "carol@example.org", "hidden@example.org"])
            let stored = try await sink.waitForMessages(count: 1)
            #expect(stored[0].from?.address == "ada@xn--bcher-kva.example", "the envelope sender in A-labels")
            #expect(stored[0].recipients.map(\.address) == ["bob@example.org", "carol@example.org", "hidden@example.org"])
            let text = String(decoding: stored[0].content, as: UTF8.self)
            #expect(!text.contains("hidden@example.org"), "Bcc is never in the content")
            #expect(report.messageID.map { text.contains("Message-ID: \($0)\r\n") } == true)
        }
    }

    @Test func theSenderHeaderIsTheEnvelopeSender() async throws {
        try await withSinkAndClient { sink, client in
            var message = Message(from: try Mailbox("author@example.com"), to: [try Mailbox("b@example.org")])
            message.sender = try Mailbox("bounces@example.com")
            _ = try await client.send(message)
            let stored = try await sink.waitForMessages(count: 1)
            #expect(stored[0].from?.address == "bounces@example.com")
        }
    }

    @Test func aMessageThatCannotBeEncodedIsInvalidInputAndNothingIsSent() async throws {
        try await withSinkAndClient { sink, client in
            let message = Message(from: try Mailbox("a@example.com"), to: [try Mailbox("b@example.org")],
                                  subject: "x\r\nBcc: eve@example.org")
            let error = await smtpError { try await client.send(message) }
            #expect(error?.kind == .invalidInput)
            #expect(error?.description.contains("CR") == true)
            #expect(sink.statistics.sessions == 0, "no connection was made")
        }
    }

    @Test func aUTF8LocalPartGoesOutWithSMTPUTF8() async throws {
        try await withSinkAndClient { sink, client in
            let message = Message(from: try Mailbox("a@example.com"), to: [try Mailbox("δοκιμή@example.gr")], text: "Γειά")
            let report = try await client.send(message)
            #expect(report.outcome == .accepted)
            let stored = try await sink.waitForMessages(count: 1)
            #expect(stored[0].recipients.map(\.address) == ["δοκιμή@example.gr"])
            #expect(String(decoding: stored[0].content, as: UTF8.self).contains("To: δοκιμή@example.gr\r\n"))
        }
    }
}
