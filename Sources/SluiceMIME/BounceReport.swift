public import SluiceCore

/// A report that comes back after a relay took a message: a delivery status notification
/// (RFC 3464, `multipart/report; report-type=delivery-status`) or a complaint (ARF, RFC 5965,
/// `report-type=feedback-report`).
///
/// ```swift
/// switch try BounceReport(parsing: bytes) {
/// case .deliveryStatus(let dsn): print(dsn.recipients.map(\.finalRecipient))
/// case .feedback(let complaint): print(complaint.feedbackType)
/// }
/// ```
public enum BounceReport: Sendable, Hashable {
    /// A delivery status notification.
    case deliveryStatus(DeliveryStatusNotification)
    /// A feedback report: a recipient called the message spam (or another feedback type).
    case feedback(FeedbackReport)

    /// Reads a report.
    /// - Throws: ``BounceReportError`` saying why the message is not a report this reads: not
    ///   `multipart/report`, no status part, a recipient without `Final-Recipient`, `Action`
    ///   or a valid `Status`.
    public init(parsing bytes: [UInt8]) throws(BounceReportError) {
        let message = MIMEEntity(bytes: Self.crlf(bytes))
        guard let type = message.contentType else { throw BounceReportError("the message has no Content-Type; it is not a report") }
        guard type.value == "multipart/report" else {
            throw BounceReportError("the message is \(type.value), not multipart/report")
        }
        let reportType = type.parameters["report-type"]?.lowercased()
        let parts = try message.parts()
        // The returned message or its headers: where its Message-ID is.
        let original = parts.first { ["message/rfc822", "text/rfc822-headers", "message/rfc822-headers"].contains($0.contentType?.value ?? "") }
        let originalHeaders = original.map { MIMEEntity(bytes: $0.decodedBody) }
        switch reportType {
        case "delivery-status":
            guard let status = parts.first(where: {
                $0.contentType?.value == "message/delivery-status" || $0.contentType?.value == "message/global-delivery-status"
            }) else {
                throw BounceReportError("the report has no message/delivery-status part")
            }
            self = .deliveryStatus(try DeliveryStatusNotification(status.decodedBody, original: originalHeaders))
        case "feedback-report":
            guard let feedback = parts.first(where: { $0.contentType?.value == "message/feedback-report" }) else {
                throw BounceReportError("the report has no message/feedback-report part")
            }
            self = .feedback(try FeedbackReport(feedback.decodedBody, original: originalHeaders))
        default:
            throw BounceReportError("the report type \(reportType ?? "(none)") is neither delivery-status nor feedback-report")
        }
    }

    /// The addresses of a header value such as `To`: each comma-separated entry's address in
    /// angle brackets, else the entry itself. Lenient on purpose: a report's returned headers
    /// are often redacted (`<Undisclosed Recipients>`) and are only a hint.
    package static func addresses(inHeaderValue value: String) -> [String] {
        value.split(separator: ",").map { part in
            let text = String(part)
            if let open = text.lastIndex(of: "<"), let close = text.lastIndex(of: ">"), open < close {
                return String(text[text.index(after: open)..<close])
            }
            return text.trimmingWhitespace
        }
    }

    /// LF line ends made CRLF, so that every part is read one way.
    static func crlf(_ bytes: [UInt8]) -> [UInt8] {
        var result: [UInt8] = []
        result.reserveCapacity(bytes.count + bytes.count / 40)
        var previous: UInt8 = 0
        for byte in bytes {
            if byte == 10, previous != 13 { result.append(13) }
            result.append(byte)
            previous = byte
        }
        return result
    }
}

/// Why a message is not a report Sluice reads.
public struct BounceReportError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What is wrong.
    public let message: String
    init(_ message: String) { self.message = message }
    public var description: String { message }
}

/// A delivery status notification (RFC 3464): the message's fields and one entry a recipient.
public struct DeliveryStatusNotification: Sendable, Hashable {
    /// What the reporting MTA did for a recipient.
    public enum Action: String, Sendable, Hashable {
        /// It could not be delivered and no more tries are made: a bounce.
        case failed
        /// Not delivered yet; tries go on.
        case delayed
        /// Delivered.
        case delivered
        /// Passed to a system that sends no notifications.
        case relayed
        /// Delivered, and passed on to more addresses.
        case expanded
    }

    /// One recipient's status.
    public struct Recipient: Sendable, Hashable {
        /// `Original-Recipient`: the address as the sender gave it (`ORCPT`), if the report has
        /// it, as written (some MTAs leave it xtext-encoded: see ``DeliveryStatusNotification/xtextReadings(_:)``).
        public var originalRecipient: String?
        /// `Final-Recipient`: the address the reporting MTA tried.
        public var finalRecipient: String
        /// `Action`.
        public var action: Action
        /// `Status`, an RFC 3463 code.
        public var status: EnhancedStatusCode
        /// `Remote-MTA`: the host that refused, if one did.
        public var remoteMTA: String?
        /// `Diagnostic-Code`: what that host said (`smtp; 550 5.1.1 …` gives `550 5.1.1 …`).
        public var diagnosticCode: String?

        /// The address to act on: the original one when the report has it, else the final one.
        public var address: String { originalRecipient ?? finalRecipient }

        /// A recipient's status, as a report gives it.
        public init(originalRecipient: String?, finalRecipient: String, action: Action, status: EnhancedStatusCode,
                    remoteMTA: String?, diagnosticCode: String?) {
            self.originalRecipient = originalRecipient
            self.finalRecipient = finalRecipient
            self.action = action
            self.status = status
            self.remoteMTA = remoteMTA
            self.diagnosticCode = diagnosticCode
        }
    }

    /// `Original-Envelope-Id`: the `ENVID` the message was sent with, if the report has it.
    public var originalEnvelopeID: String?
    /// `Reporting-MTA`.
    public var reportingMTA: String?
    /// The returned message's `Message-ID`, if the report includes its headers.
    public var originalMessageID: String?
    /// The recipients reported on.
    public var recipients: [Recipient]

    init(_ body: [UInt8], original: MIMEEntity?) throws(BounceReportError) {
        let groups = MIMEEntity.fieldGroups(body)
        guard groups.count >= 2 else {
            throw BounceReportError("the delivery status has no per-recipient fields")
        }
        let message = groups[0]
        originalEnvelopeID = message["original-envelope-id"].map { $0.trimmingWhitespace }
        reportingMTA = message["reporting-mta"].map(Self.typedValue)
        originalMessageID = original?.header("message-id")
        recipients = []
        for (index, group) in groups.dropFirst().enumerated() {
            let which = "recipient \(index + 1)"
            guard let final = group["final-recipient"].map(Self.typedValue), !final.isEmpty else {
                throw BounceReportError("\(which) has no Final-Recipient")
            }
            guard let actionText = group["action"], let action = Action(rawValue: Self.firstWord(actionText)) else {
                throw BounceReportError("\(which) has no Action the RFC defines (\(group["action"] ?? "none"))")
            }
            guard let statusText = group["status"], let status = EnhancedStatusCode(Self.firstWord(statusText)) else {
                throw BounceReportError("\(which) has no valid Status (\(group["status"] ?? "none"))")
            }
            recipients.append(Recipient(
                originalRecipient: group["original-recipient"].map(Self.typedValue),
                finalRecipient: final, action: action, status: status,
                remoteMTA: group["remote-mta"].map(Self.typedValue), diagnosticCode: group["diagnostic-code"].map(Self.typedValue)))
        }
    }

    /// `rfc822; user@example.org` → `user@example.org` (the type is dropped, angle brackets too).
    static func typedValue(_ text: String) -> String {
        var value = text[...]
        if let semicolon = value.firstIndex(of: ";") { value = value[value.index(after: semicolon)...] }
        var trimmed = String(value).trimmingWhitespace
        if trimmed.hasPrefix("<"), trimmed.hasSuffix(">") { trimmed = String(trimmed.dropFirst().dropLast()) }
        return trimmed
    }

    private static func firstWord(_ text: String) -> String {
        String(text.trimmingWhitespace.prefix { $0 != " " && $0 != "\t" && $0 != "(" }).lowercased()
    }

    /// The address as given, and decoded from xtext (RFC 3461 §4: `+2B` is `+`) if that
    /// differs: reporting MTAs write `Original-Recipient` either way.
    public static func xtextReadings(_ text: String) -> [String] {
        let decoded = xtextDecoded(text)
        return decoded == text ? [text] : [text, decoded]
    }

    static func xtextDecoded(_ text: String) -> String {
        guard text.contains("+") else { return text }
        var bytes: [UInt8] = []
        var input = Array(text.utf8)[...]
        while let byte = input.popFirst() {
            if byte == UInt8(ascii: "+"), input.count >= 2,
               let value = UInt8(String(decoding: input.prefix(2), as: UTF8.self), radix: 16) {
                bytes.append(value)
                input = input.dropFirst(2)
            } else {
                bytes.append(byte)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// A feedback report (ARF, RFC 5965): a mailbox provider passing on a recipient's complaint.
public struct FeedbackReport: Sendable, Hashable {
    /// `Feedback-Type`: `abuse` for a complaint, or `fraud`, `virus`, `other`, `not-spam`.
    public var feedbackType: String
    /// `Original-Rcpt-To`, else the returned message's `To`: who complained.
    public var recipients: [String]
    /// `Original-Mail-From`, if given.
    public var originalMailFrom: String?
    /// `User-Agent` of the reporter.
    public var userAgent: String?
    /// The returned message's `Message-ID`, if it is there.
    public var originalMessageID: String?

    init(_ body: [UInt8], original: MIMEEntity?) throws(BounceReportError) {
        let groups = MIMEEntity.fieldGroups(body)
        guard let fields = groups.first, let type = fields["feedback-type"]?.trimmingWhitespace.lowercased(), !type.isEmpty else {
            throw BounceReportError("the feedback report has no Feedback-Type")
        }
        feedbackType = type
        originalMailFrom = fields["original-mail-from"].map(DeliveryStatusNotification.typedValue)
        userAgent = fields["user-agent"]
        originalMessageID = original?.header("message-id")
        var recipients = MIMEEntity.fieldGroups(body).flatMap { $0.all("original-rcpt-to") }.map(DeliveryStatusNotification.typedValue)
        if recipients.isEmpty, let to = original?.header("to") {
            recipients = BounceReport.addresses(inHeaderValue: to)
        }
        guard !recipients.isEmpty else {
            throw BounceReportError("the feedback report names no recipient (no Original-Rcpt-To, no returned To)")
        }
        self.recipients = recipients
    }
}

// MARK: A minimal MIME reader, for reports

/// One MIME entity: its header fields and its body (CRLF line ends).
struct MIMEEntity {
    /// (lowercased name, unfolded value), in order.
    let fields: [(name: String, value: String)]
    let body: ArraySlice<UInt8>

    init(bytes: [UInt8]) { self.init(bytes[...]) }

    init(_ bytes: ArraySlice<UInt8>) {
        var fields: [(String, String)] = []
        var index = bytes.startIndex
        var bodyStart = bytes.endIndex
        while index < bytes.endIndex {
            var end = index
            while end < bytes.endIndex, bytes[end] != 13 { end += 1 }
            let line = bytes[index..<end]
            let next = min(end + 2, bytes.endIndex)
            if line.isEmpty {
                bodyStart = next
                break
            }
            if line.first == 32 || line.first == 9, !fields.isEmpty {
                fields[fields.count - 1].1 += " " + String(decoding: line, as: UTF8.self).trimmingWhitespace
            } else if let colon = line.firstIndex(of: UInt8(ascii: ":")) {
                fields.append((String(decoding: line[..<colon], as: UTF8.self).trimmingWhitespace.lowercased(),
                               String(decoding: line[(colon + 1)...], as: UTF8.self).trimmingWhitespace))
            }
            index = next
        }
        self.fields = fields
        body = bytes[min(bodyStart, bytes.endIndex)...]
    }

    func header(_ name: String) -> String? { fields.first { $0.name == name }?.value }

    /// `type/subtype` in lower case and its parameters (names in lower case).
    var contentType: (value: String, parameters: [String: String])? {
        guard let text = header("content-type") else { return nil }
        var pieces = Self.splitParameters(text)
        let value = pieces.removeFirst().trimmingWhitespace.lowercased()
        var parameters: [String: String] = [:]
        for piece in pieces {
            guard let equals = piece.firstIndex(of: "=") else { continue }
            let name = String(piece[..<equals]).trimmingWhitespace.lowercased()
            var parameter = String(piece[piece.index(after: equals)...]).trimmingWhitespace
            if parameter.hasPrefix("\""), parameter.hasSuffix("\""), parameter.count >= 2 {
                parameter = String(parameter.dropFirst().dropLast()).replacingBackslashEscapes
            }
            parameters[name] = parameter
        }
        return (value, parameters)
    }

    /// The body with its transfer encoding undone (base64 and quoted-printable).
    var decodedBody: [UInt8] {
        switch header("content-transfer-encoding")?.lowercased() {
        case "base64"?: return Base64.decode(String(decoding: body, as: UTF8.self).filter { !$0.isWhitespace }) ?? Array(body)
        case "quoted-printable"?: return Self.quotedPrintableDecoded(body)
        default: return Array(body)
        }
    }

    /// The parts of a multipart entity.
    func parts() throws(BounceReportError) -> [MIMEEntity] {
        guard let boundary = contentType?.parameters["boundary"], !boundary.isEmpty else {
            throw BounceReportError("the multipart message has no boundary")
        }
        let delimiter = Array(("--" + boundary).utf8)
        var parts: [MIMEEntity] = []
        var partStart: Int?
        var index = body.startIndex
        var closed = false
        while index < body.endIndex {
            var end = index
            while end < body.endIndex, body[end] != 13 { end += 1 }
            let line = body[index..<end]
            let next = min(end + 2, body.endIndex)
            if line.starts(with: delimiter) {
                let rest = line.dropFirst(delimiter.count)
                if let start = partStart {
                    // The CRLF before a delimiter belongs to the delimiter.
                    parts.append(MIMEEntity(body[start..<max(start, index - 2)]))
                }
                if rest.starts(with: Array("--".utf8)) {
                    closed = true
                    break
                }
                partStart = next
            }
            index = next
        }
        guard closed || partStart != nil else { throw BounceReportError("no part of the multipart message was found") }
        if !closed, let start = partStart { parts.append(MIMEEntity(body[start...])) }
        return parts
    }

    /// The groups of fields of a `message/delivery-status` body, split at blank lines.
    static func fieldGroups(_ body: [UInt8]) -> [FieldGroup] {
        var groups: [FieldGroup] = []
        var rest = body[...]
        while !rest.isEmpty {
            while rest.starts(with: [13, 10]) { rest = rest.dropFirst(2) }
            guard !rest.isEmpty else { break }
            let entity = MIMEEntity(rest)
            if !entity.fields.isEmpty { groups.append(FieldGroup(fields: entity.fields)) }
            guard entity.body.startIndex > rest.startIndex else { break }
            rest = entity.body
        }
        return groups
    }

    struct FieldGroup {
        let fields: [(name: String, value: String)]
        subscript(name: String) -> String? { fields.first { $0.name == name }?.value }
        func all(_ name: String) -> [String] { fields.filter { $0.name == name }.map(\.value) }
    }

    /// Splits at semicolons outside quotes.
    private static func splitParameters(_ text: String) -> [String] {
        var pieces: [String] = [""]
        var quoted = false
        var escaped = false
        for character in text {
            if escaped {
                escaped = false
            } else if character == "\\", quoted {
                escaped = true
            } else if character == "\"" {
                quoted.toggle()
            } else if character == ";", !quoted {
                pieces.append("")
                continue
            }
            pieces[pieces.count - 1].append(character)
        }
        return pieces
    }

    private static func quotedPrintableDecoded(_ body: ArraySlice<UInt8>) -> [UInt8] {
        var output: [UInt8] = []
        var index = body.startIndex
        while index < body.endIndex {
            let byte = body[index]
            if byte == UInt8(ascii: "="), index + 2 < body.endIndex || index + 1 < body.endIndex {
                if index + 2 < body.endIndex, body[index + 1] == 13, body[index + 2] == 10 {
                    index += 3  // a soft line break
                    continue
                }
                if index + 2 < body.endIndex,
                   let value = UInt8(String(decoding: body[(index + 1)...(index + 2)], as: UTF8.self), radix: 16) {
                    output.append(value)
                    index += 3
                    continue
                }
            }
            output.append(byte)
            index += 1
        }
        return output
    }
}

extension StringProtocol {
    fileprivate var replacingBackslashEscapes: String {
        var result = ""
        var escaped = false
        for character in self {
            if escaped {
                result.append(character)
                escaped = false
            } else if character == "\\" {
                escaped = true
            } else {
                result.append(character)
            }
        }
        return result
    }
}
