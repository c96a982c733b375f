/// A command a client sends (RFC 5321 §4.1 and extensions). Every argument is a validated
/// type or bytes that are base64-encoded here, so an encoded command is always exactly one
/// line and nothing a user passes can add another.
public enum SMTPCommand: Hashable, Sendable {
    /// `EHLO name`.
    case ehlo(SMTPDomain)
    /// `HELO name`.
    case helo(SMTPDomain)
    /// `MAIL FROM:<path>` with parameters; a nil address is the null reverse path `<>`.
    case mail(from: EnvelopeAddress?, MailParameters)
    /// `RCPT TO:<path>` with parameters.
    case recipient(EnvelopeAddress, RecipientParameters)
    /// `DATA`.
    case data
    /// `BDAT size [LAST]` (RFC 3030); the chunk's bytes follow the command.
    case bdat(size: Int, last: Bool)
    /// `RSET`.
    case reset
    /// `NOOP`.
    case noop
    /// `QUIT`.
    case quit
    /// `STARTTLS`.
    case startTLS
    /// `AUTH mechanism [initial-response]`; the response is base64-encoded here (`=` when
    /// empty, RFC 4954 §4).
    case auth(mechanism: String, initialResponse: [UInt8]?)
    /// A line answering a 334 challenge; base64-encoded here.
    case authResponse([UInt8])
    /// `*`: abandons an AUTH exchange.
    case authCancel

    /// The command verb, for logs and errors.
    public var verb: String {
        switch self {
        case .ehlo: "EHLO"
        case .helo: "HELO"
        case .mail: "MAIL"
        case .recipient: "RCPT"
        case .data: "DATA"
        case .bdat: "BDAT"
        case .reset: "RSET"
        case .noop: "NOOP"
        case .quit: "QUIT"
        case .startTLS: "STARTTLS"
        case .auth, .authResponse, .authCancel: "AUTH"
        }
    }

    /// Whether the command must be the last of a pipelined group: its reply changes what may
    /// be sent next (RFC 2920 §3.1).
    public var endsPipelineGroup: Bool {
        switch self {
        case .ehlo, .helo, .data, .startTLS, .auth, .authResponse, .authCancel, .quit, .noop: true
        case .mail, .recipient, .bdat, .reset: false
        }
    }

    /// The command line, CRLF included.
    public var encoded: [UInt8] {
        var bytes: [UInt8] = []
        encode(into: &bytes)
        return bytes
    }

    /// Appends the command line, CRLF included.
    public func encode(into bytes: inout [UInt8]) {
        switch self {
        case .ehlo(let name):
            bytes.append(contentsOf: "EHLO \(name.name)".utf8)
        case .helo(let name):
            bytes.append(contentsOf: "HELO \(name.name)".utf8)
        case .mail(let from, let parameters):
            bytes.append(literal: "MAIL FROM:<")
            from?.encode(into: &bytes)
            bytes.append(UInt8(ascii: ">"))
            parameters.encode(into: &bytes)
        case .recipient(let to, let parameters):
            bytes.append(literal: "RCPT TO:<")
            to.encode(into: &bytes)
            bytes.append(UInt8(ascii: ">"))
            parameters.encode(into: &bytes)
        case .data:
            bytes.append(literal: "DATA")
        case .bdat(let size, let last):
            bytes.append(literal: "BDAT ")
            bytes.appendDecimal(max(size, 0))
            if last { bytes.append(literal: " LAST") }
        case .reset:
            bytes.append(literal: "RSET")
        case .noop:
            bytes.append(literal: "NOOP")
        case .quit:
            bytes.append(literal: "QUIT")
        case .startTLS:
            bytes.append(literal: "STARTTLS")
        case .auth(let mechanism, let initialResponse):
            precondition(Self.isValidMechanismName(mechanism), "invalid SASL mechanism name \(mechanism)")
            bytes.append(contentsOf: "AUTH \(mechanism)".utf8)
            if let initialResponse {
                bytes.append(UInt8(ascii: " "))
                if initialResponse.isEmpty {
                    bytes.append(UInt8(ascii: "="))
                } else {
                    Base64.encode(initialResponse, into: &bytes)
                }
            }
        case .authResponse(let response):
            Base64.encode(response, into: &bytes)
        case .authCancel:
            bytes.append(UInt8(ascii: "*"))
        }
        bytes.append(contentsOf: [13, 10])
    }

    /// A SASL mechanism name: 1–20 of A–Z, 0–9, `-`, `_` (RFC 4422 §3.1).
    public static func isValidMechanismName(_ name: String) -> Bool {
        (1...20).contains(name.utf8.count) && name.utf8.allSatisfy { byte in
            (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte) || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
                || byte == UInt8(ascii: "-") || byte == UInt8(ascii: "_")
        }
    }
}
