import SluiceCore
import SluiceTransport
#if canImport(Glibc)
import Glibc
#endif

/// How a message arrived, as the session saw it: kept with the message, written into the
/// trace headers an MTA adds, and printed by `sluice sink --print`.
struct Arrival: Sendable {
    /// The client's address and port.
    let client: SocketAddress?
    /// What the TLS handshake settled, if the session was encrypted.
    let tls: TLSDetails?
    /// When the end of the data arrived, since the Unix epoch (CLOCK_REALTIME).
    let time: Duration

    init(client: SocketAddress?, tls: TLSDetails?) {
        self.client = client
        self.tls = tls
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        time = .seconds(now.tv_sec) + .nanoseconds(now.tv_nsec)
    }
}

extension StoredMessage {
    /// The trace fields an MTA puts in front of a message it delivers, with CRLF line
    /// endings: `Return-Path` (RFC 5321 §4.4), one `X-Original-To` and `Delivered-To` per
    /// recipient (as Postfix's local delivery writes them), and a `Received` field (RFC 5321
    /// §4.4, RFC 3848's `with` keywords) naming the client by its EHLO name and address, the
    /// TLS version and cipher, and the AUTH identity.
    ///
    /// Everything that came from the client (its EHLO name, the addresses, the user) is
    /// written only if it is printable ASCII; other characters become `?`, so no header can
    /// be broken or forged through them.
    public func traceHeaders(by hostname: String) -> String {
        var fields = "Return-Path: <\(Self.safe(from?.address ?? ""))>\r\n"
        for recipient in recipients {
            fields += "X-Original-To: \(Self.safe(recipient.address))\r\n"
            fields += "Delivered-To: \(Self.safe(recipient.address))\r\n"
        }
        var received = "Received: from \(Self.safe(heloName))"
        if let clientAddress { received += " (\(Self.addressLiteral(clientAddress)))" }
        if let tls {
            received += "\r\n\t(using \(Self.safe(tls.version)) with cipher \(Self.safe(tls.cipher)))"
        }
        if let authenticatedUser { received += "\r\n\t(Authenticated sender: \(Self.safe(authenticatedUser)))" }
        let with = "ESMTP" + (wasSecure ? "S" : "") + (authenticatedUser == nil ? "" : "A")
        received += "\r\n\tby \(Self.safe(hostname)) (Sluice sink) with \(with) id \(id)"
        if recipients.count == 1 { received += "\r\n\tfor <\(Self.safe(recipients[0].address))>" }
        received += "; \(Self.rfc5322Date(receivedAt))\r\n"
        return fields + received
    }

    /// The message as a mailbox file holds it: the trace fields (unless `wireBytes`) and the
    /// content, with LF line endings for Unix mail tools, or CRLF as it came with `wireBytes`.
    func bytesForDisk(hostname: String, wireBytes: Bool) -> [UInt8] {
        if wireBytes { return content }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(content.count + 512)
        for piece in [Array(traceHeaders(by: hostname).utf8), content] {
            var index = 0
            while index < piece.count {
                if piece[index] == 13, index + 1 < piece.count, piece[index + 1] == 10 { index += 1 }
                bytes.append(piece[index])
                index += 1
            }
        }
        return bytes
    }

    /// Printable ASCII as it is; anything else (controls, CR, LF, 8-bit) as `?`.
    static func safe(_ text: String) -> String {
        String(decoding: text.utf8.map { (32...126).contains($0) ? $0 : UInt8(ascii: "?") }, as: UTF8.self)
    }

    /// `[127.0.0.1]` or `[IPv6:::1]` (RFC 5321 §4.1.3).
    static func addressLiteral(_ address: SocketAddress) -> String {
        address.isIPv6 ? "[IPv6:\(address.host)]" : "[\(address.host)]"
    }

    /// `Sat, 05 Dec 2026 01:40:00 +0000` (RFC 5322 §3.3), in UTC.
    static func rfc5322Date(_ sinceEpoch: Duration) -> String {
        utcTime(Int(sinceEpoch.components.seconds), "%a, %d %b %Y %H:%M:%S +0000")
    }
}

/// `seconds` since the Unix epoch, in UTC, written by `strftime` with `format`: the sink's
/// one way of writing a time (the mbox `From ` line, the `Received:` field).
func utcTime(_ seconds: Int, _ format: String) -> String {
    var time = time_t(seconds)
    var parts = tm()
    gmtime_r(&time, &parts)
    var buffer = [CChar](repeating: 0, count: 64)
    strftime(&buffer, buffer.count, format, &parts)
    return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
