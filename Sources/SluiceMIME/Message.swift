public import Foundation

/// An email message to build: addresses, subject, text and HTML bodies, attachments and
/// inline parts, encoded once (``encoded(_:)``) into an RFC 5322 / MIME message that every
/// reader parses the same way.
///
/// ```swift
/// var message = Message(from: try Mailbox("Alerts <alerts@example.com>"),
///                        to: [try Mailbox("ada@example.com")],
///                        subject: "Your report is ready",
///                        text: "Hello Ada,\n\nYour report is attached.")
/// message.htmlBody = "<p>Hello Ada,</p><p>Your report is attached.</p>"
/// message.attachments.append(Attachment(contentsOfFile: "/tmp/report.pdf"))
/// let report = try await client.send(message)
/// ```
///
/// Bcc recipients are envelope recipients only: they are never written as a header. The
/// `Date` and `Message-ID` are generated when encoding unless set.
public struct Message: Hashable, Sendable {
    /// The author (`From`).
    public var from: Mailbox
    /// The mailbox that actually sends, when it is not the author (`Sender`); it is also the
    /// envelope sender then, so bounces go to it.
    public var sender: Mailbox?
    /// Primary recipients (`To`).
    public var to: [Mailbox]
    /// Copied recipients (`Cc`).
    public var cc: [Mailbox]
    /// Blind-copied recipients: envelope only, never a header.
    public var bcc: [Mailbox]
    /// Where replies go (`Reply-To`), when not to the author.
    public var replyTo: [Mailbox]
    /// The subject; any Unicode, but no CR, LF or NUL.
    public var subject: String?
    /// The origination date; now, when nil.
    public var date: Date?
    /// The `Message-ID`, without angle brackets (`id@example.com`); generated from random
    /// bytes and the author's domain when nil.
    public var messageID: String?
    /// The `In-Reply-To` message IDs, without angle brackets.
    public var inReplyTo: [String]
    /// The `References` message IDs, without angle brackets.
    public var references: [String]
    /// The priority (`X-Priority` and `Importance`, written only when not normal).
    public var priority: Priority
    /// How to unsubscribe (`List-Unsubscribe`, and `List-Unsubscribe-Post` for one click).
    public var listUnsubscribe: ListUnsubscribe?
    /// More header fields, written in order after the standard ones.
    public var headers: [Header]
    /// The plain-text body.
    public var textBody: String?
    /// The HTML body. With a text body too, the message is `multipart/alternative`; with
    /// inline parts, the HTML and its parts are `multipart/related`.
    public var htmlBody: String?
    /// Attachments and inline parts, in order.
    public var attachments: [Attachment]

    /// A message from `from` to `to`, with an optional subject and bodies.
    public init(from: Mailbox, to: [Mailbox] = [], cc: [Mailbox] = [], bcc: [Mailbox] = [],
                subject: String? = nil, text: String? = nil, html: String? = nil) {
        self.from = from
        self.to = to
        self.cc = cc
        self.bcc = bcc
        replyTo = []
        self.subject = subject
        inReplyTo = []
        references = []
        priority = .normal
        headers = []
        textBody = text
        htmlBody = html
        attachments = []
    }

    /// Every recipient of the envelope (To, Cc and Bcc), each address once, in that order.
    public var recipients: [Mailbox] {
        var seen = Set<String>()
        return (to + cc + bcc).filter { seen.insert($0.address.address.lowercased()).inserted }
    }

    /// Whether the message can only be sent with SMTPUTF8 (a mailbox's local part is UTF-8).
    public var requiresSMTPUTF8: Bool {
        ([from] + (sender.map { [$0] } ?? []) + to + cc + bcc + replyTo).contains(where: \.requiresSMTPUTF8)
    }

    /// Encodes the message into the bytes that go on the wire.
    ///
    /// - Throws: ``MessageError`` for a header that cannot be written (a bad name, CR, LF or
    ///   NUL in a value, a name this type writes itself), a malformed message ID, content type
    ///   or content ID, an attachment file that cannot be read, or a UTF-8 local part without
    ///   ``EncodingOptions/smtpUTF8``.
    public func encoded(_ options: EncodingOptions = EncodingOptions()) throws(MessageError) -> RawMessage {
        var generator = SeededFromSystem()
        return try encoded(options, using: &generator)
    }

    /// Encodes the message, drawing the generated Message-ID and MIME boundaries from
    /// `generator` (a seeded generator makes the output repeatable).
    public func encoded(_ options: EncodingOptions, using generator: inout some RandomNumberGenerator)
        throws(MessageError) -> RawMessage
    {
        var encoder = MessageEncoder(options: options)
        return try encoder.encode(self, using: &generator)
    }
}

/// How a ``Message`` is encoded, which depends on what the server accepts.
public struct EncodingOptions: Hashable, Sendable {
    /// Text bodies with non-ASCII go as 8bit instead of quoted-printable or base64 (only for
    /// a server that offers 8BITMIME).
    public var allow8BitMIME: Bool
    /// Addresses are written in UTF-8 rather than with A-label domains, and UTF-8 local parts
    /// are allowed (only for a server that offers SMTPUTF8).
    public var smtpUTF8: Bool

    /// Options; the defaults are 7-bit clean and readable by any server.
    public init(allow8BitMIME: Bool = false, smtpUTF8: Bool = false) {
        self.allow8BitMIME = allow8BitMIME
        self.smtpUTF8 = smtpUTF8
    }
}

/// A message's priority, as mail readers show it.
public enum Priority: Hashable, Sendable {
    case high, normal, low
}

/// A header field the caller adds (`List-Unsubscribe`, `X-Campaign`, …).
public struct Header: Hashable, Sendable {
    /// The field name: printable ASCII without `:` or space.
    public var name: String
    /// The value; any Unicode (non-ASCII is RFC 2047 encoded) but no CR, LF or NUL.
    public var value: String

    /// A header field; checked when the message is encoded.
    public init(_ name: String, _ value: String) {
        self.name = name
        self.value = value
    }
}

/// A file attached to a message, or a part shown inline (an image the HTML refers to by
/// `cid:`). Its content is always base64, so every byte arrives as it was.
public struct Attachment: Hashable, Sendable {
    /// Where the content comes from.
    public enum Source: Hashable, Sendable {
        /// Bytes in memory.
        case bytes([UInt8])
        /// A file, read when the message is encoded (in pieces, never whole in memory twice).
        case file(path: String)
    }

    /// How a reader shows the part.
    public enum Disposition: Hashable, Sendable {
        /// As an attachment.
        case attachment
        /// Inline, referred to from the HTML body as `cid:<contentID>`.
        case inline(contentID: String)
    }

    /// The content.
    public var source: Source
    /// The file name readers show and save as; any Unicode (RFC 2231 encoded when needed).
    public var fileName: String?
    /// The media type, `type/subtype`.
    public var contentType: String
    /// Attachment or inline.
    public var disposition: Disposition

    /// Bytes as an attachment; the content type is guessed from the file name's extension
    /// when not given.
    public init(data: [UInt8], fileName: String?, contentType: String? = nil, disposition: Disposition = .attachment) {
        source = .bytes(data)
        self.fileName = fileName
        self.contentType = contentType ?? MediaTypes.guess(fileName)
        self.disposition = disposition
    }

    /// A file as an attachment, named by its last path component unless `fileName` is given.
    public init(contentsOfFile path: String, fileName: String? = nil, contentType: String? = nil,
                disposition: Disposition = .attachment) {
        source = .file(path: path)
        let name = fileName ?? path.split(separator: "/").last.map(String.init)
        self.fileName = name
        self.contentType = contentType ?? MediaTypes.guess(name)
        self.disposition = disposition
    }

    /// An inline part (an image the HTML shows with `<img src="cid:logo@example.com">`).
    public static func inline(data: [UInt8], contentID: String, fileName: String? = nil,
                              contentType: String? = nil) -> Attachment {
        Attachment(data: data, fileName: fileName, contentType: contentType, disposition: .inline(contentID: contentID))
    }
}

/// Media types by file extension, for the common attachment kinds.
enum MediaTypes {
    private static let byExtension: [String: String] = [
        "txt": "text/plain", "csv": "text/csv", "html": "text/html", "htm": "text/html", "ics": "text/calendar",
        "xml": "application/xml", "json": "application/json", "pdf": "application/pdf", "zip": "application/zip",
        "gz": "application/gzip", "png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "gif": "image/gif",
        "webp": "image/webp", "svg": "image/svg+xml", "doc": "application/msword",
        "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
        "eml": "message/rfc822", "mp3": "audio/mpeg", "mp4": "video/mp4",
    ]

    static func guess(_ fileName: String?) -> String {
        guard let fileName, let dot = fileName.lastIndex(of: ".") else { return "application/octet-stream" }
        return byExtension[fileName[fileName.index(after: dot)...].lowercased()] ?? "application/octet-stream"
    }
}

/// A fast generator seeded with 128 bits from the system's (two `getrandom` calls instead of
/// one per draw): the Message-ID and boundaries need unpredictability and uniqueness, not a
/// system call per character. wyrand (Wang Yi), 2^64 period per seed.
struct SeededFromSystem: RandomNumberGenerator {
    private var state: UInt64
    private let increment: UInt64

    init() {
        var system = SystemRandomNumberGenerator()
        state = system.next()
        increment = system.next() | 1
    }

    mutating func next() -> UInt64 {
        state &+= 0xA076_1D64_78BD_642F &+ increment &- 1
        let product = state.multipliedFullWidth(by: state ^ 0xE703_7ED1_A0B4_28DB)
        return product.high ^ product.low
    }
}
