import Foundation
import Hummingbird
import Logging
import ServiceLifecycle
import Sluice

/// A notification service: `POST /send` with `{"from": …, "to": […], "subject": …, "text": …}`
/// sends the message through one `SMTPClient` shared by every request, and answers with each
/// recipient's outcome.
///
/// Settings come from the environment: `SMTP_HOST` (default 127.0.0.1), `SMTP_PORT` (2525),
/// `SMTP_SECURITY` (`none`, `starttls`, `tls`; default `none`), `HTTP_PORT` (8080, 0 for any:
/// the port is printed on the first line of standard output).
@main
struct Notifier {
    static func main() async throws {
        let environment = ProcessInfo.processInfo.environment
        var logger = Logger(label: "notifier")
        logger.logLevel = .info

        let security = SMTPClient.Security(rawValue: environment["SMTP_SECURITY"] ?? "none") ?? .none
        var configuration = SMTPClient.Configuration(
            host: environment["SMTP_HOST"] ?? "127.0.0.1",
            port: Int(environment["SMTP_PORT"] ?? "2525"), security: security)
        configuration.logger = logger
        let client = try SMTPClient(configuration: configuration)

        let router = Router()
        router.post("/send") { request, context -> Response in
            let body = try await request.decode(as: SendRequest.self, context: context)
            return try await send(body, through: client, logger: context.logger)
        }
        let app = Application(
            router: router,
            configuration: .init(address: .hostname("127.0.0.1", port: Int(environment["HTTP_PORT"] ?? "8080") ?? 8080)),
            onServerRunning: { channel in
                // The first line is the contract for scripts: written at once, not buffered.
                FileHandle.standardOutput.write(Data("listening on http://127.0.0.1:\(channel.localAddress?.port ?? 0)\n".utf8))
            },
            logger: logger)

        // The client first: a group stops its services in reverse order, so on SIGTERM the
        // HTTP server stops taking requests, then the client finishes what it holds and closes.
        let services = ServiceGroup(configuration: .init(
            services: [client, app], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await services.run()
        logger.info("stopped")
    }

    /// Sends one request's message; the request's logger (its request id) follows the mail.
    static func send(_ body: SendRequest, through client: SMTPClient, logger: Logger) async throws -> Response {
        let message: Message
        do {
            message = Message(from: try Mailbox(body.from), to: try body.to.map { try Mailbox($0) },
                              subject: body.subject, text: body.text)
        } catch {
            return try json(SendResponse(outcome: "invalid", error: "\(error)", recipients: []), status: .badRequest)
        }
        do {
            let report = try await client.send(message, logger: logger)
            return try json(SendResponse(report, error: nil), status: .ok)
        } catch let error as SMTPError {
            let report = error.report
            return try json(SendResponse(outcome: report.map { "\($0.outcome)" } ?? "\(error.kind)", error: "\(error)",
                                         recipients: report.map(SendResponse.recipients) ?? []),
                            status: error.kind == .invalidInput ? .badRequest : .badGateway)
        }
    }

    static func json(_ value: SendResponse, status: HTTPResponse.Status) throws -> Response {
        let data = try JSONEncoder().encode(value)
        return Response(status: status, headers: [.contentType: "application/json"],
                        body: .init(byteBuffer: ByteBuffer(bytes: data)))
    }
}

struct SendRequest: Decodable {
    var from: String
    var to: [String]
    var subject: String
    var text: String
}

struct SendResponse: Encodable {
    struct Recipient: Encodable {
        var address: String
        var status: String
        var code: Int?
        var text: String?
    }
    var outcome: String
    var error: String?
    var recipients: [Recipient]

    init(outcome: String, error: String?, recipients: [Recipient]) {
        self.outcome = outcome
        self.error = error
        self.recipients = recipients
    }

    init(_ report: DeliveryReport, error: String?) {
        self.init(outcome: "\(report.outcome)", error: error, recipients: Self.recipients(report))
    }

    static func recipients(_ report: DeliveryReport) -> [Recipient] {
        report.recipients.map { Recipient(address: "\($0.address)", status: "\($0.status)", code: $0.code, text: $0.text) }
    }
}
