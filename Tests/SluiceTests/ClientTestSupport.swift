import Foundation
import Sluice
import SluiceSink
import SluiceTestSupport
import Testing

/// A small valid message; `tag` makes its subject and body distinct.
func testMessage(_ tag: String = "1", bodyLines: Int = 3) -> EncodedMessage {
    var text = "From: Sender <sender@example.com>\r\nTo: rcpt@example.org\r\nSubject: test \(tag)\r\n"
    text += "Message-ID: <\(tag)@example.com>\r\n\r\n"
    for line in 0..<bodyLines { text += "line \(line) of message \(tag)\r\n" }
    text += ".a line that starts with a dot\r\n"
    return EncodedMessage(try! RawMessage(Array(text.utf8)))
}

func envelope(_ recipients: String...) -> Envelope {
    try! Envelope(from: "sender@example.com", to: recipients.isEmpty ? ["rcpt@example.org"] : recipients)
}


/// A plaintext client for `sink`, with fast retries, `configure` applied.
func makeClient(for sink: SMTPSink, _ configure: (inout SMTPClient.Configuration) -> Void = { _ in }) throws -> SMTPClient {
    var configuration = SMTPClient.Configuration(host: "127.0.0.1", port: sink.localAddress.port, security: .none)
    configuration.ehloName = "client.test"
    configuration.retry.backoff = Backoff(initial: .milliseconds(10), maximum: .milliseconds(50))
    configuration.pool.connectBackoff = Backoff(initial: .milliseconds(10), maximum: .milliseconds(50))
    configure(&configuration)
    return try SMTPClient(configuration: configuration)
}

/// Runs `body` with a sink and a client, and shuts both down afterwards.
func withSinkAndClient(
    sink configureSink: (inout SinkConfiguration) -> Void = { _ in },
    client configureClient: (inout SMTPClient.Configuration) -> Void = { _ in },
    _ body: @escaping @Sendable (SMTPSink, SMTPClient) async throws -> Void
) async throws {
    let sink = try await startSink(configureSink)
    let client = try makeClient(for: sink, configureClient)
    do {
        try await withDeadline(.seconds(60), "client test") { try await body(sink, client) }
    } catch {
        await client.shutdown()
        await sink.shutdown()
        throw error
    }
    await client.shutdown()
    await sink.shutdown()
}

/// The error `body` throws, as an SMTPError (nil if it did not throw one).
func smtpError(_ body: () async throws -> DeliveryReport) async -> SMTPError? {
    do {
        _ = try await body()
        return nil
    } catch let error as SMTPError {
        return error
    } catch {
        Issue.record("expected an SMTPError, got \(error)")
        return nil
    }
}

/// Runs `body`, then shuts `sinks` down whether it returned or threw: a sink left running
/// keeps its loop threads, and the test process cannot exit.
func shuttingDown<T>(_ sinks: SMTPSink..., after body: () async throws -> T) async throws -> T {
    do {
        let result = try await body()
        for sink in sinks { await sink.shutdown() }
        return result
    } catch {
        for sink in sinks { await sink.shutdown() }
        throw error
    }
}
