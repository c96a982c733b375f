import ArgumentParser
import Foundation
import Sluice
import SluiceMIME

/// What `sluice bench` sends: one message made once, and for each send a copy with its own
/// `Message-ID` (a server that drops duplicate Message-IDs would otherwise keep one message
/// of the whole run). With DKIM keys each copy is signed on its own, since the signature
/// covers the Message-ID: signing is then part of what is measured, as it is when sending.
struct BenchMessages: Sendable {
    /// The message with a Message-ID of sixteen zeros at ``digits``.
    private let template: [UInt8]
    private let digits: Range<Int>
    private let signers: [DKIMSigner]
    /// The template's Message-ID, whose digits each copy replaces.
    private let messageID: String

    /// The width of the per-message number in the Message-ID.
    static let digitCount = 16
    /// The width of the run's id (a random UInt64 in base 36).
    static let runIDLength = String(UInt64.max, radix: 36).count

    private static func padded(_ text: String, to width: Int) -> String {
        String(repeating: "0", count: max(0, width - text.count)) + text
    }

    /// Builds the template from `headerAndBody` (CRLF, with no Message-ID field), putting a
    /// Message-ID field first: `<NNNNNNNNNNNNNNNN.RUN@DOMAIN>`, RUN random per run.
    init(_ headerAndBody: [UInt8], domain: String, signers: [DKIMSigner]) {
        let run = Self.padded(String(UInt64.random(in: 0...UInt64.max), radix: 36), to: Self.runIDLength)
        let zeros = String(repeating: "0", count: Self.digitCount)
        messageID = "<\(zeros).\(run)@\(domain)>"
        let field = Array("Message-ID: \(messageID)\r\n".utf8)
        let start = "Message-ID: <".utf8.count
        template = field + headerAndBody
        digits = start..<(start + Self.digitCount)
        self.signers = signers
    }

    /// The size of each message before any DKIM signature.
    var size: Int { template.count }

    /// The copy's number in a Message-ID this run made (`<NNNNNNNNNNNNNNNN.RUN@DOMAIN>`).
    func number(inMessageID messageID: String) -> Int? {
        let digits = messageID.utf8.dropFirst().prefix(Self.digitCount)
        guard messageID.utf8.first == UInt8(ascii: "<"), digits.count == Self.digitCount else { return nil }
        return Int(Substring(digits))
    }

    /// Copy `number`, with its own Message-ID (and signature).
    func message(_ number: Int) -> EncodedMessage {
        var bytes = template
        var value = number
        bytes.withUnsafeMutableBufferPointer { buffer in
            for index in digits.reversed() {
                buffer[index] = UInt8(ascii: "0") + UInt8(value % 10)
                value /= 10
            }
        }
        var id = messageID.utf8.map { $0 }
        id.replaceSubrange(1..<(1 + Self.digitCount), with: bytes[digits])
        let messageID = String(decoding: id, as: UTF8.self)
        guard !signers.isEmpty else {
            // The template was checked when it was made; a number changes no line's length.
            return try! EncodedMessage(bytes: bytes, messageID: messageID)
        }
        // The same checks passed for the template, so signing a copy cannot fail.
        return EncodedMessage(try! DKIMSigner.sign(try! RawMessage(bytes), with: signers))
    }

    /// A plain-text message of exactly `size` octets (before any DKIM signature): headers,
    /// then 76-character lines.
    static func generated(size: Int, from: String, to: String, subject: String, headers: [String],
                          signers: [DKIMSigner]) throws -> BenchMessages {
        var text = "From: Sluice Bench <\(from)>\r\nTo: <\(to)>\r\nSubject: \(subject)\r\n"
        text += "Date: \(MessageEncoder.dateString(Date()))\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n"
        for header in headers { text += header + "\r\n" }
        text += "\r\n"
        let overhead = "Message-ID: <.@\(domain(of: from))>\r\n".utf8.count + digitCount + runIDLength
        let alphabet = Array("0123456789abcdefghijklmnopqrstuvwxyz".utf8)
        var remaining = size - text.utf8.count - overhead
        guard remaining >= 2 else {
            throw ValidationError("--size \(size) is too small for these headers; give at least \(size - remaining + 2)")
        }
        while remaining > 0 {
            // Lines of up to 76 octets with their CRLF; never a last line too short for its CRLF.
            var length = min(76, remaining)
            if remaining - length == 1 { length -= 1 }
            text += String(decoding: (0..<(length - 2)).map { alphabet[$0 % alphabet.count] }, as: UTF8.self) + "\r\n"
            remaining -= length
        }
        return try checked(Array(text.utf8), domain: domain(of: from), signers: signers)
    }

    /// An existing message, its own Message-ID fields replaced by the per-message one.
    static func file(_ path: String, from: String, signers: [DKIMSigner]) throws -> BenchMessages {
        let raw: RawMessage
        do {
            raw = try RawMessage(contentsOfFile: path)
        } catch {
            throw ValidationError("--eml \(path): \(error)")
        }
        return try checked(raw.removingHeaders(named: "Message-ID").bytes, domain: domain(of: from), signers: signers)
    }

    /// The messages, once their template is known to be a message that can be sent.
    private static func checked(_ bytes: [UInt8], domain: String, signers: [DKIMSigner]) throws -> BenchMessages {
        let messages = BenchMessages(bytes, domain: domain, signers: signers)
        do {
            _ = try RawMessage(messages.template)
        } catch {
            throw ValidationError("the bench message is not one that can be sent: \(error)")
        }
        return messages
    }

    private static func domain(of address: String) -> String {
        address.split(separator: "@").last.map(String.init) ?? "sluice.test"
    }
}
