import SluiceCore
public import SluiceMIME
import SluiceTransport

/// Per-recipient one-click unsubscribe links (RFC 8058): a URL template whose `{recipient}`
/// and `{token}` are filled for each copy, the token an HMAC-SHA-256 of the recipient under a
/// secret of yours, so that your endpoint can tell a real request from a forged one
/// (``isValid(token:for:)``) without keeping a table of links.
///
/// ```swift
/// let links = try UnsubscribeLinks(
///     urlTemplate: "https://example.com/unsubscribe?r={recipient}&t={token}", secret: secret,
///     mailto: "unsubscribe@example.com")
/// for try await report in try client.send(newsletter, toEach: subscribers, unsubscribe: links) { … }
/// ```
public struct UnsubscribeLinks: Sendable {
    /// The template: an `https:` URL with `{token}` and usually `{recipient}`.
    public let urlTemplate: String
    /// The `mailto:` address each copy carries too, if any.
    public let mailto: String?
    /// Whether each copy carries `List-Unsubscribe-Post: List-Unsubscribe=One-Click`.
    public let oneClick: Bool
    /// The secret, as an HMAC key made once for every copy.
    private let key: Digest.HMACKey

    /// Links from `urlTemplate`, signed with `secret` (at least 16 random bytes, kept private).
    /// - Throws: ``MessageError`` for a template that is not `https:` or has no
    ///   `{token}`, and for a short secret.
    public init(urlTemplate: String, secret: [UInt8], mailto: String? = nil, oneClick: Bool = true) throws(MessageError) {
        guard secret.count >= 16 else {
            throw MessageError(.invalidHeader, line: 0, detail: "the unsubscribe secret must be at least 16 bytes")
        }
        guard urlTemplate.contains("{token}") else {
            throw MessageError(.invalidHeader, line: 0, detail: "the unsubscribe URL template '\(urlTemplate)' has no {token}")
        }
        // Checked with a typical address; a copy whose address makes the URL too long is
        // refused when it is made.
        let typical = urlTemplate.replacingOccurrences(of: "{recipient}", with: "user%40example.com")
            .replacingOccurrences(of: "{token}", with: String(repeating: "x", count: Self.tokenLength))
        _ = try ListUnsubscribe(url: typical, mailto: mailto, oneClick: oneClick)
        self.urlTemplate = urlTemplate
        key = Digest.HMACKey(.sha256, key: secret)
        self.mailto = mailto
        self.oneClick = oneClick
    }

    private static let tokenLength = 22  // 16 bytes of HMAC, base64url without padding

    /// The token for `recipient` (its address compared without ASCII case): 16 bytes of
    /// HMAC-SHA-256, base64url.
    public func token(for recipient: String) -> String {
        let mac = key.mac(Self.lowered(recipient).utf8)
        return Base64.encode(Array(mac.prefix(16)))
            .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
            .replacingOccurrences(of: "=", with: "")
    }

    /// Whether `token` is the one ``token(for:)`` makes for `recipient`, compared in constant time.
    public func isValid(token: String, for recipient: String) -> Bool {
        Hex.constantTimeEqual(self.token(for: recipient).utf8, token.utf8)
    }

    /// The URL for `recipient`: the template with the recipient percent-encoded and its token.
    public func url(for recipient: String) -> String {
        urlTemplate.replacingOccurrences(of: "{recipient}", with: Self.percentEncoded(recipient))
            .replacingOccurrences(of: "{token}", with: token(for: recipient))
    }

    /// The fields for `recipient`'s copy.
    public func listUnsubscribe(for recipient: String) throws(MessageError) -> ListUnsubscribe {
        try ListUnsubscribe(url: url(for: recipient), mailto: mailto, oneClick: oneClick)
    }

    private static func percentEncoded(_ text: String) -> String {
        var encoded = ""
        for byte in text.utf8 {
            let character = Unicode.Scalar(byte)
            if ("a"..."z").contains(character) || ("A"..."Z").contains(character) || ("0"..."9").contains(character)
                || "-._~".unicodeScalars.contains(character) {
                encoded.unicodeScalars.append(character)
            } else {
                encoded.unicodeScalars.append("%")
                encoded.unicodeScalars.append(Unicode.Scalar(Hex.digit(byte >> 4, upper: true)))
                encoded.unicodeScalars.append(Unicode.Scalar(Hex.digit(byte & 15, upper: true)))
            }
        }
        return encoded
    }

    private static func lowered(_ text: String) -> String {
        String(String.UnicodeScalarView(text.unicodeScalars.map { ("A"..."Z").contains($0) ? Unicode.Scalar($0.value + 32)! : $0 }))
    }
}
