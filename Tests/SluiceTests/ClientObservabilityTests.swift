import InMemoryTracing
import Logging
import Sluice
import SluiceSink
import SluiceTestSupport
import Testing
import Tracing

/// Spans and the caller's logger: what a service embedding the client sees of each message.
@Suite("SMTPClient tracing and logging")
struct ClientObservabilityTests {
    @Test func eachSendIsASpanInTheCallersTraceWithASpanPerAttempt() async throws {
        let tracer = InMemoryTracer()
        // Every second DATA is deferred: the first message goes at once, the second on its
        // second try.
        try await withSinkAndClient(sink: { $0.faults.deferData = .everyNth(2) }, client: {
            $0.tracer = tracer
            $0.pool.maximumConnections = 1
        }) { sink, client in
            let reports = try await tracer.withSpan("request") { _ in
                [try await client.send(testMessage("1"), envelope: envelope("a@example.org")),
                 try await client.send(testMessage("2"), envelope: envelope("b@example.org"))]
            }
            #expect(reports.map(\.attempts) == [1, 2])
            let spans = tracer.finishedSpans
            let request = try #require(spans.first { $0.operationName == "request" })
            let sends = spans.filter { $0.operationName == "smtp send" }
            #expect(sends.count == 2)
            #expect(sends.allSatisfy { $0.parentSpanID == request.spanID && $0.traceID == request.traceID },
                    "each send is a child of the caller's span")
            #expect(sends.allSatisfy { $0.kind == .client })
            for send in sends {
                #expect(send.attributes["server.address"]?.toSpanAttribute() == .string("127.0.0.1"))
                #expect(send.attributes["server.port"]?.toSpanAttribute() == .int64(Int64(sink.localAddress.port)))
                #expect(send.attributes["smtp.outcome"]?.toSpanAttribute() == .string("accepted"))
                #expect(send.attributes["smtp.recipients.accepted"]?.toSpanAttribute() == .int64(1))
                #expect(send.attributes["smtp.recipients.refused"]?.toSpanAttribute() == .int64(0))
                #expect(send.status?.code != .error)
            }
            let second = try #require(sends.first { $0.attributes["smtp.attempts"]?.toSpanAttribute() == .int64(2) })
            let attempts = spans.filter { $0.operationName == "smtp attempt" && $0.parentSpanID == second.spanID }
            #expect(attempts.map { $0.attributes["smtp.attempt"]?.toSpanAttribute() } == [.int64(1), .int64(2)])
            #expect(attempts.first?.attributes["smtp.outcome"]?.toSpanAttribute() == .string("deferred"))
            #expect(attempts.first?.attributes["smtp.reply.code"]?.toSpanAttribute() == .int64(451))
            #expect(attempts.first?.status?.code == .error)
            #expect(attempts.last?.attributes["smtp.outcome"]?.toSpanAttribute() == .string("accepted"))
            #expect(attempts.last?.attributes["smtp.reply.code"]?.toSpanAttribute() == .int64(250))
            #expect(spans.filter { $0.operationName == "smtp attempt" }.count == 3)
        }
    }

    @Test func aFailedSendEndsItsSpanWithAnError() async throws {
        let tracer = InMemoryTracer()
        try await withSinkAndClient(sink: { $0.faults.rejectRecipients = .everyNth(1) }, client: { $0.tracer = tracer }) {
            _, client in
            await #expect(throws: SMTPError.self) { try await client.send(testMessage(), envelope: envelope()) }
            let send = try #require(tracer.finishedSpans.first { $0.operationName == "smtp send" })
            #expect(send.status?.code == .error)
            #expect(send.attributes["smtp.outcome"]?.toSpanAttribute() == .string("rejected"))
            #expect(send.attributes["smtp.recipients.refused"]?.toSpanAttribute() == .int64(1))
            #expect(send.attributes["smtp.reply.code"]?.toSpanAttribute() == .int64(550))
            #expect(send.attributes["error.type"]?.toSpanAttribute() == .string("rejected"))
        }
    }

    @Test func aBulkSendMakesASpanPerMessageUnderTheCaller() async throws {
        let tracer = InMemoryTracer()
        try await withSinkAndClient(client: { $0.tracer = tracer }) { _, client in
            let mails = (0..<5).map { OutgoingMail(envelope: envelope("r\($0)@example.org"), message: testMessage("\($0)")) }
            try await tracer.withSpan("batch") { _ in
                for try await report in client.send(contentsOf: mails) { #expect(report.outcome == .accepted) }
            }
            let batch = try #require(tracer.finishedSpans.first { $0.operationName == "batch" })
            let sends = tracer.finishedSpans.filter { $0.operationName == "smtp send" }
            #expect(sends.count == 5 && sends.allSatisfy { $0.parentSpanID == batch.spanID })
        }
    }

    @Test func theSinkMakesAServerSpanPerTransaction() async throws {
        let tracer = InMemoryTracer()
        try await withSinkAndClient(sink: { $0.tracer = tracer }) { _, client in
            _ = try await client.send(testMessage("1"), envelope: envelope("a@example.org", "b@example.org"))
            _ = try await client.send(testMessage("2"), envelope: envelope("c@example.org"))
            let received = tracer.finishedSpans.filter { $0.operationName == "smtp receive" }
            #expect(received.count == 2)
            #expect(received.allSatisfy { $0.kind == .server })
            #expect(received.map { $0.attributes["smtp.recipients"]?.toSpanAttribute() } == [.int64(2), .int64(1)])
            #expect(received.allSatisfy { $0.attributes["smtp.outcome"]?.toSpanAttribute() == .string("stored") })
            #expect(received.allSatisfy { $0.attributes["client.address"]?.toSpanAttribute() == .string("127.0.0.1") })
            #expect(received.allSatisfy {
                if case .int64(let size)? = $0.attributes["smtp.message.size"]?.toSpanAttribute() { size > 100 } else { false }
            })
        }
    }

    @Test func theCallersLoggerCarriesItsMetadataThroughRetries() async throws {
        let events = LoggedEvents()
        let logger = {
            var logger = Logger(label: "request") { _ in RecordingHandler(events: events) }
            logger[metadataKey: "request.id"] = "r-17"
            return logger
        }()
        try await withSinkAndClient(sink: { $0.faults.deferData = .everyNth(1) }, client: {
            $0.retry.maximumAttempts = 2
        }) { sink, client in
            await #expect(throws: SMTPError.self) {
                try await client.send(testMessage(), envelope: envelope(), logger: logger)
            }
            let logged = events.all
            let retrying = try #require(logged.first { $0.message == "retrying" })
            #expect(retrying.metadata["request.id"] == "r-17")
            #expect(retrying.metadata["smtp.server"] == "127.0.0.1:\(sink.localAddress.port)")
            let reported = try #require(logged.first { $0.message == "message reported" })
            #expect(reported.metadata["request.id"] == "r-17")
            #expect(reported.metadata["smtp.outcome"] == "deferred")
            #expect(reported.metadata["smtp.attempts"] == "2")
            #expect(logged.allSatisfy { !$0.message.hasPrefix("C:") && !$0.message.hasPrefix("S:") },
                    "the transcript stays in the client's own logger")
        }
    }

    @Test func aRelayThatCannotBeReachedIsAWarningWithItsCause() async throws {
        let events = LoggedEvents()
        // A port bound and never listened on: a port found free and closed again was taken by
        // another test's sink in a CI run, and this "unreachable" relay accepted the message.
        let refused = try RefusedPort()
        defer { refused.close() }
        var configuration = SMTPClient.Configuration(host: "127.0.0.1", port: refused.port, security: .none)
        configuration.logger = Logger(label: "client") { _ in RecordingHandler(events: events) }
        configuration.pool.connectAttempts = 1
        configuration.retry.maximumAttempts = 1
        let client = try SMTPClient(configuration: configuration)
        await #expect(throws: SMTPError.self) { try await client.send(testMessage(), envelope: envelope()) }
        await client.shutdown()
        let warning = try #require(events.all.first { $0.level == .warning })
        #expect(warning.message == "could not connect to the relay")
        #expect(warning.metadata["smtp.server"] == "127.0.0.1:\(configuration.port)")
        #expect(warning.metadata["smtp.error"].map { "\($0)".contains("refused") } == true, "\(warning.metadata)")
    }
}

/// Log events a test logger recorded, with the logger's metadata and the event's merged.
final class LoggedEvents: Sendable {
    struct Event: Sendable {
        let level: Logger.Level
        let message: String
        let metadata: Logger.Metadata
    }
    private let events = Locked<[Event]>([])
    func append(_ event: Event) { events.withLock { $0.append(event) } }
    var all: [Event] { events.withLock { $0 } }
    /// Just the messages.
    var messages: [String] { all.map(\.message) }
    /// Each message after the value of its `key` metadata (`-` without one): which
    /// connection logged a transcript line, say.
    func messages(taggedBy key: String) -> [String] {
        all.map { "\($0.metadata[key].map { "\($0)" } ?? "-") \($0.message)" }
    }
}

/// Records every log message into ``LoggedEvents``.
struct RecordingHandler: LogHandler {
    let events: LoggedEvents
    var metadata: Logger.Metadata = [:]
    var logLevel: Logger.Level = .trace
    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }
    func log(event: LogEvent) {
        events.append(.init(level: event.level, message: event.message.description,
                            metadata: metadata.merging(event.metadata ?? [:]) { $1 }))
    }
}
