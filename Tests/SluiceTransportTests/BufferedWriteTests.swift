import Foundation
import SluiceTestSupport
import SluiceTransport
import Testing

/// `Connection.bufferWrite`: what one loop iteration writes goes out once, at its end, in the
/// order written, before anything written at once and before a close.
@Suite("Buffered writes")
struct BufferedWriteTests {
    @Test func bufferedAndImmediateWritesKeepTheirOrderAndACloseFlushesFirst() async throws {
        let group = EventLoopGroup(numberOfLoops: 1)
        let (server, _) = try await startEchoServer(on: group)
        let collector = Collector()
        let connection = try await Connection.connect(to: "127.0.0.1", port: server.localAddress.port, on: group.loops[0]) { _ in
            collector
        }
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
}
