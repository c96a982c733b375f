/// Parameters of `MAIL FROM` (RFC 1870 SIZE, RFC 6152 BODY, RFC 6531 SMTPUTF8, RFC 3461
/// RET/ENVID, RFC 8689 REQUIRETLS). Each is validated when set, so encoding cannot fail.
public struct MailParameters: Hashable, Sendable {
    /// The body type declared with `BODY=`.
    public enum BodyType: String, Hashable, Sendable {
        /// `BODY=7BIT`.
        case sevenBit = "7BIT"
        /// `BODY=8BITMIME`.
        case eightBitMIME = "8BITMIME"
        /// `BODY=BINARYMIME` (needs CHUNKING).
        case binaryMIME = "BINARYMIME"
    }

    /// What a delivery status notification returns (`RET=`).
    public enum Return: String, Hashable, Sendable {
        /// The whole message.
        case full = "FULL"
        /// The headers only.
        case headers = "HDRS"
    }

    /// `SIZE=`: the message size in octets.
    public var size: Int?
    /// `BODY=`.
    public var body: BodyType?
    /// `SMTPUTF8`.
    public var smtpUTF8: Bool
    /// `REQUIRETLS`.
    public var requireTLS: Bool
    /// `RET=`.
    public var returnContent: Return?
    /// `ENVID=`, xtext-encoded on the wire.
    public private(set) var envelopeID: String?

    /// No parameters.
    public init(size: Int? = nil, body: BodyType? = nil, smtpUTF8: Bool = false, requireTLS: Bool = false,
                returnContent: Return? = nil) {
        self.size = size
        self.body = body
        self.smtpUTF8 = smtpUTF8
        self.requireTLS = requireTLS
        self.returnContent = returnContent
    }

    /// Sets `ENVID`: printable ASCII, at most 100 characters (RFC 3461 §4.4).
    public mutating func setEnvelopeID(_ id: String?) throws(AddressError) {
        if let id {
            guard !id.isEmpty, id.utf8.count <= 100, id.utf8.allSatisfy({ (32...126).contains($0) }) else {
                throw AddressError(.controlCharacter, id, "an ENVID is 1 to 100 printable ASCII characters")
            }
        }
        envelopeID = id
    }

    /// Whether `RET` or `ENVID` is set (RFC 3461).
    var hasDeliveryStatusParameters: Bool { returnContent != nil || envelopeID != nil }

    /// Drops `RET` and `ENVID`, for a server that does not offer DSN.
    mutating func removeDeliveryStatusParameters() {
        returnContent = nil
        envelopeID = nil
    }

    func encode(into bytes: inout [UInt8]) {
        if let size {
            bytes.append(contentsOf: " SIZE=".utf8)
            bytes.appendDecimal(max(size, 0))
        }
        if let body { bytes.append(contentsOf: " BODY=\(body.rawValue)".utf8) }
        if smtpUTF8 { bytes.append(contentsOf: " SMTPUTF8".utf8) }
        if requireTLS { bytes.append(contentsOf: " REQUIRETLS".utf8) }
        if let returnContent { bytes.append(contentsOf: " RET=\(returnContent.rawValue)".utf8) }
        if let envelopeID {
            bytes.append(contentsOf: " ENVID=".utf8)
            XText.encode(envelopeID, into: &bytes)
        }
    }
}

/// Parameters of `RCPT TO` for delivery status notifications (RFC 3461).
public struct RecipientParameters: Hashable, Sendable {
    /// When to notify (`NOTIFY=`).
    public enum Notify: Hashable, Sendable {
        /// `NOTIFY=NEVER`.
        case never
        /// `NOTIFY=` with any of SUCCESS, FAILURE, DELAY.
        case on(success: Bool, failure: Bool, delay: Bool)
    }

    /// `NOTIFY=`.
    public var notify: Notify?
    /// `ORCPT=rfc822;…`: the original recipient, xtext-encoded on the wire.
    public private(set) var originalRecipient: EnvelopeAddress?

    /// No parameters.
    public init(notify: Notify? = nil) { self.notify = notify }

    /// Sets `ORCPT`. It must be an ASCII address (the `rfc822` type).
    public mutating func setOriginalRecipient(_ address: EnvelopeAddress?) throws(AddressError) {
        if let address, address.requiresSMTPUTF8 {
            throw AddressError(.needsSMTPUTF8, address.address, "ORCPT=rfc822 takes an ASCII address")
        }
        originalRecipient = address
    }

    func encode(into bytes: inout [UInt8]) {
        switch notify {
        case .none: break
        case .never: bytes.append(contentsOf: " NOTIFY=NEVER".utf8)
        case .on(let success, let failure, let delay):
            let words = [(success, "SUCCESS"), (failure, "FAILURE"), (delay, "DELAY")].filter(\.0).map(\.1)
            if !words.isEmpty { bytes.append(contentsOf: " NOTIFY=\(words.joined(separator: ","))".utf8) }
        }
        if let originalRecipient {
            bytes.append(contentsOf: " ORCPT=rfc822;".utf8)
            XText.encode(originalRecipient.address, into: &bytes)
        }
    }
}

/// xtext (RFC 3461 §4): printable ASCII except `+` and `=` as is, everything else `+HH`.
enum XText {
    /// Appends `text` xtext-encoded (RFC 3461 §4). A worker writes one or more for every
    /// message (ENVID, each ORCPT): no allocation.
    static func encode(_ text: String, into bytes: inout [UInt8]) {
        for byte in text.utf8 {
            if (33...126).contains(byte), byte != UInt8(ascii: "+"), byte != UInt8(ascii: "=") {
                bytes.append(byte)
            } else {
                bytes.append(UInt8(ascii: "+"))
                bytes.append(Hex.digit(byte >> 4, upper: true))
                bytes.append(Hex.digit(byte & 0xF, upper: true))
            }
        }
    }
}
