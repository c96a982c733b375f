import ArgumentParser
import Foundation
import SluiceTransport

/// `sluice loopback`: pushes bytes through echo connections over loopback TCP and reports
/// the transport's throughput. It exercises the whole transport (loops, listeners on every
/// loop, vectored writes, backpressure) without any SMTP.
struct LoopbackCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "loopback",
        abstract: "Measure the transport: echo bytes through connections over loopback TCP."
    )

    @Option(help: "Concurrent connections.")
    var connections: Int = 16

    @Option(help: "Bytes each connection sends (and gets back).")
    var bytes: Int = 8 * 1024 * 1024

    @Option(help: "Bytes per write.")
    var chunk: Int = 64 * 1024

    @Option(help: "Event loops (default: one per core).")
    var loops: Int = EventLoopGroup.coreCount

    @Option(help: "Give up after this many seconds.")
    var timeout: Double = 300

    func validate() throws {
        guard connections > 0, bytes > 0, chunk > 0, loops > 0, timeout > 0 else {
            throw ValidationError("--connections, --bytes, --chunk, --loops and --timeout must be positive")
        }
    }

    func run() async throws {
        let group = EventLoopGroup(numberOfLoops: loops)
        var options = ConnectionOptions()
        options.pausesReadingWhenNotWritable = true
        let server = try await TCPServer.listen(host: "127.0.0.1", port: 0, group: group, options: options) { _ in
            Echo()
        }
        let payload = SharedBytes(count: chunk) { buffer in
            for index in buffer.indices { buffer[index] = UInt8(truncatingIfNeeded: index &* 31) }
        }
        let clock = ContinuousClock()
        let start = clock.now
        let cpuStart = processCPUTime()
        let (bytes, chunk, connections, port) = (self.bytes, self.chunk, self.connections, server.localAddress.port)
        let deadline = Duration.milliseconds(Int(timeout * 1000))

        let received = try await withThrowingTaskGroup(of: Int.self) { tasks in
            tasks.addTask {
                try await Task.sleep(for: deadline)
                throw ValidationError("gave up after \(deadline)")
            }
            tasks.addTask {
                try await withThrowingTaskGroup(of: Int.self) { clients in
                    for _ in 0..<connections {
                        clients.addTask {
                            let counter = Counter()
                            let connection = try await Connection.connect(
                                to: "127.0.0.1", port: port, on: group.next()) { _ in counter }
                            var sent = 0
                            while sent < bytes {
                                let size = min(chunk, bytes - sent)
                                let piece = size == chunk ? payload : SharedBytes(copying: UnsafeRawBufferPointer(rebasing: payload.bytes[0..<size]))
                                try await connection.write(piece)
                                sent += size
                            }
                            try await counter.wait(for: bytes)
                            await connection.close()
                            return bytes
                        }
                    }
                    return try await clients.reduce(0, +)
                }
            }
            let total = try await tasks.next()!
            tasks.cancelAll()
            return total
        }
        let elapsed = clock.now - start
        let cpu = processCPUTime() - cpuStart
        await server.close()
        await group.shutdown()

        let seconds = elapsed.seconds
        let mebibytes = Double(received) / 1_048_576
        print("loopback echo: \(connections) connections on \(loops) loops, \(received) bytes each way")
        print(String(format: "elapsed %.3f s, %.1f MiB/s each way, CPU %.3f s (%.2f CPU-s per GiB)",
                     seconds, mebibytes / seconds, cpu, cpu / (mebibytes / 1024)))
    }
}

/// Echoes what it reads.
private final class Echo: ConnectionHandler {
    func connection(_ connection: Connection, didReceive bytes: UnsafeRawBufferPointer) {
        connection.enqueueWrite([SharedBytes(copying: bytes)])
    }
    func connectionDidClose(_ connection: Connection, error: TransportError?) {}
}

/// Counts echoed bytes and wakes a task when enough have arrived.
private final class Counter: ConnectionHandler, @unchecked Sendable {
    // Guarded by the lock; handler calls come from the connection's loop.
    private let state = Locked<(count: Int, target: Int, waiter: CheckedContinuation<Void, any Error>?)>((0, .max, nil))

    func connection(_ connection: Connection, didReceive bytes: UnsafeRawBufferPointer) {
        let waiter = state.withLock { state -> CheckedContinuation<Void, any Error>? in
            state.count += bytes.count
            guard state.count >= state.target, let waiter = state.waiter else { return nil }
            state.waiter = nil
            return waiter
        }
        waiter?.resume()
    }

    func connectionDidClose(_ connection: Connection, error: TransportError?) {
        let waiter = state.withLock { state -> CheckedContinuation<Void, any Error>? in
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(throwing: error ?? TransportError(.connectionClosed, "the echo server closed the connection"))
    }

    func wait(for count: Int) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let done = state.withLock { state -> Bool in
                if state.count >= count { return true }
                state.target = count
                state.waiter = continuation
                return false
            }
            if done { continuation.resume() }
        }
    }
}

/// User plus system CPU time of this process, in seconds.
func processCPUTime() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    func seconds(_ time: timeval) -> Double { Double(time.tv_sec) + Double(time.tv_usec) / 1e6 }
    return seconds(usage.ru_utime) + seconds(usage.ru_stime)
}
