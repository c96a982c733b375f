public import Foundation
import SluiceCore

/// An address, or a whole domain, that the outbox sends nothing to.
///
/// A recipient on the list is recorded as ``RecipientState/suppressed`` when it is enqueued,
/// and again if it was added to the list while its message waited: a worker checks each batch
/// it claims. Workers add an address by themselves when a relay refuses it for good with a
/// hard ``Sluice/BounceClass`` (``OutboxWorker/Configuration/suppressOn``).
public struct Suppression: Sendable, Hashable, Codable {
    /// `user@example.com` for one address, `example.com` for every address at a domain,
    /// as ``Suppression/normalized(_:)`` writes it.
    public var target: String
    /// Why: a ``Sluice/BounceClass`` name for a hard bounce, or ``Reason/manual``,
    /// ``Reason/complaint``, ``Reason/unsubscribed``.
    public var reason: String
    /// What was said: the reply that bounced, or an operator's note.
    public var detail: String?
    /// When it was added.
    public var createdAt: Date
    /// When it lapses; nil for never.
    public var expiresAt: Date?

    /// The reasons that are not a bounce class.
    public enum Reason {
        /// Added by an operator.
        public static let manual = "manual"
        /// The recipient reported the mail as spam (a feedback-loop report).
        public static let complaint = "complaint"
        /// The recipient unsubscribed.
        public static let unsubscribed = "unsubscribed"
        /// Every reason a suppression may carry.
        public static var all: [String] { [manual, complaint, unsubscribed] + BounceClass.allCases.map(\.rawValue) }
    }

    /// An entry; `target` is normalized.
    /// - Throws: ``OutboxError/Kind/invalidInput`` for a target that is neither an address nor a
    ///   domain, or an unknown reason.
    public init(target: String, reason: String, detail: String? = nil, createdAt: Date, expiresAt: Date? = nil)
        throws(OutboxError) {
        self.target = try Self.normalized(target)
        guard Reason.all.contains(reason) else {
            throw OutboxError(.invalidInput, "\"\(reason)\" is not a suppression reason; use one of "
                + Reason.all.joined(separator: ", "))
        }
        self.reason = reason
        self.detail = detail
        self.createdAt = createdAt
        self.expiresAt = expiresAt
    }

    /// An entry as a store kept it, already checked.
    init(stored target: String, reason: String, detail: String?, createdAt: Date, expiresAt: Date?) {
        self.target = target
        self.reason = reason
        self.detail = detail
        self.createdAt = createdAt
        self.expiresAt = expiresAt
    }

    /// Whether it applies at `now`.
    public func isActive(at now: Date) -> Bool { expiresAt.map { $0 > now } ?? true }

    /// The form a target is kept and compared in: surrounding spaces and angle brackets gone,
    /// ASCII letters in lower case (what SQLite's and PostgreSQL's `lower` agree on), a domain
    /// without a leading `@`.
    /// - Throws: ``OutboxError/Kind/invalidInput`` when it is not an address or a domain.
    public static func normalized(_ target: String) throws(OutboxError) -> String {
        // Every address a worker checks at each claim comes here: ASCII, the usual case, is
        // read as bytes, where a character is a byte. Anything else is read by characters.
        if let ascii = normalizedASCII(target) {
            guard let result = ascii else {
                throw OutboxError(.invalidInput, "\"\(target)\" is not an address or a domain")
            }
            return result
        }
        return try normalizedByCharacters(target)
    }

    /// ``normalized(_:)`` of an ASCII target, read as bytes: nil when `target` is not ASCII,
    /// `.some(nil)` when it is neither an address nor a domain.
    static func normalizedASCII(_ target: String) -> String?? {
        var target = target
        target.makeContiguousUTF8()
        return target.utf8.withContiguousStorageIfAvailable { bytes -> String?? in
            guard !bytes.contains(where: { $0 >= 0x80 }) else { return nil }
            var start = bytes.startIndex, end = bytes.endIndex
            while start < end, bytes[start] == 0x20 || bytes[start] == 0x09 { start += 1 }
            while end > start, bytes[end - 1] == 0x20 || bytes[end - 1] == 0x09 || bytes[end - 1] == 0x0D { end -= 1 }
            if end - start >= 2, bytes[start] == UInt8(ascii: "<"), bytes[end - 1] == UInt8(ascii: ">") {
                start += 1
                end -= 1
            }
            if start < end, bytes[start] == UInt8(ascii: "@") { start += 1 }
            var lowered = [UInt8](bytes[start..<end])
            var at: Int?
            for index in lowered.indices {
                let byte = lowered[index]
                switch byte {
                case UInt8(ascii: "A")...UInt8(ascii: "Z"): lowered[index] = byte + 32
                case 0..<0x21, UInt8(ascii: "<"), UInt8(ascii: ">"), UInt8(ascii: ","), 0x7F: return .some(nil)
                case UInt8(ascii: "@"): at = index
                default: break
                }
            }
            guard !lowered.isEmpty, lowered.count <= 320 else { return .some(nil) }
            if let at {
                guard at > 0, isDomain(lowered[(at + 1)...]) else { return .some(nil) }
            } else {
                guard isDomain(lowered[...]) else { return .some(nil) }
            }
            return .some(String(decoding: lowered, as: UTF8.self))
        } ?? nil
    }

    /// ``normalized(_:)`` by characters, for targets beyond ASCII.
    static func normalizedByCharacters(_ target: String) throws(OutboxError) -> String {
        var text = Substring(target).drop { $0 == " " || $0 == "\t" }
        while text.last == " " || text.last == "\t" || text.last == "\r" { text.removeLast() }
        if text.first == "<", text.last == ">" { text = text.dropFirst().dropLast() }
        if text.first == "@" { text = text.dropFirst() }
        let lowered = String(String.UnicodeScalarView(text.unicodeScalars.map { scalar in
            ("A"..."Z").contains(scalar) ? Unicode.Scalar(scalar.value + 32)! : scalar
        }))
        let forbidden = lowered.unicodeScalars.contains { $0.value < 0x21 || $0 == "<" || $0 == ">" || $0 == "," || $0.value == 0x7F }
        guard !lowered.isEmpty, lowered.utf8.count <= 320, !forbidden else {
            throw OutboxError(.invalidInput, "\"\(target)\" is not an address or a domain")
        }
        if let at = lowered.lastIndex(of: "@") {
            let local = lowered[..<at]
            let domain = lowered[lowered.index(after: at)...]
            guard !local.isEmpty, isDomain(domain) else {
                throw OutboxError(.invalidInput, "\"\(target)\" is not an address or a domain")
            }
        } else {
            guard isDomain(Substring(lowered)) else {
                throw OutboxError(.invalidInput, "\"\(target)\" is not an address or a domain")
            }
        }
        return lowered
    }

    /// The targets that would suppress `address`: the address itself and its domain.
    static func targets(of address: String) -> [String] {
        guard let address = try? normalized(address) else { return [] }
        guard let at = address.utf8.lastIndex(of: UInt8(ascii: "@")) else { return [address] }
        return [address, String(address[address.utf8.index(after: at)...])]
    }

    private static func isDomain(_ text: Substring) -> Bool {
        !text.isEmpty && !text.hasPrefix(".") && !text.hasSuffix(".") && !text.contains("..") && !text.contains("@")
    }

    /// ``isDomain(_:)`` of ASCII bytes.
    private static func isDomain(_ bytes: ArraySlice<UInt8>) -> Bool {
        let dot = UInt8(ascii: ".")
        guard let first = bytes.first, let last = bytes.last, first != dot, last != dot else { return false }
        var previous: UInt8 = 0
        for byte in bytes {
            if byte == UInt8(ascii: "@") || (byte == dot && previous == dot) { return false }
            previous = byte
        }
        return true
    }
}

/// The bytes a hexadecimal string spells; nil when it does not.
func hexBytes(_ text: String) -> [UInt8]? {
    let digits = Array(text.utf8)
    guard digits.count.isMultiple(of: 2) else { return nil }
    var bytes: [UInt8] = []
    bytes.reserveCapacity(digits.count / 2)
    for index in stride(from: 0, to: digits.count, by: 2) {
        guard let byte = UInt8(String(decoding: digits[index...index + 1], as: UTF8.self), radix: 16) else { return nil }
        bytes.append(byte)
    }
    return bytes
}
