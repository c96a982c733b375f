import Foundation
import Testing
import SluiceTransport
import SluiceTestSupport

@Suite("Echo over loopback")
struct EchoTests {
    @Test func thousandConcurrentConnectionsOverTwoLoopsEchoEveryByte() async throws {
        let group = EventLoopGroup(numberOfLoops: 2)
        let (server, stats) = try await startEchoServer(on: group)
        let port = server.localAddress.port
        let perConnection = 4096
        let connections = 1000

        let results = try await withDeadline(.seconds(120), "1,000 echo connections") {
            try await withThrowingTaskGroup(of: (Int, Int, Int).self) { tasks in
                for index in 0..<connections {
                    tasks.addTask {
                        let offset = index * 7919
                        let collector = Collector(checksPattern: true, patternOffset: offset)
                        let connection = try await Connection.connect(
                            to: "127.0.0.1", port: port, on: group.next()) { _ in collector }
                        try await connection.write(pattern(from: offset, count: perConnection))
                        try await collector.waitForBytes(perConnection)
                        await connection.close()
                        return (collector.count, collector.mismatches, connection.eventLoop.index)
                    }
                }
                var all: [(Int, Int, Int)] = []
                for try await result in tasks { all.append(result) }
                return all
            }
        }

        #expect(results.count == connections)
        #expect(results.allSatisfy { $0.0 == perConnection }, "every byte came back")
        #expect(results.reduce(0) { $0 + $1.1 } == 0, "no byte was changed, lost or reordered")
        #expect(Set(results.map(\.2)) == [0, 1], "client connections ran on both loops")
        #expect(stats.acceptsByLoop.keys.sorted() == [0, 1], "the server accepted on both loops")
        #expect(stats.acceptsByLoop.values.reduce(0, +) == connections)

        await server.close()
        #expect(await waitForHandles(group, toReturnTo: 0) == 0)
        await group.shutdown()
    }

    @Test func sixtyFourMebibytesThroughOneConnectionWithBackpressureAndBoundedMemory() async throws {
        let group = EventLoopGroup(numberOfLoops: 2)
        let (server, stats) = try await startEchoServer(on: group)
        let total = 64 * 1024 * 1024
        let chunk = 1024 * 1024

        let collector = Collector(checksPattern: true)
        let connection = try await Connection.connect(
            to: "127.0.0.1", port: server.localAddress.port, on: group.loops[0]) { _ in collector }
        // Stop reading the echo for a while, so the server's replies back up and it must
        // stop reading us (backpressure end to end), then carry on.
        connection.eventLoop.execute { connection.pauseReading() }
        let writer = Task {
            var offset = 0
            while offset < total {
                try await connection.write(SharedBytes(pattern(from: offset, count: chunk)))
                offset += chunk
            }
        }
        // Stay paused until the kernel's buffers are full and the server's writes queue up
        // past its high watermark (bounded: the writer blocks once everything is full).
        try await withDeadline(.seconds(120), "the server to feel backpressure") {
            while stats.backpressureEvents == 0 { try await Task.sleep(for: .milliseconds(10)) }
        }
        #expect(collector.count == 0)
        connection.eventLoop.execute { connection.resumeReading() }

        try await withDeadline(.seconds(300), "64 MiB echo") {
            try await writer.value
            try await collector.waitForBytes(total)
        }
        #expect(collector.count == total)
        #expect(collector.mismatches == 0)
        #expect(stats.backpressureEvents >= 1, "the server's writes backed up and it stopped reading")
        let bound = ConnectionOptions().writeHighWatermark + ConnectionOptions().readBufferSize
        #expect(stats.maxPendingWriteBytes <= bound,
                "the server never buffered more than its high watermark plus one read")
        // Memory is bounded by what the transport buffers, asserted above. (Process-wide RSS
        // is no measure here: other suites run in parallel in this process.)

        await connection.close()
        await server.close()
        #expect(await waitForHandles(group, toReturnTo: 0) == 0)
        await group.shutdown()
    }

    /// Shared chunks followed by a tail the socket may not take: the tail is written from the
    /// caller's array when the socket takes everything, and copied when it must wait (whole,
    /// or cut by a partial write). Every byte must arrive once, in order, either way.
    @Test func chunksThenTailArriveInOrderWhetherWrittenAtOnceOrQueued() async throws {
        let group = EventLoopGroup(numberOfLoops: 1)
        let (server, _) = try await startEchoServer(on: group)
        let collector = Collector(checksPattern: true)
        let connection = try await Connection.connect(
            to: "127.0.0.1", port: server.localAddress.port, on: group.loops[0]) { _ in collector }
        // Not reading the echo makes the server stop reading us, so the socket fills and later
        // writes take the partial and queued paths.
        connection.eventLoop.execute { connection.pauseReading() }
        let total = 8 * 1024 * 1024
        let (writes, queued) = try await withDeadline(.seconds(60), "writing 8 MiB") {
            try await withCheckedThrowingContinuation { (done: CheckedContinuation<(Int, Int), any Error>) in
                connection.eventLoop.execute {
                    var offset = 0
                    var writes = 0
                    var queued = 0
                    while offset < total {
                        // Sizes vary, so the socket fills part way into a chunk or a tail.
                        let chunkSize = min(total - offset, 1 + (writes &* 7_919) % 65_536)
                        let tailSize = min(total - offset - chunkSize, (writes &* 104_729) % 3_000)
                        let chunk = SharedBytes(pattern(from: offset, count: chunkSize))
                        let tail = pattern(from: offset + chunkSize, count: tailSize)
                        connection.enqueueWrite(writes % 5 == 0 ? [] : [chunk], then: writes % 5 == 0 ? pattern(from: offset, count: chunkSize) + tail : tail)
                        if connection.pendingWriteBytes > 0 { queued += 1 }
                        offset += chunkSize + tailSize
                        writes += 1
                    }
                    done.resume(returning: (writes, queued))
                }
            }
        }
        #expect(queued > 0, "some of the \(writes) writes waited for the socket")
        #expect(queued < writes, "some were written at once")
        connection.eventLoop.execute { connection.resumeReading() }
        try await withDeadline(.seconds(120), "8 MiB echo") { try await collector.waitForBytes(total) }
        #expect(collector.count == total)
        #expect(collector.mismatches == 0, "no byte was changed, lost, doubled or reordered")

        await connection.close()
        await server.close()
        #expect(await waitForHandles(group, toReturnTo: 0) == 0)
        await group.shutdown()
    }
}
