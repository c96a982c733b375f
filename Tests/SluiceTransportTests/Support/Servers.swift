import SluiceTransport
import SluiceTestSupport

/// Starts an echo server on 127.0.0.1 with an ephemeral port.
func startEchoServer(
    on group: EventLoopGroup, tls: TLSContext? = nil, host: String = "127.0.0.1",
    options: ConnectionOptions = {
        var options = ConnectionOptions()
        options.pausesReadingWhenNotWritable = true
        return options
    }()
) async throws -> (TCPServer, EchoStats) {
    let stats = EchoStats()
    let server = try await TCPServer.listen(host: host, port: 0, group: group, tls: tls, options: options) { connection in
        stats.recordAccept(onLoop: connection.eventLoop.index)
        return EchoHandler(stats: stats)
    }
    return (server, stats)
}

/// Waits (briefly, polling) until `group` has `expected` live handles: close callbacks run on
/// the loops a moment after the operations that asked for them return.
func waitForHandles(_ group: EventLoopGroup, toReturnTo expected: Int, within limit: Duration = .seconds(5)) async -> Int {
    let clock = ContinuousClock()
    let deadline = clock.now + scaled(limit)
    while group.liveHandleCount != expected, clock.now < deadline {
        try? await Task.sleep(for: .milliseconds(5))
    }
    return group.liveHandleCount
}
