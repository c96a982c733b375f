import Logging
import SluiceCore
#if DistributedTracingSupport
import Tracing
#endif

/// The trace context of the task that hands a message over: the parent of its span (empty
/// without tracing).
package struct HandoverContext: Sendable {
    #if DistributedTracingSupport
    let context: ServiceContext
    /// The calling task's context, or a new trace.
    package static var current: HandoverContext { HandoverContext(context: .current ?? .topLevel) }
    /// A new trace, for work no task of the caller's hands over (the outbox worker's).
    package static var topLevel: HandoverContext { HandoverContext(context: .topLevel) }
    #else
    package static var current: HandoverContext { HandoverContext() }
    package static var topLevel: HandoverContext { HandoverContext() }
    #endif
}

/// What follows one message for whoever watches it: the caller's logger, and with a tracer
/// the span of its send and of its current attempt.
///
/// A job has one only when there is something to watch with (a logger was given, or a tracer
/// other than the no-op one is set), so a bulk send with neither pays one nil check a message.
/// Like the job's attempts, it is touched by one party at a time (the sending task, then the
/// connection's loop, then a retry timer), each handoff ordered by a lock or a loop hop.
final class MessageObservation: @unchecked Sendable {
    /// The caller's logger with the server in its metadata; nil for the client's own.
    let logger: Logger?
    #if DistributedTracingSupport
    private let send: (any Span)?
    private let tracer: (any Tracer)?
    private var attempt: (any Span)?
    #endif
    private let server: Server

    /// The relay a client sends to.
    struct Server: Sendable {
        let host: String
        let port: Int
    }

    /// Starts the send's span, a child of `context` (the trace context of the task that
    /// handed the message over). Nil when there is nothing to watch with.
    static func make(logger: Logger?, client: SMTPClient, context: @autoclosure () -> HandoverContext)
        -> MessageObservation?
    {
        #if DistributedTracingSupport
        guard logger != nil || client.tracer != nil else { return nil }
        return MessageObservation(logger: logger, tracer: client.tracer, context: context().context, server: client.server)
        #else
        guard let logger else { return nil }
        return MessageObservation(logger: logger, server: client.server)
        #endif
    }

    #if DistributedTracingSupport
    private init(logger: Logger?, tracer: (any Tracer)?, context: ServiceContext, server: Server) {
        self.logger = logger.map { Self.tagged($0, server) }
        self.server = server
        self.tracer = tracer
        if let tracer {
            let span = tracer.startSpan("smtp send", context: context, ofKind: .client)
            span.attributes["server.address"] = server.host
            span.attributes["server.port"] = server.port
            send = span
        } else {
            send = nil
        }
    }
    #else
    private init(logger: Logger, server: Server) {
        self.logger = Self.tagged(logger, server)
        self.server = server
    }
    #endif

    private static func tagged(_ logger: Logger, _ server: Server) -> Logger {
        var logger = logger
        logger[metadataKey: "smtp.server"] = "\(server.host):\(server.port)"
        return logger
    }

    /// The message went onto a connection for its try number `number` (from 1).
    func attemptStarted(number: Int, connection: Int) {
        #if DistributedTracingSupport
        guard let tracer, let send else { return }
        attempt?.end()
        let span = tracer.startSpan("smtp attempt", context: send.context, ofKind: .client)
        span.attributes["server.address"] = server.host
        span.attributes["server.port"] = server.port
        span.attributes["smtp.attempt"] = number
        span.attributes["smtp.connection.id"] = connection
        attempt = span
        #endif
    }

    /// The try ended with `outcome`.
    func attemptEnded(_ outcome: TransactionOutcome) {
        #if DistributedTracingSupport
        guard let span = attempt else { return }
        attempt = nil
        let accepted = outcome.recipients.count { $0.status == .accepted }
        span.attributes["smtp.outcome"] = outcome.status.rawValue
        span.attributes["smtp.recipients.accepted"] = accepted
        span.attributes["smtp.recipients.refused"] = outcome.recipients.count - accepted
        if let reply = outcome.reply {
            span.attributes["smtp.reply.code"] = reply.code.rawValue
            if let enhanced = reply.enhancedCode { span.attributes["smtp.reply.enhanced_code"] = "\(enhanced)" }
        }
        if let error = outcome.error {
            span.attributes["error.type"] = "\(error.kind)"
            span.setStatus(SpanStatus(code: .error, message: "\(error)"))
        } else if outcome.status != .accepted {
            span.setStatus(SpanStatus(code: .error))
        }
        span.end()
        #endif
    }

    /// The message left its connection before it was tried (the connection closed first):
    /// it goes back to the pool, and this try does not count.
    func attemptAbandoned() {
        #if DistributedTracingSupport
        guard let span = attempt else { return }
        attempt = nil
        span.attributes["smtp.outcome"] = "not attempted"
        span.end()
        #endif
    }

    /// The message's report is made: the send's span ends with it.
    func finished(_ report: borrowing DeliveryReport, job: Int) {
        if let logger {
            var metadata: Logger.Metadata = [
                "smtp.message": "\(job)", "smtp.outcome": "\(report.outcome.rawValue)", "smtp.attempts": "\(report.attempts)",
            ]
            if let messageID = report.messageID { metadata["smtp.message_id"] = "\(messageID)" }
            if let error = report.error { metadata["smtp.error"] = "\(error)" }
            logger.debug("message reported", metadata: metadata)
        }
        #if DistributedTracingSupport
        attemptAbandoned()
        guard let send else { return }
        let accepted = report.recipients.count { $0.status == .accepted }
        send.attributes["smtp.outcome"] = report.outcome.rawValue
        send.attributes["smtp.attempts"] = report.attempts
        send.attributes["smtp.recipients.accepted"] = accepted
        send.attributes["smtp.recipients.refused"] = report.recipients.count - accepted
        if let code = report.error?.code ?? report.recipients.first(where: { $0.reply != nil })?.reply?.code.rawValue {
            send.attributes["smtp.reply.code"] = code
        }
        if let error = report.error {
            send.attributes["error.type"] = "\(error.kind)"
            if report.outcome != .partiallyAccepted { send.setStatus(SpanStatus(code: .error, message: "\(error)")) }
        }
        send.end()
        #endif
    }
}
