public import Foundation
import SluiceCore
public import SluiceMIME
public import SluiceTransport

/// Signs messages with DKIM (RFC 6376): `rsa-sha256` with 1024- to 4096-bit keys, or
/// `ed25519-sha256` (RFC 8463).
///
/// A message is signed once, after its final encoding: the bytes signed are the bytes sent
/// (CRLF-normalised, before dot-stuffing), so every retry and every pooled connection sends
/// the same signature. Signing adds a `DKIM-Signature` header at the top; several signers can
/// sign one message in turn (an RSA and an Ed25519 signature, say). No `l=` tag is ever
/// written, so nothing can be appended to a signed body.
///
/// ```swift
/// let signer = try DKIMSigner(domain: "example.com", selector: "mail2026",
///                             key: SigningKey(pemFile: "/etc/dkim/mail2026.pem"))
/// let signed = try signer.sign(try message.encoded())
/// ```
public struct DKIMSigner: Sendable {
    /// How a part is canonicalised before hashing (RFC 6376 §3.4).
    public enum Canonicalization: String, Sendable, Hashable {
        /// Byte for byte (trailing empty body lines aside).
        case simple
        /// Whitespace and header-name case normalised; survives most relays' rewriting.
        case relaxed
    }

    /// The headers signed when present: those a reader relies on, as MailKit and the large
    /// providers sign them.
    public static let defaultHeaders = ["From", "Sender", "Reply-To", "To", "Cc", "Subject", "Date", "Message-ID",
                                        "In-Reply-To", "References", "MIME-Version", "Content-Type",
                                        "List-Unsubscribe", "List-Unsubscribe-Post"]

    /// The signing domain (`d=`).
    public let domain: String
    /// The selector (`s=`): the public key is at `<selector>._domainkey.<domain>`.
    public let selector: String
    /// The private key.
    public let key: SigningKey
    /// Header canonicalisation (default relaxed).
    public var headerCanonicalization = Canonicalization.relaxed
    /// Body canonicalisation (default relaxed).
    public var bodyCanonicalization = Canonicalization.relaxed
    /// The headers to sign, each every time it occurs (default ``defaultHeaders``).
    public var signedHeaders = DKIMSigner.defaultHeaders
    /// Headers signed once more than they occur, so that none can be added later (default From).
    public var oversignedHeaders = ["From"]

    /// A signer for `domain` and `selector` with `key`.
    ///
    /// - Throws: ``DKIMError`` for a domain or selector that is not a DNS name, or an RSA key
    ///   outside 1024–4096 bits.
    public init(domain: String, selector: String, key: SigningKey) throws(DKIMError) {
        guard Self.isDNSName(domain) else {
            throw DKIMError("'\(domain)' is not a domain name (give an internationalised one in A-labels)")
        }
        guard Self.isDNSName(selector) else { throw DKIMError("'\(selector)' is not a selector (DNS labels)") }
        if case .rsa(let bits) = key.kind, !(1_024...4_096).contains(bits) {
            throw DKIMError("an RSA key of \(bits) bits; DKIM signs with 1024 to 4096 (2048 is the norm)")
        }
        self.domain = domain.lowercased()
        self.selector = selector
        self.key = key
    }

    /// A signer whose key is read from a PEM file (PKCS#1 or PKCS#8).
    public init(domain: String, selector: String, privateKeyFile path: String) throws(DKIMError) {
        let key: SigningKey
        do {
            key = try SigningKey(pemFile: path)
        } catch {
            throw DKIMError("\(path): \(error)")
        }
        try self.init(domain: domain, selector: selector, key: key)
    }

    /// The algorithm tag, `rsa-sha256` or `ed25519-sha256`.
    public var algorithm: String {
        if case .ed25519 = key.kind { return "ed25519-sha256" }
        return "rsa-sha256"
    }

    /// `message` with a `DKIM-Signature` header added at the top.
    public func sign(_ message: RawMessage, at date: Date = Date()) throws(DKIMError) -> RawMessage {
        let fields = Self.headerFields(of: message)
        let names = signedNames(fields)
        var header = Array("DKIM-Signature: v=1; a=\(algorithm); c=\(headerCanonicalization.rawValue)/\(bodyCanonicalization.rawValue);".utf8)
        var line = header.count
        func append(_ text: String, separator: String = " ") {
            if line + separator.utf8.count + text.utf8.count > 78 {
                header += Array("\r\n ".utf8)
                line = 1
            } else {
                header += Array(separator.utf8)
                line += separator.utf8.count
            }
            header += Array(text.utf8)
            line += text.utf8.count
        }
        append("d=\(domain);")
        append("s=\(selector);")
        append("t=\(Int64(date.timeIntervalSince1970));")
        for (index, name) in names.enumerated() {
            let last = index == names.count - 1
            append((index == 0 ? "h=" : "") + name + (last ? ";" : ":"), separator: index == 0 ? " " : "")
        }
        append("bh=\(Base64.encode(bodyHash(of: message)));")
        append("b=")
        let signature = try signatureValue(for: fields, names: names, signatureHeader: header)
        // The b= value folds freely: verifiers delete it with its whitespace before hashing.
        var encoded = Array(Base64.encode(signature).utf8)[...]
        while !encoded.isEmpty {
            let room = max(1, 78 - line)
            header += encoded.prefix(room)
            encoded = encoded.dropFirst(room)
            if !encoded.isEmpty {
                header += Array("\r\n ".utf8)
                line = 1
            }
        }
        header += [13, 10]
        return RawMessage(encoded: header + message.bytes, headerLength: header.count + message.headerLength)
    }

    /// `message` signed by each of `signers` in turn (unchanged when there are none).
    public static func sign(_ message: RawMessage, with signers: [DKIMSigner], at date: Date = Date())
        throws(DKIMError) -> RawMessage
    {
        var signed = message
        for signer in signers { signed = try signer.sign(signed, at: date) }
        return signed
    }

    // MARK: Pieces (internal for the RFC test vectors)

    /// The header names for `h=`: each signed header once per occurrence, oversigned ones once more.
    func signedNames(_ fields: [HeaderField]) -> [String] {
        var names: [String] = []
        let oversigned = Set(oversignedHeaders.map { $0.lowercased() })
        for name in signedHeaders {
            let lower = name.lowercased()
            let count = fields.filter { $0.name == lower }.count
            names += Array(repeating: lower, count: count + (oversigned.contains(lower) ? 1 : 0))
        }
        return names
    }

    /// The SHA-256 of the canonicalised body (`bh=`).
    func bodyHash(of message: RawMessage) -> [UInt8] {
        let body = message.bytes[message.headerLength...]
        let canonical = bodyCanonicalization == .relaxed ? Self.relaxedBody(body) : Self.simpleBody(body)
        return Digest.hash(.sha256, canonical)
    }

    /// The signature over the selected header fields (bottom-up per name, RFC 6376 §5.4.2) and
    /// the DKIM-Signature header as written up to its empty `b=` (without a final CRLF).
    func signatureValue(for fields: [HeaderField], names: [String], signatureHeader: [UInt8]) throws(DKIMError) -> [UInt8] {
        var data: [UInt8] = []
        var used: [String: Int] = [:]
        for name in names {
            let instances = fields.filter { $0.name == name }
            let taken = used[name, default: 0]
            used[name] = taken + 1
            guard taken < instances.count else { continue }  // oversigned: an absent instance adds nothing
            data += canonicalHeader(instances[instances.count - 1 - taken].raw)
        }
        var own = canonicalHeader(signatureHeader + [13, 10])
        own.removeLast(2)
        data += own
        do {
            if case .ed25519 = key.kind {
                return try key.sign(Digest.hash(.sha256, data))  // RFC 8463 §3: Ed25519 over the SHA-256
            }
            return try key.sign(data)
        } catch {
            throw DKIMError("signing failed: \(error)")
        }
    }

    /// One header field, unfolded lines and all, ending with CRLF.
    struct HeaderField {
        let name: String
        let raw: [UInt8]
    }

    static func headerFields(of message: RawMessage) -> [HeaderField] {
        var fields: [HeaderField] = []
        let bytes = message.bytes
        var index = 0
        var start = 0
        let end = message.headerLength
        while index < end {
            var lineEnd = index
            while lineEnd + 1 < end, !(bytes[lineEnd] == 13 && bytes[lineEnd + 1] == 10) { lineEnd += 1 }
            let next = min(end, lineEnd + 2)
            if lineEnd == index { break }  // the empty line that ends the header section
            let continues = next < end && (bytes[next] == 32 || bytes[next] == 9)
            if !continues {
                let raw = Array(bytes[start..<next])
                let colon = raw.firstIndex(of: UInt8(ascii: ":")) ?? raw.count
                let name = String(decoding: raw[..<colon], as: UTF8.self).trimmingCharacters(in: .whitespaces).lowercased()
                fields.append(HeaderField(name: name, raw: raw))
                start = next
            }
            index = next
        }
        return fields
    }

    /// A header field canonicalised (RFC 6376 §3.4.1, §3.4.2).
    func canonicalHeader(_ raw: [UInt8]) -> [UInt8] {
        guard headerCanonicalization == .relaxed else { return raw }
        let colon = raw.firstIndex(of: UInt8(ascii: ":")) ?? raw.count
        var output: [UInt8] = []
        output.reserveCapacity(raw.count)
        for byte in raw[..<colon] where byte != 32 && byte != 9 {
            output.append(byte >= 65 && byte <= 90 ? byte | 0x20 : byte)
        }
        output.append(UInt8(ascii: ":"))
        var pendingSpace = false
        var atValueStart = true  // whitespace after the colon goes
        for byte in raw[min(raw.count, colon + 1)...] {
            switch byte {
            case 13, 10: continue  // unfold
            case 32, 9: pendingSpace = true
            default:
                if pendingSpace, !atValueStart { output.append(32) }
                pendingSpace = false
                atValueStart = false
                output.append(byte)
            }
        }
        output += [13, 10]
        return output
    }

    /// RFC 6376 §3.4.3: trailing empty lines removed; an empty body is one CRLF.
    static func simpleBody(_ body: ArraySlice<UInt8>) -> [UInt8] {
        var end = body.endIndex
        while end - body.startIndex >= 4, body[(end - 4)..<end].elementsEqual([13, 10, 13, 10]) { end -= 2 }
        if end == body.startIndex { return [13, 10] }
        return Array(body[..<end])
    }

    /// RFC 6376 §3.4.4: whitespace runs to one space, none at line ends, trailing empty lines
    /// removed; an empty body stays empty.
    static func relaxedBody(_ body: ArraySlice<UInt8>) -> [UInt8] {
        var output: [UInt8] = []
        output.reserveCapacity(body.count)
        var pendingSpace = false
        var emptyLines = 0
        var lineHasContent = false
        var index = body.startIndex
        while index < body.endIndex {
            let byte = body[index]
            if byte == 13, index + 1 < body.endIndex, body[index + 1] == 10 {
                pendingSpace = false
                if lineHasContent {
                    output += [13, 10]
                } else {
                    emptyLines += 1
                }
                lineHasContent = false
                index += 2
                continue
            }
            if byte == 32 || byte == 9 {
                pendingSpace = true
            } else {
                if !lineHasContent {
                    // Empty lines before content are kept.
                    for _ in 0..<emptyLines { output += [13, 10] }
                    emptyLines = 0
                }
                if pendingSpace { output.append(32) }
                pendingSpace = false
                output.append(byte)
                lineHasContent = true
            }
            index += 1
        }
        if lineHasContent { output += [13, 10] }
        return output
    }

    private static func isDNSName(_ name: String) -> Bool {
        let labels = name.split(separator: ".", omittingEmptySubsequences: false)
        return !labels.isEmpty && name.utf8.count <= 253 && labels.allSatisfy { label in
            (1...63).contains(label.utf8.count) && label.first != "-" && label.last != "-"
                && label.utf8.allSatisfy { $0 < 0x80 && (Character(Unicode.Scalar($0)).isLetter || Character(Unicode.Scalar($0)).isNumber || $0 == UInt8(ascii: "-") || $0 == UInt8(ascii: "_")) }
        }
    }
}

/// Why a message cannot be signed, or a signer cannot be made.
public struct DKIMError: Error, CustomStringConvertible, Sendable {
    public let description: String
    init(_ description: String) { self.description = description }
}
