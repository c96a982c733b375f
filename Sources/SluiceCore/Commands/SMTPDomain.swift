/// A host name or address literal as the client names itself in EHLO/HELO (RFC 5321
/// §4.1.1.1), validated so that nothing but a name can reach the wire.
public struct SMTPDomain: Hashable, Sendable, CustomStringConvertible {
    /// The name as sent: `mail.example.com` or `[192.0.2.1]`.
    public let name: String

    /// Validates `name`: a host name (letters, digits, hyphens; labels of 1–63 octets) or an
    /// address literal in brackets. An IP address without brackets is bracketed.
    public init(_ name: String) throws(AddressError) {
        if EnvelopeAddress.isIPv4(name) {
            self.name = "[\(name)]"
            return
        }
        if name.contains(":"), !name.hasPrefix("["), EnvelopeAddress.isIPv6(name) {
            self.name = "[IPv6:\(name)]"
            return
        }
        if name.hasPrefix("[") {
            guard name.hasSuffix("]"), EnvelopeAddress.isAddressLiteral(String(name.dropFirst().dropLast())) else {
                throw AddressError(.invalidDomain, name, "not an address literal")
            }
            self.name = name
            return
        }
        try EnvelopeAddress.validateHostName(Array(name.utf8)) { reason throws(AddressError) in
            throw AddressError(.invalidDomain, name, reason)
        }
        guard name.utf8.allSatisfy({ $0 < 0x80 }) else {
            throw AddressError(.invalidDomain, name, "an EHLO name must be ASCII (use the A-label)")
        }
        self.name = name
    }

    public var description: String { name }
}
