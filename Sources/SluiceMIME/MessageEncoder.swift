package import Foundation
internal import SluiceCore

/// Turns a ``Message`` into its RFC 5322 / MIME bytes, in one buffer: the header section,
/// then the body tree (text parts chosen 7bit, 8bit, quoted-printable or base64; attachments
/// base64; multiparts with boundaries that cannot occur in their content).
package struct MessageEncoder {
    let options: EncodingOptions
    private var output: [UInt8] = []
    /// Where the message's header section ends (after its empty line).
    private var headerLength: Int?

    init(options: EncodingOptions) {
        self.options = options
    }

    /// A MIME entity to write.
    private indirect enum Part {
        case text(subtype: String, content: [UInt8], encoding: TransferEncoding)
        case attachment(Attachment)
        case multipart(subtype: String, boundary: String, parts: [Part], type: String?)
    }

    /// Header names this encoder writes itself; a custom header may not repeat them.
    static let reservedNames: Set<String> = [
        "from", "sender", "to", "cc", "bcc", "reply-to", "subject", "date", "message-id", "in-reply-to",
        "references", "mime-version", "content-type", "content-transfer-encoding", "content-disposition",
        "content-id", "x-priority", "importance",
    ]

    /// Header names written from ``Message/listUnsubscribe`` when it is set.
    static let listUnsubscribeNames: Set<String> = ["list-unsubscribe", "list-unsubscribe-post"]

    mutating func encode(_ message: Message, using generator: inout some RandomNumberGenerator)
        throws(MessageError) -> RawMessage
    {
        try validate(message)
        let body = try structure(of: message, using: &generator)

        var headers = HeaderWriter()
        headers.field("Date", tokens: [Self.dateString(message.date ?? Date())])
        try mailboxes("From", [message.from], into: &headers)
        if let sender = message.sender { try mailboxes("Sender", [sender], into: &headers) }
        if !message.replyTo.isEmpty { try mailboxes("Reply-To", message.replyTo, into: &headers) }
        if !message.to.isEmpty { try mailboxes("To", message.to, into: &headers) }
        if !message.cc.isEmpty { try mailboxes("Cc", message.cc, into: &headers) }
        if let subject = message.subject { headers.field("Subject") { $0.unstructured(subject) } }
        let messageID = try message.messageID.map { id throws(MessageError) in try Self.messageID(id, "Message-ID") }
            ?? generatedMessageID(for: message.from, using: &generator)
        headers.field("Message-ID", tokens: ["<\(messageID)>"])
        if !message.inReplyTo.isEmpty {
            let ids = try message.inReplyTo.map { id throws(MessageError) in "<\(try Self.messageID(id, "In-Reply-To"))>" }
            headers.field("In-Reply-To", tokens: ids)
        }
        if !message.references.isEmpty {
            let ids = try message.references.map { id throws(MessageError) in "<\(try Self.messageID(id, "References"))>" }
            headers.field("References", tokens: ids)
        }
        switch message.priority {
        case .high:
            headers.field("X-Priority", tokens: ["1"])
            headers.field("Importance", tokens: ["high"])
        case .low:
            headers.field("X-Priority", tokens: ["5"])
            headers.field("Importance", tokens: ["low"])
        case .normal:
            break
        }
        if let unsubscribe = message.listUnsubscribe {
            // Folded only between the URIs (after each comma), never inside one.
            let elements = unsubscribe.elements
            headers.field("List-Unsubscribe", tokens: elements.indices.map { elements[$0] + ($0 < elements.count - 1 ? "," : "") })
            if unsubscribe.oneClick { headers.field("List-Unsubscribe-Post", tokens: ["List-Unsubscribe=One-Click"]) }
        }
        for header in message.headers {
            headers.field(header.name) { $0.unstructured(header.value) }
        }
        headers.field("MIME-Version", tokens: ["1.0"])

        output.reserveCapacity(headers.bytes.count + Self.estimatedSize(body))
        try write(body, headers: headers)
        return RawMessage(encoded: output, headerLength: headerLength ?? output.count)
    }

    // MARK: Checks made before anything is written

    private func validate(_ message: Message) throws(MessageError) {
        if let subject = message.subject { try Self.checkValue(subject, header: "Subject") }
        for header in message.headers {
            let name = Array(header.name.utf8)
            guard !name.isEmpty, name.count <= 76, name.allSatisfy({ $0 > 32 && $0 < 127 && $0 != UInt8(ascii: ":") }) else {
                throw MessageError(.invalidHeader, line: 0,
                                   detail: "'\(header.name)' is not a header name (printable ASCII without ':' or space)")
            }
            guard !Self.reservedNames.contains(header.name.lowercased()) else {
                throw MessageError(.reservedHeader, line: 0,
                                   detail: "\(header.name) is written from the message's own properties")
            }
            guard message.listUnsubscribe == nil || !Self.listUnsubscribeNames.contains(header.name.lowercased()) else {
                throw MessageError(.reservedHeader, line: 0, detail: "\(header.name) is written from listUnsubscribe")
            }
            try Self.checkValue(header.value, header: header.name)
        }
        for attachment in message.attachments {
            guard Self.isMediaType(attachment.contentType) else {
                throw MessageError(.invalidContentType, line: 0, detail: "'\(attachment.contentType)' is not type/subtype")
            }
            if let fileName = attachment.fileName, fileName.utf8.contains(where: { $0 < 0x20 || $0 == 0x7F }) {
                throw MessageError(.invalidHeader, line: 0, detail: "the file name '\(fileName.debugDescription)' has a control character")
            }
            if case .inline(let contentID) = attachment.disposition {
                _ = try Self.messageID(contentID, "Content-ID")
            }
        }
        if !options.smtpUTF8, let mailbox = ([message.from] + (message.sender.map { [$0] } ?? []) + message.to
            + message.cc + message.bcc + message.replyTo).first(where: \.requiresSMTPUTF8)
        {
            throw MessageError(.needsSMTPUTF8, line: 0, detail: "\(mailbox.address) has a UTF-8 local part")
        }
    }

    private static func checkValue(_ value: String, header: String) throws(MessageError) {
        if let bad = value.utf8.first(where: { $0 == 13 || $0 == 10 || $0 == 0 }) {
            let what = bad == 0 ? "NUL" : bad == 13 ? "CR" : "LF"
            throw MessageError(.invalidHeader, line: 0, detail: "the \(header) value has a \(what), which could inject a header")
        }
    }

    /// `type/subtype`, each an RFC 2045 token.
    private static func isMediaType(_ text: String) -> Bool {
        let parts = text.utf8.split(separator: UInt8(ascii: "/"), omittingEmptySubsequences: false)
        return parts.count == 2 && parts.allSatisfy { !$0.isEmpty && $0.allSatisfy(HeaderWriter.isTokenCharacter) }
    }

    /// A message ID (or content ID) without its angle brackets, checked to RFC 5322 §3.6.4:
    /// `id-left@id-right`, each a dot-atom-text, the right side also a `[literal]`.
    static func messageID(_ text: String, _ header: String) throws(MessageError) -> String {
        var id = Substring(text)
        if id.hasPrefix("<"), id.hasSuffix(">") { id = id.dropFirst().dropLast() }
        let bytes = Array(id.utf8)
        func isDotAtom(_ part: ArraySlice<UInt8>) -> Bool {
            !part.isEmpty && part.first != UInt8(ascii: ".") && part.last != UInt8(ascii: ".")
                && !zip(part, part.dropFirst()).contains { $0 == UInt8(ascii: ".") && $1 == UInt8(ascii: ".") }
                && part.allSatisfy { HeaderWriter.isAtext($0) || $0 == UInt8(ascii: ".") }
        }
        guard bytes.count <= 900, let at = bytes.lastIndex(of: UInt8(ascii: "@")) else {
            throw MessageError(.invalidMessageID, line: 0, detail: "\(header) '\(text.debugDescription)' is not id@domain")
        }
        let left = bytes[..<at]
        let right = bytes[(at + 1)...]
        let literal = right.first == UInt8(ascii: "[") && right.last == UInt8(ascii: "]") && right.count > 2
            && right.dropFirst().dropLast().allSatisfy { $0 > 32 && $0 < 127 && $0 != UInt8(ascii: "[")
                && $0 != UInt8(ascii: "]") && $0 != UInt8(ascii: "\\") }
        guard isDotAtom(left), isDotAtom(right) || literal else {
            throw MessageError(.invalidMessageID, line: 0, detail: "\(header) '\(text.debugDescription)' is not id@domain")
        }
        return String(id)
    }

    // MARK: Headers

    private func mailboxes(_ name: String, _ list: [Mailbox], into headers: inout HeaderWriter) throws(MessageError) {
        var addresses: [String] = []
        for mailbox in list {
            do {
                addresses.append(try mailbox.envelopeAddress(smtpUTF8: options.smtpUTF8).address)
            } catch {
                throw MessageError(.needsSMTPUTF8, line: 0, detail: "\(mailbox.address) has a UTF-8 local part")
            }
        }
        headers.field(name) { writer in
            for (index, mailbox) in list.enumerated() {
                if index > 0 { writer.attach(",") }
                // Fold between mailboxes when the next one does not fit whole.
                writer.foldUnlessFits(1 + (mailbox.name.map { $0.utf8.count + 3 } ?? 0) + addresses[index].utf8.count + 1)
                if let displayName = mailbox.name {
                    writer.phrase(displayName)
                    writer.token("<\(addresses[index])>".utf8)
                } else {
                    writer.token(addresses[index].utf8)
                }
            }
        }
    }

    private func generatedMessageID(for from: Mailbox, using generator: inout some RandomNumberGenerator) -> String {
        let domain = options.smtpUTF8 ? from.address.domain : from.asciiDomain
        return Self.randomToken(26, using: &generator) + "@" + domain
    }

    private static let tokenAlphabet = Array("0123456789abcdefghijklmnopqrstuvwxyz".utf8)

    private static func randomToken(_ length: Int, using generator: inout some RandomNumberGenerator) -> String {
        String(decoding: (0..<length).map { _ in tokenAlphabet[Int(generator.next(upperBound: UInt8(36)))] },
               as: UTF8.self)
    }

    /// RFC 5322 §3.3 date-time in UTC: `Mon, 23 Nov 2026 23:31:07 +0000`. The package's one
    /// writer of a `Date:` field (`sluice bench` dates its messages with it too).
    package static func dateString(_ date: Date) -> String {
        let seconds = Int64(date.timeIntervalSince1970.rounded(.down))
        var days = seconds >= 0 ? seconds / 86_400 : (seconds - 86_399) / 86_400
        let secondOfDay = Int(seconds - days * 86_400)
        let weekday = Int((days % 7 + 11) % 7)  // 1970-01-01 was a Thursday
        // Civil date from days since the epoch (Howard Hinnant's algorithm).
        days += 719_468
        let era = (days >= 0 ? days : days - 146_096) / 146_097
        let dayOfEra = days - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1_460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let monthIndex = (5 * dayOfYear + 2) / 153
        let day = Int(dayOfYear - (153 * monthIndex + 2) / 5 + 1)
        let month = Int(monthIndex < 10 ? monthIndex + 3 : monthIndex - 9)
        let year = Int(yearOfEra + era * 400 + (month <= 2 ? 1 : 0))
        let names = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ value: Int) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(names[weekday]), \(day) \(months[month - 1]) \(year) "
            + "\(two(secondOfDay / 3_600)):\(two(secondOfDay / 60 % 60)):\(two(secondOfDay % 60)) +0000"
    }

    // MARK: Body structure

    private func structure(of message: Message, using generator: inout some RandomNumberGenerator)
        throws(MessageError) -> Part
    {
        func textPart(_ subtype: String, _ text: String) -> Part {
            let content = BodyEncoder.normalizedText(text)
            return .text(subtype: subtype, content: content,
                         encoding: BodyEncoder.choose(forText: content, allow8Bit: options.allow8BitMIME))
        }
        let inline = message.attachments.filter { if case .inline = $0.disposition { true } else { false } }
        var attached = message.attachments.filter { if case .attachment = $0.disposition { true } else { false } }

        var html = message.htmlBody.map { textPart("html", $0) }
        if let htmlPart = html, !inline.isEmpty {
            let parts = [htmlPart] + inline.map { Part.attachment($0) }
            html = .multipart(subtype: "related", boundary: boundary(for: parts, using: &generator),
                              parts: parts, type: "text/html")
        } else if html == nil {
            attached = message.attachments  // inline parts with no HTML to show them are attachments
        }
        var body: Part?
        switch (message.textBody.map { textPart("plain", $0) }, html) {
        case (let text?, let html?):
            let parts = [text, html]
            body = .multipart(subtype: "alternative", boundary: boundary(for: parts, using: &generator), parts: parts, type: nil)
        case (let text?, nil): body = text
        case (nil, let html?): body = html
        case (nil, nil): body = attached.isEmpty ? textPart("plain", "") : nil
        }
        guard !attached.isEmpty else { return body! }
        let parts = (body.map { [$0] } ?? []) + attached.map { Part.attachment($0) }
        return .multipart(subtype: "mixed", boundary: boundary(for: parts, using: &generator), parts: parts, type: nil)
    }

    /// A random boundary that no 7bit or 8bit text part contains. (Quoted-printable and
    /// base64 output cannot contain `=_`, which every boundary starts with.)
    private func boundary(for parts: [Part], using generator: inout some RandomNumberGenerator) -> String {
        while true {
            let candidate = "=_sluice_" + Self.randomToken(24, using: &generator)
            if !parts.contains(where: { Self.contains($0, Array(candidate.utf8)) }) { return candidate }
        }
    }

    private static func contains(_ part: Part, _ needle: [UInt8]) -> Bool {
        switch part {
        case .text(_, let content, let encoding):
            return (encoding == .sevenBit || encoding == .eightBit) && containsDelimiter(content, needle)
        case .attachment:
            return false
        case .multipart(_, _, let parts, _):
            return parts.contains { contains($0, needle) }
        }
    }

    /// Whether a line of `content` starts with `--` and `boundary` (only such a line would be
    /// read as a delimiter).
    private static func containsDelimiter(_ content: [UInt8], _ boundary: [UInt8]) -> Bool {
        var lineStart = 0
        while lineStart + boundary.count + 2 <= content.count {
            if content[lineStart] == UInt8(ascii: "-"), content[lineStart + 1] == UInt8(ascii: "-"),
               content[(lineStart + 2)..<(lineStart + 2 + boundary.count)].elementsEqual(boundary) {
                return true
            }
            guard let newline = content[lineStart...].firstIndex(of: 10) else { return false }
            lineStart = newline + 1
        }
        return false
    }

    private static func estimatedSize(_ part: Part) -> Int {
        switch part {
        case .text(_, let content, _): content.count * 4 / 3 + 256
        case .attachment(let attachment):
            if case .bytes(let bytes) = attachment.source { bytes.count * 4 / 3 + bytes.count / 28 + 512 } else { 512 }
        case .multipart(_, _, let parts, _): parts.reduce(256) { $0 + estimatedSize($1) }
        }
    }

    // MARK: Writing

    /// Writes `part`'s content headers after `headers`, the empty line, then its body.
    private mutating func write(_ part: Part, headers: HeaderWriter) throws(MessageError) {
        var headers = headers
        switch part {
        case .text(let subtype, let content, let encoding):
            headers.field("Content-Type") { writer in
                writer.token("text/\(subtype)".utf8)
                writer.parameter("charset", "utf-8")
            }
            headers.field("Content-Transfer-Encoding", tokens: [encoding.rawValue])
            endHeaders(headers)
            switch encoding {
            case .sevenBit, .eightBit: output.append(contentsOf: content)
            case .quotedPrintable: BodyEncoder.quotedPrintable(content, into: &output)
            case .base64: BodyEncoder.base64Lines(content[...], into: &output)
            }

        case .attachment(let attachment):
            headers.field("Content-Type") { writer in
                writer.token(attachment.contentType.utf8)
                if let name = attachment.fileName { writer.parameter("name", name) }
            }
            headers.field("Content-Disposition") { writer in
                if case .inline = attachment.disposition { writer.token("inline".utf8) } else { writer.token("attachment".utf8) }
                if let name = attachment.fileName { writer.parameter("filename", name) }
            }
            if case .inline(let contentID) = attachment.disposition {
                headers.field("Content-ID", tokens: ["<\(try Self.messageID(contentID, "Content-ID"))>"])
            }
            headers.field("Content-Transfer-Encoding", tokens: ["base64"])
            endHeaders(headers)
            switch attachment.source {
            case .bytes(let bytes): BodyEncoder.base64Lines(bytes[...], into: &output)
            case .file(let path): try appendFile(path)
            }

        case .multipart(let subtype, let boundary, let parts, let type):
            headers.field("Content-Type") { writer in
                writer.token("multipart/\(subtype)".utf8)
                writer.parameter("boundary", boundary)
                if let type { writer.parameter("type", type) }
            }
            endHeaders(headers)
            // Each delimiter is CRLF "--" boundary; the CRLF belongs to the delimiter, so a
            // part's own last line break is kept by writing one more.
            for child in parts {
                output.append(contentsOf: "--\(boundary)\r\n".utf8)
                try write(child, headers: HeaderWriter(capacity: 256))
                output.append(contentsOf: [13, 10])
            }
            output.append(contentsOf: "--\(boundary)--\r\n".utf8)
        }
    }

    /// Appends a part's header fields and the empty line that ends them; the first are the
    /// message's own.
    private mutating func endHeaders(_ headers: HeaderWriter) {
        output.append(contentsOf: headers.bytes)
        output.append(13)
        output.append(10)
        if headerLength == nil { headerLength = output.count }
    }

    /// Appends a file's content as base64, reading it in pieces of 57 KiB (a whole number of
    /// 57-byte lines), so the file is never held in memory next to its encoding.
    private mutating func appendFile(_ path: String) throws(MessageError) {
        let file = try OpenFile(path)
        if let size = file.regularSize {
            output.reserveCapacity(output.count + size / 57 * 78 + 80)
        }
        let pieceSize = 57 * 1_024
        var piece = [UInt8](repeating: 0, count: pieceSize)
        var filled = 0
        while true {
            let count = try file.read(into: &piece, at: filled)
            filled += count
            if filled == pieceSize || count == 0 {
                BodyEncoder.base64Lines(piece[0..<filled], into: &output)
                filled = 0
            }
            if count == 0 { return }
        }
    }
}
