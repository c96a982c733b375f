import SluiceCore
import SluiceMIME
import SluiceTransport

/// A message prepared for the wire once, then sent as many times as needed — to many
/// envelopes, on any connection, on every retry — without another copy.
///
/// It is held once, CRLF-normalised: that is what `BDAT` (CHUNKING) sends, and for `DATA` the
/// same bytes followed by the terminator `.<CRLF>` — unless a line starts with a dot, when a
/// dot-stuffed copy is kept for `DATA` too. Bare CR and LF became CRLF before dot-stuffing, so
/// the content can never end the data early (SMTP smuggling).
public final class EncodedMessage: Sendable {
    /// The message's `Message-ID`, if it has one; reports carry it.
    public let messageID: String?
    /// The CRLF-normalised bytes (for BDAT).
    let chunk: SharedBytes
    /// What `DATA` writes, in order: the dot-stuffed content and its terminator. That is
    /// ``chunk`` and the shared terminator unless a line starts with a dot; then it is a
    /// dot-stuffed copy ending in the terminator (the only case the content is held twice).
    /// Made once, so a send appends it without building an array.
    let dataPieces: [SharedBytes]
    /// What `BDAT` writes: ``chunk``.
    let chunkPieces: [SharedBytes]
    /// What the state machine needs to know of it.
    let info: SMTPContentInfo

    /// `.<CRLF>`, shared by every message.
    private static let terminator = SharedBytes(Array(".\r\n".utf8))

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
        // Content that is already normalised (all that an outbox or a RawMessage holds) is
        // checked a line at a time and copied once. Anything else takes the one pass that
        // normalises it and notes what the two encodings need to know, or says what is wrong.
        let normalized: [UInt8]
        let traits: DataEncoder.Traits
        if let known = bytes.withUnsafeBufferPointer({ Self.traitsIfNormalized($0) }) {
            (normalized, traits) = (bytes, known)
        } else {
            (normalized, traits) = try DataEncoder.normalizedWithTraits(bytes)
        }
        self.messageID = messageID
        chunk = SharedBytes(normalized)
        chunkPieces = [chunk]
        if traits.hasLineStartingWithDot {
            dataPieces = [SharedBytes(try DataEncoder.dotStuffed(normalized))]
        } else {
            dataPieces = normalized.isEmpty ? [Self.terminator] : [chunk, Self.terminator]
        }
        info = SMTPContentInfo(dataLength: dataPieces.reduce(0) { $0 + $1.count }, chunkLength: normalized.count,
                               requires8BitMIME: traits.has8BitBytes)
    }

    /// What ``DataEncoder/normalizedWithTraits(_:maximumLineLength:)`` notes of `content`,
    /// when it would return `content` unchanged: empty, or what ``RawMessage`` keeps as it is
    /// (every line ends in CRLF, the last one too, no NUL, no line over the limit), read a line
    /// at a time with `memchr` and without a copy. Nil when it would change the content or
    /// refuse it.
    static func traitsIfNormalized(
        _ content: UnsafeBufferPointer<UInt8>, maximumLineLength: Int = DataEncoder.maximumLineLength
    ) -> DataEncoder.Traits? {
        content.isEmpty ? DataEncoder.Traits() : RawMessage.canonicalTraits(content, maximumLineLength: maximumLineLength)
    }

    private init(messageID: String?, chunk: SharedBytes, dataPieces: [SharedBytes], info: SMTPContentInfo) {
        self.messageID = messageID
        self.chunk = chunk
        self.dataPieces = dataPieces
        chunkPieces = [chunk]
        self.info = info
    }

    /// A copy whose `Message-ID`, held at `range` of the content, is `id`: how a load
    /// generator gives each copy of one prepared message its own identity without preparing
    /// the whole message again (a scan and two copies of it).
    ///
    /// The checks made when this message was prepared must still hold for the copy, so both
    /// the octets replaced and `id` must be printable ASCII (no CR, LF, NUL or 8-bit octet:
    /// no line changes length and no line is added) and the range must not start a line (so
    /// no line comes to start with a dot). Nil when they are not, when `id` is not as long as
    /// the range, or when this message keeps a dot-stuffed copy for `DATA`.
    package func copy(withMessageID id: String, at range: Range<Int>) -> EncodedMessage? {
        guard dataPieces.count == 2, dataPieces[0] === chunk, range.lowerBound > 0, range.upperBound <= chunk.count,
              id.utf8.count == range.count, id.utf8.allSatisfy(Self.isPrintable)
        else { return nil }
        let source = chunk.bytes
        guard source[range.lowerBound - 1] != 10, source[range].allSatisfy(Self.isPrintable) else { return nil }
        let copy = SharedBytes(count: source.count) { buffer in
            buffer.copyMemory(from: source)
            var index = range.lowerBound
            for byte in id.utf8 {
                buffer[index] = byte
                index += 1
            }
        }
        return EncodedMessage(messageID: id, chunk: copy, dataPieces: [copy, Self.terminator], info: info)
    }

    private static func isPrintable(_ byte: UInt8) -> Bool { byte > 0x20 && byte < 0x7F }

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

    /// Why it cannot be sent, when it could not be made (``SMTPClient/send(_:toEach:unsubscribe:maximumInFlight:)``
    /// reports such a copy rather than dropping it).
    package var problem: SMTPError?

    /// A message and its envelope.
    public init(envelope: Envelope, message: EncodedMessage) {
        self.envelope = envelope
        self.message = message
    }

    /// `message`'s copy for `recipient` alone: `To` is the recipient, the `Message-ID` its
    /// own, and, with `unsubscribe`, `List-Unsubscribe` carries the recipient's own link. It
    /// is signed by `dkim` after those are set, so that the signature covers them.
    /// - Throws: ``SMTPError`` of kind ``SMTPError/Kind/invalidInput`` when the copy cannot be
    ///   encoded or signed.
    public init(personalizing message: Message, for recipient: Mailbox, unsubscribe: UnsubscribeLinks? = nil,
                dkim: [DKIMSigner] = []) throws(SMTPError) {
        var copy = message
        copy.to = [recipient]
        copy.cc = []
        copy.bcc = []
        copy.messageID = nil
        do {
            if let unsubscribe { copy.listUnsubscribe = try unsubscribe.listUnsubscribe(for: recipient.address.address) }
            let signed = try DKIMSigner.sign(try copy.encoded(), with: dkim)
            self.init(envelope: Envelope(from: message.sender?.address ?? message.from.address, to: [recipient.address]),
                      message: EncodedMessage(signed))
        } catch {
            throw SMTPError(.invalidInput, "the copy for \(recipient.address) cannot be made: \(error); nothing was sent")
        }
    }
}
