import ArgumentParser
import Foundation
import Sluice
import SluiceMIME
import SluiceSink
import Synchronization

/// What `sluice bench` sends: for each message number a copy with its own `Message-ID` (a
/// server that drops duplicate Message-IDs would otherwise keep one message of the whole
/// run), a body of the size drawn for that number, and with `--checksum` an
/// `X-Sluice-Checksum` field that `sluice sink --verify` checks. With DKIM keys each copy is
/// signed on its own, since the signature covers the Message-ID: signing is then part of what
/// is measured, as it is when sending.
///
/// A message is `Message-ID`, the checksum field, the other header fields, the blank line and
/// the body. When the body never changes (one size, or `--eml`) the whole message is made
/// once and each copy only rewrites the Message-ID's digits.
struct BenchMessages: Sendable {
    /// The header fields after the Message-ID and checksum fields, the blank line included.
    private let headers: [UInt8]
    private let body: Body
    private let signers: [DKIMSigner]
    private let checksums: ChecksumCache?
    /// The run's Message-ID with sixteen zeros where each copy's number goes.
    private let messageID: [UInt8]
    /// With a body that never changes: the whole message, its Message-ID's number at `digits`.
    private let template: [UInt8]?
    private let digits: Range<Int>
    let seed: UInt64

    enum Body: Sendable {
        /// The same body for every message.
        case fixed([UInt8])
        /// A generated body whose message size (everything above included) is drawn per message.
        case drawn(BenchDistribution)
    }

    /// The width of the per-message number in the Message-ID.
    static let digitCount = 16
    /// The width of the run's id (a random UInt64 in base 36).
    static let runIDLength = String(UInt64.max, radix: 36).count
    private static let fieldStart = Array("Message-ID: ".utf8)

    private static func padded(_ text: String, to width: Int) -> String {
        String(repeating: "0", count: max(0, width - text.count)) + text
    }

    /// `headers` are CRLF header fields with no Message-ID, the blank line included.
    private init(headers: [UInt8], body: Body, domain: String, signers: [DKIMSigner], checksum: Bool, seed: UInt64) {
        let run = Self.padded(String(UInt64.random(in: 0...UInt64.max), radix: 36), to: Self.runIDLength)
        messageID = Array("<\(String(repeating: "0", count: Self.digitCount)).\(run)@\(domain)>".utf8)
        digits = (Self.fieldStart.count + 1)..<(Self.fieldStart.count + 1 + Self.digitCount)
        self.headers = headers
        self.body = body
        self.signers = signers
        self.seed = seed
        checksums = checksum ? ChecksumCache() : nil
        if case .fixed(let bytes) = body {
            template = Self.fieldStart + messageID + [13, 10] + (checksum ? ContentChecksum.field(forBody: bytes) : []) + headers + bytes
        } else {
            template = nil
        }
    }

    /// The octets every message has besides its body (before any DKIM signature).
    private var overhead: Int {
        Self.fieldStart.count + messageID.count + 2 + (checksums == nil ? 0 : ContentChecksum.fieldLength) + headers.count
    }

    /// What the sizes are: one number, or the distribution they are drawn from.
    var sizeDescription: String {
        switch body {
        case .fixed(let bytes): String(overhead + bytes.count)
        case .drawn(let sizes): sizes.description
        }
    }

    /// The expected size of a message.
    var meanSize: Double {
        switch body {
        case .fixed(let bytes): Double(overhead + bytes.count)
        case .drawn(let sizes): sizes.mean
        }
    }

    /// The size of copy `number` before any DKIM signature.
    func size(of number: Int) -> Int {
        switch body {
        case .fixed(let bytes): overhead + bytes.count
        case .drawn(let sizes): sizes.value(for: number, seed: seed)
        }
    }

    /// The largest size a message can have.
    var largest: Int {
        switch body {
        case .fixed(let bytes): overhead + bytes.count
        case .drawn(let sizes): sizes.maximum
        }
    }

    /// Whether every message has the same size.
    var hasOneSize: Bool {
        if case .drawn(let sizes) = body { return sizes.isFixed }
        return true
    }

    /// The copy's number in a Message-ID this run made (`<NNNNNNNNNNNNNNNN.RUN@DOMAIN>`).
    func number(inMessageID messageID: String) -> Int? {
        let digits = messageID.utf8.dropFirst().prefix(Self.digitCount)
        guard messageID.utf8.first == UInt8(ascii: "<"), digits.count == Self.digitCount else { return nil }
        return Int(Substring(digits))
    }

    /// Copy `number`, with its own Message-ID (and checksum, and signature).
    func message(_ number: Int) -> EncodedMessage {
        var bytes: [UInt8]
        if let template {
            bytes = template
        } else {
            let body = Self.generatedBody(length: size(of: number) - overhead)
            bytes = []
            bytes.reserveCapacity(overhead + body.count)
            bytes += Self.fieldStart
            bytes += messageID
            bytes += [13, 10]
            if let checksums { bytes += checksums.field(for: body) }
            bytes += headers
            bytes += body
        }
        var value = number
        bytes.withUnsafeMutableBufferPointer { buffer in
            for index in digits.reversed() {
                buffer[index] = UInt8(ascii: "0") + UInt8(value % 10)
                value /= 10
            }
        }
        let id = String(decoding: bytes[(digits.lowerBound - 1)..<(digits.lowerBound - 1 + messageID.count)], as: UTF8.self)
        guard !signers.isEmpty else {
            // The template was checked when it was made; a number changes no line's length.
            return try! EncodedMessage(bytes: bytes, messageID: id)
        }
        // The same checks passed for the template, so signing a copy cannot fail.
        return EncodedMessage(try! DKIMSigner.sign(try! RawMessage(bytes), with: signers))
    }

    /// A body of exactly `length` octets (at least 2): 76-octet lines, CRLF included, and
    /// never a last line too short for its CRLF.
    static func generatedBody(length: Int) -> [UInt8] {
        var body: [UInt8] = []
        body.reserveCapacity(length)
        var remaining = length
        while remaining > 0 {
            var line = min(76, remaining)
            if remaining - line == 1 { line -= 1 }
            body += fullLine.prefix(line - 2)
            body += [13, 10]
            remaining -= line
        }
        return body
    }

    private static let fullLine = Array("0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz01".utf8)

    /// A plain-text message whose sizes (before any DKIM signature) are drawn from `sizes`:
    /// headers, then 76-character lines.
    static func generated(sizes: BenchDistribution, from: String, to: String, subject: String, headers: [String],
                          signers: [DKIMSigner], checksum: Bool, seed: UInt64) throws -> BenchMessages {
        var text = "From: Sluice Bench <\(from)>\r\nTo: <\(to)>\r\nSubject: \(subject)\r\n"
        text += "Date: \(MessageEncoder.dateString(Date()))\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n"
        for header in headers { text += header + "\r\n" }
        text += "\r\n"
        let sample = BenchMessages(headers: Array(text.utf8), body: .fixed([]), domain: domain(of: from), signers: [],
                                   checksum: checksum, seed: seed)
        let smallest = sample.overhead + 2
        guard sizes.minimum >= smallest else {
            throw ValidationError("--size \(sizes) is too small for these headers; give at least \(smallest)")
        }
        let body: Body = sizes.isFixed ? .fixed(generatedBody(length: sizes.minimum - sample.overhead)) : .drawn(sizes)
        return try checked(BenchMessages(headers: Array(text.utf8), body: body, domain: domain(of: from), signers: signers,
                                         checksum: checksum, seed: seed))
    }

    /// An existing message, its own Message-ID fields replaced by the per-message one.
    static func file(_ path: String, from: String, signers: [DKIMSigner], checksum: Bool, seed: UInt64) throws -> BenchMessages {
        let raw: RawMessage
        do {
            raw = try RawMessage(contentsOfFile: path)
        } catch {
            throw ValidationError("--eml \(path): \(error)")
        }
        let bytes = raw.removingHeaders(named: "Message-ID").bytes
        let body = ContentChecksum.body(of: bytes)
        var headers = Array(bytes[..<body.startIndex])
        if body.startIndex == bytes.count, !bytes.suffix(4).elementsEqual([13, 10, 13, 10]) {
            headers += [13, 10]  // a message that is all header: give it its blank line
        }
        return try checked(BenchMessages(headers: headers, body: .fixed(Array(body)), domain: domain(of: from),
                                         signers: signers, checksum: checksum, seed: seed))
    }

    /// `messages`, once a copy is known to be a message that can be sent.
    private static func checked(_ messages: BenchMessages) throws -> BenchMessages {
        do {
            _ = try RawMessage(messages.message(1).bytes)
        } catch {
            throw ValidationError("the bench message is not one that can be sent: \(error)")
        }
        return messages
    }

    private static func domain(of address: String) -> String {
        address.split(separator: "@").last.map(String.init) ?? "sluice.test"
    }
}

/// The checksum field for each body length a run draws, made once per length: a body is a
/// function of its length alone.
private final class ChecksumCache: Sendable {
    private let fields = Mutex<[Int: [UInt8]]>([:])

    func field(for body: [UInt8]) -> [UInt8] {
        if let known = fields.withLock({ $0[body.count] }) { return known }
        let field = ContentChecksum.field(forBody: body)
        fields.withLock { $0[body.count] = field }
        return field
    }
}
