/// How a recipient leaves a list: the `List-Unsubscribe` field (RFC 2369) and, for one-click
/// unsubscription, `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058), which Gmail
/// and Yahoo require of bulk senders since February 2024.
///
/// ```swift
/// message.listUnsubscribe = try ListUnsubscribe(
///     url: "https://example.com/unsubscribe?u=42&t=9f8e", mailto: "unsubscribe@example.com", oneClick: true)
/// ```
///
/// With ``oneClick``, the URL receives a POST whose body is `List-Unsubscribe=One-Click` and
/// must unsubscribe without asking anything more. A DKIM signature must cover both fields;
/// ``Sluice/DKIMSigner``'s default headers do.
public struct ListUnsubscribe: Hashable, Sendable {
    /// The HTTPS URL, if any.
    public let url: String?
    /// The address to mail, if any (without `mailto:`; a `?subject=…` may follow it).
    public let mailto: String?
    /// Whether `List-Unsubscribe-Post: List-Unsubscribe=One-Click` is written.
    public let oneClick: Bool

    /// The fields for an HTTPS URL, a mail address, or both.
    /// - Throws: ``MessageError/Kind/invalidHeader`` for no URI, a URL that is not `https:`,
    ///   one-click without a URL, or a URI with a space, a control, `<`, `>` or `,`, or over
    ///   975 octets (a URI is never folded, and a line holds 998).
    public init(url: String? = nil, mailto: String? = nil, oneClick: Bool = false) throws(MessageError) {
        guard url != nil || mailto != nil else {
            throw MessageError(.invalidHeader, line: 0, detail: "List-Unsubscribe needs an https: URL or a mailto: address")
        }
        var mailto = mailto
        if let address = mailto, address.lowercased().hasPrefix("mailto:") { mailto = String(address.dropFirst(7)) }
        if let url {
            guard url.lowercased().hasPrefix("https://"), url.utf8.count > 8 else {
                throw MessageError(.invalidHeader, line: 0, detail: "the List-Unsubscribe URL '\(url)' is not https:")
            }
            try Self.check(url)
        }
        if let mailto {
            guard let at = mailto.firstIndex(of: "@"), at != mailto.startIndex, mailto.index(after: at) != mailto.endIndex else {
                throw MessageError(.invalidHeader, line: 0, detail: "the List-Unsubscribe address '\(mailto)' is not an address")
            }
            try Self.check("mailto:" + mailto)
        }
        if oneClick, url == nil {
            throw MessageError(.invalidHeader, line: 0, detail: "one-click unsubscription (RFC 8058) needs an https: URL")
        }
        self.url = url
        self.mailto = mailto
        self.oneClick = oneClick
    }

    /// The `List-Unsubscribe` value's elements, each `<uri>`, the URL first.
    var elements: [String] {
        var elements: [String] = []
        if let url { elements.append("<\(url)>") }
        if let mailto { elements.append("<mailto:\(mailto)>") }
        return elements
    }

    private static func check(_ uri: String) throws(MessageError) {
        let bytes = uri.utf8
        guard bytes.count <= 975,
              bytes.allSatisfy({ $0 > 32 && $0 < 127 && $0 != UInt8(ascii: "<") && $0 != UInt8(ascii: ">") && $0 != UInt8(ascii: ",") })
        else {
            throw MessageError(.invalidHeader, line: 0,
                               detail: "the List-Unsubscribe URI '\(uri.debugDescription)' must be printable ASCII without spaces, <, > or ',' and at most 975 octets")
        }
    }
}
