import SluiceCore
import SluiceMIME
import SluiceTransport

/// A message prepared for the wire once, then sent as many times as needed — to many
/// envelopes, on any connection, on every retry — without another copy.
///
/// It holds both wire forms: CRLF-normalised for `BDAT` (CHUNKING) and dot-stuffed with its
/// terminator for `DATA`. Bare CR and LF became CRLF before dot-stuffing, so the content can
/// never end the data early (SMTP smuggling).
public final class EncodedMessage: Sendable {
    /// The message's `Message-ID`, if it has one; reports carry it.
    public let messageID: String?
    /// The CRLF-normalised bytes (for BDAT).
    let chunk: SharedBytes
    /// The dot-stuffed bytes with `.<CRLF>` (for DATA).
    let stuffed: SharedBytes
    /// What the state machine needs to know of it.
    let info: SMTPContentInfo

    /// Prepares a checked message.
    public convenience init(_ message: RawMessage) {
        // A RawMessage is already CRLF-normalised, NUL-free and within the line limit, so
        // neither encoding can fail.
        try! self.init(bytes: message.bytes, messageID: message.messageID)
    }

    /// Prepares arbitrary content, which must already be a complete RFC 5322 message.
    ///
    /// - Throws: ``DataEncoder/ContentError`` for a NUL byte or a line over 1000 octets.
    public init(bytes: [UInt8], messageID: String? = nil) throws(DataEncoder.ContentError) {
        let normalized = try DataEncoder.normalized(bytes)
        let dotStuffed = try DataEncoder.dotStuffed(normalized)
        self.messageID = messageID
        chunk = SharedBytes(normalized)
        stuffed = SharedBytes(dotStuffed)
        info = SMTPContentInfo(dataLength: dotStuffed.count, chunkLength: normalized.count,
                               requires8BitMIME: normalized.contains { $0 >= 0x80 })
    }

    /// The message as it is sent (CRLF-normalised; `DATA` adds dot-stuffing on the wire).
    public var bytes: [UInt8] { chunk.array }

    /// The size in octets, as `SIZE` declares it.
    public var size: Int { info.chunkLength }
}

/// One message for the bulk API: its envelope and its prepared content.
public struct OutgoingMail: Sendable {
    /// Where it goes.
    public var envelope: Envelope
    /// What it says.
    public var message: EncodedMessage

    /// A message and its envelope.
    public init(envelope: Envelope, message: EncodedMessage) {
        self.envelope = envelope
        self.message = message
    }
}
