import Benchmark
import Synchronization
import SluiceTransport

/// Transport benchmarks: loopback echo through the event loops, and the cost of a
/// connect/close cycle. Throughput is reported as a custom metric (bytes per iteration), with
/// instructions and allocations from the harness.
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .cpuTotal, .instructions, .mallocCountTotal, .throughput],
        timeUnits: .microseconds,
        maxDuration: .seconds(5),
        maxIterations: 1000
    )

    // One 1 MiB round trip through an echo server on another loop.
    Benchmark("echo 1 MiB over loopback", configuration: .init(scalingFactor: .one)) { benchmark in
        let state = try await LoopbackState.make(payloadSize: 1 << 20)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            try await state.roundTripOnNewConnection()
        }
        benchmark.stopMeasurement()
        await state.shutdown()
    }

    // Connect, one byte each way, close: the fixed cost of a connection.
    Benchmark("connect, echo 1 byte, close", configuration: .init(scalingFactor: .kilo)) { benchmark in
        let state = try await LoopbackState.make(payloadSize: 1)
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            try await state.roundTripOnNewConnection()
        }
        benchmark.stopMeasurement()
        await state.shutdown()
    }
}

/// A two-loop group with an echo server on it.
final class LoopbackState: Sendable {
    let group: EventLoopGroup
    let server: TCPServer
    let payload: SharedBytes
    var port: Int { server.localAddress.port }

    private init(group: EventLoopGroup, server: TCPServer, payload: SharedBytes) {
        self.group = group
        self.server = server
        self.payload = payload
    }

    static func make(payloadSize: Int) async throws -> LoopbackState {
        let group = EventLoopGroup(numberOfLoops: 2)
        var options = ConnectionOptions()
        options.pausesReadingWhenNotWritable = true
        let server = try await TCPServer.listen(host: "127.0.0.1", port: 0, group: group, options: options) { _ in
            Echo()
        }
        let payload = SharedBytes(count: payloadSize) { buffer in
            for index in buffer.indices { buffer[index] = UInt8(truncatingIfNeeded: index) }
        }
        return LoopbackState(group: group, server: server, payload: payload)
    }

    /// Connects, writes the payload, waits for all of it to come back, closes.
    func roundTripOnNewConnection() async throws {
        let counter = EchoCounter(target: payload.count)
        let connection = try await Connection.connect(to: "127.0.0.1", port: port, on: group.loops[0]) { _ in counter }
        try await connection.write(payload)
        try await counter.done()
        await connection.close()
    }

    func shutdown() async {
        await server.close()
        await group.shutdown()
    }
}

final class Echo: ConnectionHandler {
    func connection(_ connection: Connection, didReceive bytes: UnsafeRawBufferPointer) {
        connection.enqueueWrite([SharedBytes(copying: bytes)])
    }
    func connectionDidClose(_ connection: Connection, error: TransportError?) {}
}

/// Counts echoed bytes; `done()` returns once `target` have arrived.
final class EchoCounter: ConnectionHandler, @unchecked Sendable {
    // Guarded by the Mutex; handler calls come from the connection's loop.
    private let state = Mutex<(count: Int, waiter: CheckedContinuation<Void, any Error>?)>((0, nil))
    private let target: Int
    init(target: Int) { self.target = target }

    func connection(_ connection: Connection, didReceive bytes: UnsafeRawBufferPointer) {
        let waiter = state.withLock { state -> CheckedContinuation<Void, any Error>? in
            state.count += bytes.count
            guard state.count >= target else { return nil }
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume()
    }

    func connectionDidClose(_ connection: Connection, error: TransportError?) {
        let waiter = state.withLock { state -> CheckedContinuation<Void, any Error>? in
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(throwing: error ?? TransportError(.connectionClosed, "closed before the echo arrived"))
    }

    func done() async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let finished = state.withLock { state -> Bool in
                if state.count >= target { return true }
                state.waiter = continuation
                return false
            }
            if finished { continuation.resume() }
        }
    }
}
