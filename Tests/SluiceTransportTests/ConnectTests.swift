import Testing
import SluiceTransport
import SluiceTestSupport

@Suite("Connecting")
struct ConnectTests {
    @Test func refusedConnectionIsATypedErrorWithLibuvsWords() async throws {
        let group = EventLoopGroup(numberOfLoops: 1)
        let refused = try RefusedPort()
        defer { refused.close() }  // keeps the port refused to the end
        let port = refused.port
        await #expect {
            _ = try await Connection.connect(to: "127.0.0.1", port: port, on: group.loops[0]) { _ in SilentHandler() }
        } throws: { error in
            guard let error = error as? TransportError else { return false }
            return error.kind == .connectionRefused && error.systemErrorName == "ECONNREFUSED"
                && error.description.contains("ECONNREFUSED: connection refused")
        }
        #expect(await waitForHandles(group, toReturnTo: 0) == 0)
        await group.shutdown()
    }

    @Test func unknownHostIsATypedError() async throws {
        let group = EventLoopGroup(numberOfLoops: 1)
        await #expect {
            _ = try await Connection.connect(to: "no-such-host.invalid", port: 25, on: group.loops[0]) { _ in SilentHandler() }
        } throws: { ($0 as? TransportError)?.kind == .hostNotFound }
        await group.shutdown()
    }

    @Test func unansweredConnectTimesOut() async throws {
        let group = EventLoopGroup(numberOfLoops: 1)
        let blackHole = try await BlackHole.make()
        let clock = ContinuousClock()
        let start = clock.now
        await #expect {
            _ = try await Connection.connect(
                to: "127.0.0.1", port: blackHole.port, on: group.loops[0], timeout: .milliseconds(300)) { _ in SilentHandler() }
        } throws: { ($0 as? TransportError)?.kind == .connectTimeout }
        let waited = clock.now - start
        #expect(waited >= .milliseconds(300))
        // The kernel's own SYN retries give up only after minutes (127 s with Linux's six
        // retries): a timer that never fired would show here. The bound leaves room for a
        // loaded parallel suite, where resuming this task has waited seconds for a thread.
        #expect(waited < scaled(.seconds(20)), "the connect timeout fired: \(waited)")
        #expect(await waitForHandles(group, toReturnTo: 0) == 0)
        await group.shutdown()
    }

    @Test func resolvesNamesAndLiterals() async throws {
        let group = EventLoopGroup(numberOfLoops: 1)
        let loopback = try await group.loops[0].resolve(host: "localhost", port: 2525)
        #expect(loopback.contains { $0.host == "127.0.0.1" || $0.host == "::1" })
        #expect(loopback.allSatisfy { $0.port == 2525 })
        let literal = try await group.loops[0].resolve(host: "::1", port: 25)
        #expect(literal.map(\.description) == ["[::1]:25"])
        #expect(throws: TransportError.self) { try SocketAddress(ipAddress: "127.0.0.1", port: 70000) }
        #expect(throws: TransportError.self) { try SocketAddress(ipAddress: "not-an-ip", port: 25) }
        await group.shutdown()
    }

    @Test func listensOnIPv6LoopbackAndReportsTheEphemeralPort() async throws {
        let group = EventLoopGroup(numberOfLoops: 2)
        let (server, _) = try await startEchoServer(on: group, host: "::1")
        #expect(server.localAddress.isIPv6)
        #expect(server.localAddress.port > 0)
        let collector = Collector()
        let connection = try await Connection.connect(
            to: "::1", port: server.localAddress.port, on: group.loops[0]) { _ in collector }
        #expect(connection.remoteAddress?.description == "[::1]:\(server.localAddress.port)")
        try await connection.write(Array("over IPv6".utf8))
        try await collector.waitForBytes(9)
        #expect(collector.kept == Array("over IPv6".utf8))
        await connection.close()
        await server.close()
        await group.shutdown()
    }

    @Test func listeningOnATakenPortIsAddressInUse() async throws {
        let group = EventLoopGroup(numberOfLoops: 1)
        let (server, _) = try await startEchoServer(on: group)
        // The first server did not use SO_REUSEPORT (one loop), so a second bind must fail.
        await #expect {
            _ = try await TCPServer.listen(host: "127.0.0.1", port: server.localAddress.port, group: group) { _ in
                SilentHandler()
            }
        } throws: { ($0 as? TransportError)?.kind == .addressInUse }
        await server.close()
        #expect(await waitForHandles(group, toReturnTo: 0) == 0)
        await group.shutdown()
    }
}
