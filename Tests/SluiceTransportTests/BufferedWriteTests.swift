import Foundation
#if canImport(Glibc)
import Glibc
#endif
import SluiceTestSupport
import SluiceTransport
import Testing

/// `Connection.bufferWrite`: what one loop iteration writes goes out once, at its end, in the
/// order written, before anything written at once and before a close.
@Suite("Buffered writes")
struct BufferedWriteTests {
    /// A connection on a loop of its own to an echo server, whose echo `collector` keeps.
    private static func connectedToAnEchoServer() async throws
        -> (group: EventLoopGroup, server: TCPServer, collector: Collector, connection: Connection) {
        let group = EventLoopGroup(numberOfLoops: 1)
        let (server, _) = try await startEchoServer(on: group)
        let collector = Collector()
        let connection = try await Connection.connect(to: "127.0.0.1", port: server.localAddress.port, on: group.loops[0]) { _ in
            collector
        }
        return (group, server, collector, connection)
    }

    @Test func bufferedAndImmediateWritesKeepTheirOrderAndACloseFlushesFirst() async throws {
        let (group, server, collector, connection) = try await Self.connectedToAnEchoServer()
        let pending = Locked<[Int]>([])
        connection.eventLoop.execute {
            connection.bufferWrite(Array("MAIL\r\n".utf8))
            connection.bufferWrite(contentsOf: [SharedBytes(Array("body-1,".utf8)), SharedBytes(Array("body-2\r\n".utf8))])
            Array("RCPT\r\n".utf8).withUnsafeBytes { connection.bufferWrite($0) }
            pending.withLock { $0.append(connection.pendingWriteBytes) }
            connection.enqueueWrite(Array("NOW\r\n".utf8))  // the buffered bytes go before it
            connection.bufferWrite(Array("LAST\r\n".utf8))  // and this one at the iteration's end
        }
        let expected = "MAIL\r\nbody-1,body-2\r\nRCPT\r\nNOW\r\nLAST\r\n"
        try await withDeadline(.seconds(10), "the echo") { try await collector.waitForBytes(expected.utf8.count) }
        #expect(String(decoding: collector.kept, as: UTF8.self) == expected)
        #expect(pending.withLock { $0 } == [0], "nothing was handed to the socket while the iteration gathered")

        connection.eventLoop.execute { connection.close() }
        await collector.waitForClose()
        await server.close()
        await group.shutdown()
    }

    /// More in one iteration than the socket takes at once: what it does not take waits in a
    /// request, the runs of batched bytes between the chunks copied out in their places.
    @Test func aBatchLargerThanTheSocketTakesGoesOutWholeAndInOrder() async throws {
        let (group, server, collector, connection) = try await Self.connectedToAnEchoServer()
        var expected: [UInt8] = []
        var parts: [(command: [UInt8], chunk: SharedBytes)] = []
        for index in 0..<24 {
            let command = Array("BDAT \(index)\r\n".utf8)
            let chunk = [UInt8](repeating: UInt8(ascii: "a") + UInt8(index), count: 200_000 + index)
            expected += command + chunk
            parts.append((command, SharedBytes(chunk)))
        }
        expected += Array("QUIT\r\n".utf8)
        let queued = Locked(0)
        connection.eventLoop.execute { [parts] in
            for (command, chunk) in parts {
                connection.bufferWrite(command)
                connection.bufferWrite(contentsOf: [chunk])
            }
            connection.bufferWrite(Array("QUIT\r\n".utf8))
            connection.flush()
            queued.withLock { $0 = connection.pendingWriteBytes }
        }
        let total = expected.count
        try await withDeadline(.seconds(30), "the echo") { try await collector.waitForBytes(total) }
        #expect(queued.withLock { $0 } > 0, "the socket took it all at once, so the queued path went untested")
        let kept = collector.kept
        let firstDifference = kept == expected ? nil : zip(kept, expected).enumerated().first { $0.element.0 != $0.element.1 }?.offset
            ?? min(kept.count, expected.count)
        #expect(firstDifference == nil, "the bytes echoed differ from those written from octet \(firstDifference ?? 0)")

        connection.eventLoop.execute { connection.close() }
        await collector.waitForClose()
        await server.close()
        await group.shutdown()
    }

    @Test func aGracefulCloseRightAfterABufferedWriteSendsItFirst() async throws {
        let group = EventLoopGroup(numberOfLoops: 1)
        let received = Collector()
        let server = try await TCPServer.listen(host: "127.0.0.1", port: 0, group: group) { _ in received }
        let connection = try await Connection.connect(to: "127.0.0.1", port: server.localAddress.port, on: group.loops[0]) { _ in
            SilentHandler()
        }
        connection.eventLoop.execute {
            connection.bufferWrite(Array("QUIT\r\n".utf8))
            connection.close()
        }
        await received.waitForClose()
        #expect(String(decoding: received.kept, as: UTF8.self) == "QUIT\r\n", "the bytes, then the end of the stream")
        #expect(received.closeError == nil)
        await server.close()
        await group.shutdown()
    }

    /// A graceful close whose flush finds the peer gone (it reset the connection) closes
    /// once, with the write's error. The failed write used to close the handle and the close
    /// went on to shut down the socket: the failed shutdown closed the handle a second time
    /// and libuv aborted the process (seen in `sluice soak` under its drop faults).
    @Test func aGracefulCloseWhoseFlushFindsThePeerResetClosesOnceWithTheWriteError() async throws {
        let listener = try ResettingListener()
        let group = EventLoopGroup(numberOfLoops: 1)
        let closed = Collector()
        let connection = try await Connection.connect(to: "127.0.0.1", port: listener.port, on: group.loops[0]) { _ in
            closed
        }
        // Not reading, the connection does not hear the reset before it writes.
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            connection.eventLoop.execute {
                connection.pauseReading()
                done.resume()
            }
        }
        try listener.acceptAndReset()
        try await Task.sleep(for: .milliseconds(100))  // the RST crosses loopback
        connection.eventLoop.execute {
            connection.bufferWrite(Array("QUIT\r\n".utf8))
            connection.close()
        }
        try await withDeadline(.seconds(10), "the close") { await closed.waitForClose() }
        let error = try #require(closed.closeError, "the write's failure is why it closed")
        #expect("\(error)".contains("writing to"), "\(error)")
        await group.shutdown()
    }
}

/// A listening socket whose one connection is reset (SO_LINGER of zero, then close).
private struct ResettingListener: ~Copyable {
    let descriptor: Int32
    let port: Int

    init() throws {
        (descriptor, port) = try plainLoopbackListener(backlog: 1)
    }

    func acceptAndReset() throws {
        let accepted = accept(descriptor, nil, nil)
        guard accepted >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EINVAL) }
        var linger = Glibc.linger(l_onoff: 1, l_linger: 0)
        setsockopt(accepted, SOL_SOCKET, SO_LINGER, &linger, socklen_t(MemoryLayout<Glibc.linger>.size))
        Glibc.close(accepted)
    }

    deinit { Glibc.close(descriptor) }
}
