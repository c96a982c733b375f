import CLibUV
#if canImport(Glibc)
import Glibc
#endif

/// An IPv4 or IPv6 address and a port.
public struct SocketAddress: Sendable, Hashable, CustomStringConvertible {
    /// The raw `sockaddr_in` or `sockaddr_in6` bytes.
    private let raw: [UInt8]

    /// The address as text (`127.0.0.1`, `::1`), without brackets or port.
    public let host: String
    /// The port.
    public let port: Int

    /// True for an IPv6 address.
    public var isIPv6: Bool { family == sa_family_t(AF_INET6) }

    private var family: sa_family_t {
        raw.withUnsafeBytes { $0.load(as: sockaddr.self).sa_family }
    }

    /// Parses an IP literal (`192.0.2.1`, `::1`, `[::1]`) and a port; no name resolution.
    ///
    /// - Throws: ``TransportError/Kind/invalidArgument`` if `ipAddress` is not an IP literal
    ///   or `port` is outside 0...65535.
    public init(ipAddress: String, port: Int) throws(TransportError) {
        guard (0...65535).contains(port) else {
            throw TransportError(.invalidArgument, "port \(port) is outside 0...65535")
        }
        let literal = SocketAddress.stripBrackets(ipAddress)
        var v4 = sockaddr_in()
        if uv_ip4_addr(literal, Int32(port), &v4) == 0 {
            self.init(bytes: &v4, length: MemoryLayout<sockaddr_in>.size)
            return
        }
        var v6 = sockaddr_in6()
        if uv_ip6_addr(literal, Int32(port), &v6) == 0 {
            self.init(bytes: &v6, length: MemoryLayout<sockaddr_in6>.size)
            return
        }
        throw TransportError(.invalidArgument, "'\(ipAddress)' is not an IPv4 or IPv6 address")
    }

    /// Copies a `sockaddr_in` or `sockaddr_in6` from memory.
    init<Address>(bytes: UnsafePointer<Address>, length: Int) {
        let raw = Array(UnsafeRawBufferPointer(start: bytes, count: length))
        self.init(raw: raw)
    }

    private init(raw: [UInt8]) {
        self.raw = raw
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN) + 1)
        let family = raw.withUnsafeBytes { $0.load(as: sockaddr.self).sa_family }
        if family == sa_family_t(AF_INET6) {
            let address = raw.withUnsafeBytes { $0.loadUnaligned(as: sockaddr_in6.self) }
            withUnsafePointer(to: address) { _ = uv_ip6_name($0, &text, text.count) }
            port = Int(UInt16(bigEndian: address.sin6_port))
        } else {
            let address = raw.withUnsafeBytes { $0.loadUnaligned(as: sockaddr_in.self) }
            withUnsafePointer(to: address) { _ = uv_ip4_name($0, &text, text.count) }
            port = Int(UInt16(bigEndian: address.sin_port))
        }
        host = String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// Reads an address from a `sockaddr` of either family; nil for other families.
    init?(_ address: UnsafePointer<sockaddr>) {
        switch Int32(address.pointee.sa_family) {
        case AF_INET:
            self.init(bytes: address, length: MemoryLayout<sockaddr_in>.size)
        case AF_INET6:
            self.init(bytes: address, length: MemoryLayout<sockaddr_in6>.size)
        default:
            return nil
        }
    }

    /// Reads an address with a `getsockname`-style call: `call` fills the `sockaddr` it is given
    /// and returns 0. `Length` is the call's length type (`socklen_t`, or libuv's `Int32`).
    static func read<Length: FixedWidthInteger>(
        _ call: (UnsafeMutablePointer<sockaddr>, UnsafeMutablePointer<Length>) -> Int32
    ) -> SocketAddress? {
        var storage = sockaddr_storage()
        var length = Length(MemoryLayout<sockaddr_storage>.size)
        return withUnsafeMutablePointer(to: &storage) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { address in
                call(address, &length) == 0 ? SocketAddress(address) : nil
            }
        }
    }

    /// The same address with another port.
    func with(port newPort: Int) -> SocketAddress {
        // Safe: the host was produced by uv_ip*_name and the port is in range.
        try! SocketAddress(ipAddress: host, port: newPort)
    }

    /// Calls `body` with a pointer to the `sockaddr`.
    func withSockaddr<Result>(_ body: (UnsafePointer<sockaddr>) -> Result) -> Result {
        raw.withUnsafeBytes { bytes in
            body(bytes.baseAddress!.assumingMemoryBound(to: sockaddr.self))
        }
    }

    /// `127.0.0.1:25` or `[::1]:25`.
    public var description: String { isIPv6 ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// True when `host` is an IPv4 or IPv6 literal (brackets allowed) rather than a name.
    public static func isIPLiteral(_ host: String) -> Bool {
        (try? SocketAddress(ipAddress: host, port: 0)) != nil
    }

    private static func stripBrackets(_ host: String) -> String {
        if host.hasPrefix("["), host.hasSuffix("]") { return String(host.dropFirst().dropLast()) }
        return host
    }
}
