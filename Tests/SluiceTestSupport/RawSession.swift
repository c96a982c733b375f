public import SluiceCore
public import SluiceTransport

/// A raw SMTP client over the transport: sends bytes as given, reads replies as they come.
public struct RawSession: Sendable {
    public let connection: Connection
    public let collector: Collector

    public static func open(to address: SocketAddress, on loop: EventLoop, tls: TLSContext? = nil) async throws -> RawSession {
        let collector = Collector()
        let connection = try await Connection.connect(
            to: address.host, port: address.port, on: loop, tls: tls, serverName: tls == nil ? nil : "localhost") { _ in
            collector
        }
        return RawSession(connection: connection, collector: collector)
    }

    public func send(_ text: String) async throws { try await connection.write(Array(text.utf8)) }
    public func send(_ bytes: [UInt8]) async throws { try await connection.write(bytes) }

    /// The replies read so far, parsed from everything received.
    public var replies: [SMTPReply] {
        var parser = ReplyParser(limits: { var limits = ReplyParser.Limits(); limits.maximumReplyLength = 1 << 24; return limits }())
        parser.append(collector.kept)
        var all: [SMTPReply] = []
        while let reply = try? parser.nextReply() { all.append(reply) }
        return all
    }

    /// Waits until at least `count` replies have arrived (or the connection closed), for at
    /// most 10 s (stretched under the sanitizers, as every test deadline is).
    @discardableResult
    public func replies(atLeast count: Int) async -> [SMTPReply] {
        let clock = ContinuousClock()
        let deadline = clock.now + scaled(.seconds(10))
        while clock.now < deadline {
            // Closed first, then the replies: the collector keeps a connection's last bytes
            // before it marks the close, so replies read after a close are all of them. Read
            // the other way round, a server's last replies and its close (a 250, then QUIT's 221
            // and the close) could land between the two reads, and the stale replies would be
            // returned as final. That fits the one failure of pipelinedSessionIsStoredExactlyAsSent
            // (five of seven replies). With a 3 ms pause between the reads, that order failed
            // the test in 6 runs of 8, this order in none.
            let closed = collector.isClosed
            let now = replies
            if now.count >= count || closed { return now }
            try? await Task.sleep(for: .milliseconds(5))
        }
        return replies
    }

    public var codes: [Int] { replies.map(\.code.rawValue) }
}
