/// What a server's EHLO reply advertises (RFC 5321 §4.1.1.1 and the extensions' RFCs).
///
/// Keywords are case-insensitive. Unknown keywords are kept in ``extensions`` with their
/// parameters, so nothing the server said is lost.
public struct SMTPCapabilities: Hashable, Sendable {
    /// The server's name from the first line of the EHLO reply.
    public var serverName: String
    /// Every keyword (upper-cased) with its parameters, in the order advertised.
    public var extensions: [String: [String]]

    /// No extensions (a server that only answered HELO).
    public init(serverName: String = "", extensions: [String: [String]] = [:]) {
        self.serverName = serverName
        self.extensions = extensions
    }

    /// Reads the capabilities from a 250 reply to EHLO: the first line is the server's
    /// greeting, each further line a keyword and its parameters.
    public init(ehloReply reply: SMTPReply) {
        serverName = String(reply.firstLine.split(separator: " ", maxSplits: 1).first ?? "")
        extensions = [:]
        for line in reply.lines.dropFirst() {
            let words = line.split(separator: " ", omittingEmptySubsequences: true)
            guard let keyword = words.first else { continue }
            var name = keyword.uppercased()
            var parameters = words.dropFirst().map(String.init)
            // Old servers advertise "AUTH=LOGIN PLAIN" alongside "AUTH LOGIN PLAIN".
            if name.hasPrefix("AUTH="), name.count > 5 {
                parameters.insert(String(keyword.dropFirst(5)), at: 0)
                name = "AUTH"
            }
            if let existing = extensions[name] {
                extensions[name] = existing + parameters.filter { !existing.contains($0) }
            } else {
                extensions[name] = parameters
            }
        }
    }

    /// Whether `keyword` was advertised.
    public func supports(_ keyword: String) -> Bool { extensions[keyword.uppercased()] != nil }

    /// PIPELINING (RFC 2920).
    public var pipelining: Bool { supports("PIPELINING") }
    /// CHUNKING: BDAT (RFC 3030).
    public var chunking: Bool { supports("CHUNKING") }
    /// BINARYMIME (RFC 3030).
    public var binaryMIME: Bool { supports("BINARYMIME") }
    /// 8BITMIME (RFC 6152).
    public var eightBitMIME: Bool { supports("8BITMIME") }
    /// SMTPUTF8 (RFC 6531).
    public var smtpUTF8: Bool { supports("SMTPUTF8") }
    /// STARTTLS (RFC 3207).
    public var startTLS: Bool { supports("STARTTLS") }
    /// ENHANCEDSTATUSCODES (RFC 2034).
    public var enhancedStatusCodes: Bool { supports("ENHANCEDSTATUSCODES") }
    /// DSN (RFC 3461).
    public var deliveryStatusNotifications: Bool { supports("DSN") }
    /// REQUIRETLS (RFC 8689).
    public var requireTLS: Bool { supports("REQUIRETLS") }

    /// SIZE (RFC 1870): nil if not advertised; 0 if advertised without a limit.
    public var maximumMessageSize: Int? {
        guard let parameters = extensions["SIZE"] else { return nil }
        return parameters.first.flatMap { Int($0) } ?? 0
    }

    /// The SASL mechanisms of the AUTH keyword, upper-cased (RFC 4954).
    public var authenticationMechanisms: [String] {
        (extensions["AUTH"] ?? []).map { $0.uppercased() }
    }
}
