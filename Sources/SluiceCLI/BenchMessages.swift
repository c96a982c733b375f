import ArgumentParser
import Foundation
import Sluice
import SluiceTransport
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
/// once and each copy only rewrites the Message-ID's digits. A corpus (`--eml DIR` or an
/// mbox) is several such messages, sent round-robin: copy n is message (n - 1) mod count.
struct BenchMessages: Sendable {
    /// One message of the corpus (a generated message is a corpus of one).
    private struct Variant: Sendable {
        /// The header fields after the Message-ID and checksum fields, the blank line included.
        let headers: [UInt8]
        let body: Body
        /// With a body that never changes: the whole message, its Message-ID's number at
        /// the messages' `digits`.
        let template: [UInt8]?
        /// `template` prepared once; each copy rewrites only its Message-ID (nil when the
        /// template keeps a dot-stuffed copy, which cannot be rewritten in place).
        let prepared: EncodedMessage?
    }

    private let variants: [Variant]
    private let signers: [DKIMSigner]
    private let checksums: ChecksumCache?
    /// The run's Message-ID with sixteen zeros where each copy's number goes.
    private let messageID: [UInt8]
    private let digits: Range<Int>
    let seed: UInt64
    /// The size of every copy when they all have one (before any DKIM signature), else nil.
    /// Found once: the bench asks for each report.
    private(set) var oneSize: Int?

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

    /// Each of `messages` is its CRLF header fields with no Message-ID, the blank line
    /// included, and its body.
    private init(_ messages: [(headers: [UInt8], body: Body)], domain: String, signers: [DKIMSigner], checksum: Bool,
                 seed: UInt64) {
        let run = Self.padded(String(UInt64.random(in: 0...UInt64.max), radix: 36), to: Self.runIDLength)
        let messageID = Array("<\(String(repeating: "0", count: Self.digitCount)).\(run)@\(domain)>".utf8)
        self.messageID = messageID
        digits = (Self.fieldStart.count + 1)..<(Self.fieldStart.count + 1 + Self.digitCount)
        self.signers = signers
        self.seed = seed
        checksums = checksum ? ChecksumCache() : nil
        variants = messages.map { headers, body in
            guard case .fixed(let bytes) = body else {
                return Variant(headers: headers, body: body, template: nil, prepared: nil)
            }
            let field = checksum ? ContentChecksum.field(forBody: bytes) : []
            let template = Self.fieldStart + messageID + [13, 10] + field + headers + bytes
            // Kept only when a copy can be made from it (a signed copy is signed anew).
            let prepared = signers.isEmpty ? try? EncodedMessage(bytes: template) : nil
            return Variant(headers: headers, body: body, template: template,
                           prepared: prepared?.copy(withMessageID: String(decoding: messageID, as: UTF8.self),
                                                    at: Self.messageIDRange(messageID)))
        }
        if let sizes = fixedSizes, Set(sizes).count == 1 {
            oneSize = sizes[0]
        } else if case .drawn(let sizes) = variants[0].body, sizes.isFixed {
            oneSize = sizes.minimum
        }
    }

    /// The octets `variant` has besides its body (before any DKIM signature).
    private func overhead(_ variant: Variant) -> Int {
        Self.fieldStart.count + messageID.count + 2 + (checksums == nil ? 0 : ContentChecksum.fieldLength) + variant.headers.count
    }

    /// The variant copy `number` is made from.
    private func variant(_ number: Int) -> Variant {
        variants[variantIndex(number)]
    }

    private func variantIndex(_ number: Int) -> Int {
        variants.count == 1 ? 0 : (number - 1) % variants.count
    }

    /// The sizes of the corpus's messages, or nil when sizes are drawn.
    private var fixedSizes: [Int]? {
        var sizes: [Int] = []
        for variant in variants {
            guard case .fixed(let bytes) = variant.body else { return nil }
            sizes.append(overhead(variant) + bytes.count)
        }
        return sizes
    }

    /// What the sizes are: one number, the distribution they are drawn from, or a corpus's.
    var sizeDescription: String {
        if let sizes = fixedSizes {
            return sizes.count == 1 ? String(sizes[0]) : "\(sizes.min()!)-\(sizes.max()!) (\(sizes.count) messages)"
        }
        if case .drawn(let sizes) = variants[0].body { return sizes.description }
        return "?"
    }

    /// The size of copy `number` before any DKIM signature.
    func size(of number: Int) -> Int {
        let variant = variant(number)
        switch variant.body {
        case .fixed(let bytes): return overhead(variant) + bytes.count
        case .drawn(let sizes): return sizes.value(for: number, seed: seed)
        }
    }

    /// The largest size a message can have.
    var largest: Int {
        variants.map { variant in
            switch variant.body {
            case .fixed(let bytes): overhead(variant) + bytes.count
            case .drawn(let sizes): sizes.maximum
            }
        }.max() ?? 0
    }


    /// The copy's number in a Message-ID this run made (`<NNNNNNNNNNNNNNNN.RUN@DOMAIN>`).
    func number(inMessageID messageID: String) -> Int? {
        let digits = messageID.utf8.dropFirst().prefix(Self.digitCount)
        guard messageID.utf8.first == UInt8(ascii: "<"), digits.count == Self.digitCount else { return nil }
        return Int(Substring(digits))
    }

    /// Where a message holds its Message-ID: first, after ``fieldStart``.
    private static func messageIDRange(_ messageID: [UInt8]) -> Range<Int> {
        fieldStart.count..<(fieldStart.count + messageID.count)
    }

    /// The Message-ID of copy `number`, made with one allocation.
    private func messageID(_ number: Int) -> String {
        String(unsafeUninitializedCapacity: messageID.count) { buffer in
            _ = buffer.initialize(fromContentsOf: messageID)
            var value = number
            for index in (1...Self.digitCount).reversed() {
                buffer[index] = UInt8(ascii: "0") + UInt8(value % 10)
                value /= 10
            }
            return messageID.count
        }
    }

    /// Copy `number`, with its own Message-ID (and checksum, and signature).
    func message(_ number: Int) -> EncodedMessage {
        // The variant is read in place: copying it would retain each of its arrays.
        if let copy = variants[variantIndex(number)].prepared?.copy(withMessageID: messageID(number),
                                                                    at: Self.messageIDRange(messageID)) {
            return copy
        }
        let variant = variant(number)
        var bytes: [UInt8]
        if let template = variant.template {
            bytes = template
        } else {
            let overhead = overhead(variant)
            let length = size(of: number) - overhead
            bytes = []
            bytes.reserveCapacity(overhead + length)
            bytes += Self.fieldStart
            bytes += messageID
            bytes += [13, 10]
            if let checksums { bytes += checksums.field(forBodyLength: length) }
            bytes += variant.headers
            Self.appendBody(length: length, to: &bytes)
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
        appendBody(length: length, to: &body)
        return body
    }

    /// Appends the body ``generatedBody(length:)`` makes: whole lines copied from a block of
    /// them made once (a drawn size costs a copy, not a loop over its lines), then the last
    /// one or two. A length of 76·k + 1 ends in a 75-octet line and a bare CRLF.
    static func appendBody(length: Int, to bytes: inout [UInt8]) {
        var whole = length / 76
        var rest = length % 76
        if rest == 1 {
            whole -= 1
            rest = 77
        }
        var lines = whole * 76
        while lines > 0 {
            let piece = min(lines, lineBlock.count)
            bytes += lineBlock[..<piece]
            lines -= piece
        }
        if rest == 77 {
            bytes += fullLine.prefix(73)
            bytes += [13, 10]
            rest = 2
        }
        if rest >= 2 {
            bytes += fullLine.prefix(rest - 2)
            bytes += [13, 10]
        }
    }

    private static let fullLine = Array("0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz01".utf8)
    /// 13,797 whole lines (about 1 MiB), made on first use.
    private static let lineBlock: [UInt8] = Array(repeating: fullLine + [13, 10], count: 13_797).flatMap { $0 }

    /// A plain-text message whose sizes (before any DKIM signature) are drawn from `sizes`:
    /// headers, then 76-character lines.
    static func generated(sizes: BenchDistribution, from: String, to: String, subject: String, headers: [String],
                          signers: [DKIMSigner], checksum: Bool, seed: UInt64) throws -> BenchMessages {
        var text = "From: Sluice Bench <\(from)>\r\nTo: <\(to)>\r\nSubject: \(subject)\r\n"
        text += "Date: \(MessageEncoder.dateString(Date()))\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n"
        for header in headers { text += header + "\r\n" }
        text += "\r\n"
        let headers = Array(text.utf8)
        let sample = BenchMessages([(headers, .fixed([]))], domain: domain(of: from), signers: [], checksum: checksum, seed: seed)
        let overhead = sample.overhead(sample.variants[0])
        guard sizes.minimum >= overhead + 2 else {
            throw ValidationError("--size \(sizes) is too small for these headers; give at least \(overhead + 2)")
        }
        let body: Body = sizes.isFixed ? .fixed(generatedBody(length: sizes.minimum - overhead)) : .drawn(sizes)
        return try checked(BenchMessages([(headers, body)], domain: domain(of: from), signers: signers, checksum: checksum, seed: seed))
    }

    /// Existing messages, sent round-robin, their own Message-ID fields replaced by each
    /// copy's: `path` is one message (`.eml`), a directory of them (every regular file in
    /// it, by name, dot files left out), or an mbox file (it starts with `From `).
    static func corpus(_ path: String, from: String, signers: [DKIMSigner], checksum: Bool, seed: UInt64) throws -> BenchMessages {
        var isDirectory: ObjCBool = false
        guard FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory) else {
            throw ValidationError("--eml \(path): no such file or directory")
        }
        var raws: [(name: String, bytes: [UInt8])] = []
        if isDirectory.boolValue {
            let names = try FileManager.default.contentsOfDirectory(atPath: path).filter { !$0.hasPrefix(".") }.sorted()
            for name in names {
                var isSubdirectory: ObjCBool = false
                let file = path + "/" + name
                guard FileManager.default.fileExists(atPath: file, isDirectory: &isSubdirectory), !isSubdirectory.boolValue else { continue }
                guard let data = FileManager.default.contents(atPath: file) else {
                    throw ValidationError("--eml \(file): cannot read it")
                }
                raws.append((file, Array(data)))
            }
            guard !raws.isEmpty else { throw ValidationError("--eml \(path): the directory holds no messages") }
        } else {
            guard let data = FileManager.default.contents(atPath: path) else { throw ValidationError("--eml \(path): cannot read it") }
            let bytes = Array(data)
            if bytes.starts(with: Array("From ".utf8)) {
                raws = Mbox.messages(in: bytes).enumerated().map { ("\(path), message \($0.offset + 1)", $0.element) }
                guard !raws.isEmpty else { throw ValidationError("--eml \(path): the mbox holds no messages") }
            } else {
                raws = [(path, bytes)]
            }
        }
        return try replayed(raws, from: from, signers: signers, checksum: checksum, seed: seed)
    }

    /// A generated message with `attachments` (files, base64 in a multipart/mixed message, as
    /// Sluice's own encoder writes them for `sluice send --attach`): made once, each copy with
    /// its own Message-ID.
    static func withAttachments(_ attachments: [String], from: String, to: String, subject: String, headers: [String],
                                signers: [DKIMSigner], checksum: Bool, seed: UInt64) throws -> BenchMessages {
        var message = Message(from: try Mailbox(from), to: [try Mailbox(to)], subject: subject)
        message.textBody = "A sluice bench message with \(attachments.count) attachment(s).\n"
        for path in attachments {
            guard FileManager.default.isReadableFile(atPath: path) else { throw ValidationError("--attach: cannot read \(path)") }
            message.attachments.append(Attachment(contentsOfFile: path))
        }
        for line in headers {
            let (name, value) = try parseHeaderFlag(line)
            message.headers.append(Header(name, value))
        }
        let raw: RawMessage
        do {
            raw = try message.encoded()
        } catch {
            throw ValidationError("--attach: \(error)")
        }
        return try replayed([("--attach", raw.bytes)], from: from, signers: signers, checksum: checksum, seed: seed)
    }

    /// Whole messages sent round-robin, their Message-ID fields replaced by each copy's.
    private static func replayed(_ raws: [(name: String, bytes: [UInt8])], from: String, signers: [DKIMSigner],
                                 checksum: Bool, seed: UInt64) throws -> BenchMessages {
        let messages = try raws.map { name, bytes -> ([UInt8], Body) in
            let raw: RawMessage
            do {
                raw = try RawMessage(bytes)
            } catch {
                throw ValidationError("\(name.hasPrefix("--") ? name : "--eml " + name): \(error)")
            }
            let message = raw.removingHeaders(named: "Message-ID").bytes
            let body = ContentChecksum.body(of: message)
            var headers = Array(message[..<body.startIndex])
            if body.startIndex == message.count, !message.suffix(4).elementsEqual([13, 10, 13, 10]) {
                headers += [13, 10]  // a message that is all header: give it its blank line
            }
            return (headers, .fixed(Array(body)))
        }
        return try checked(BenchMessages(messages, domain: domain(of: from), signers: signers, checksum: checksum, seed: seed))
    }

    /// `messages`, once a copy of each is known to be a message that can be sent.
    private static func checked(_ messages: BenchMessages) throws -> BenchMessages {
        for number in 1...messages.variants.count {
            do {
                _ = try RawMessage(messages.message(number).bytes)
            } catch {
                throw ValidationError("the bench message\(messages.variants.count > 1 ? " \(number)" : "") is not one that can be sent: \(error)")
            }
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
    private let fields = Locked<[Int: [UInt8]]>([:])

    /// The field for the generated body of `length` octets, made (and the body hashed) once.
    func field(forBodyLength length: Int) -> [UInt8] {
        if let known = fields.withLock({ $0[length] }) { return known }
        let field = ContentChecksum.field(forBody: BenchMessages.generatedBody(length: length))
        fields.withLock { $0[length] = field }
        return field
    }
}

/// Reading an mbox file: messages start at lines beginning `From ` (the separator line
/// itself is not part of the message), and a body line quoted as `>From ` (mboxrd: any
/// number of `>` before `From `) loses one `>`.
enum Mbox {
    static func messages(in bytes: [UInt8]) -> [[UInt8]] {
        let from = Array("From ".utf8)
        var messages: [[UInt8]] = []
        var current: [UInt8]?
        var lineStart = 0
        while lineStart < bytes.count {
            let lineEnd = bytes[lineStart...].firstIndex(of: 10).map { $0 + 1 } ?? bytes.count
            let line = bytes[lineStart..<lineEnd]
            if line.starts(with: from) {
                if let message = current { messages.append(message) }
                current = []
            } else if current != nil {
                let quotes = line.prefix { $0 == UInt8(ascii: ">") }.count
                if quotes > 0, line.dropFirst(quotes).starts(with: from) {
                    current! += line.dropFirst()
                } else {
                    current! += line
                }
            }
            lineStart = lineEnd
        }
        if let message = current { messages.append(message) }
        // The blank line mbox writers put before each separator belongs to no message.
        return messages.map { message in
            var message = message
            if message.suffix(2) == [10, 10] { message.removeLast() } else if message.suffix(4) == [13, 10, 13, 10] { message.removeLast(2) }
            return message
        }
    }
}
