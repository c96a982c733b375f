public import SluiceTransport

/// The byte at `offset` of the test pattern: position-dependent, so a lost, repeated or
/// reordered byte is caught.
public func patternByte(_ offset: Int) -> UInt8 {
    UInt8(truncatingIfNeeded: offset &* 31 &+ (offset >> 8) &+ (offset >> 16))
}

public func pattern(from offset: Int, count: Int) -> [UInt8] {
    (offset..<offset + count).map(patternByte)
}

/// Echoes every byte back. With `pausesReadingWhenNotWritable` on its connections, this is a
/// server with backpressure: it stops reading while its echo backs up.
public final class EchoHandler: ConnectionHandler {
    public let stats: EchoStats
    public init(stats: EchoStats) { self.stats = stats }

    public func connection(_ connection: Connection, didReceive bytes: UnsafeRawBufferPointer) {
        connection.enqueueWrite([SharedBytes(copying: bytes)])
        stats.observe(pending: connection.pendingWriteBytes)
    }

    public func connection(_ connection: Connection, writabilityChanged isWritable: Bool) {
        if !isWritable { stats.recordBackpressure() }
    }

    public func connectionDidClose(_ connection: Connection, error: TransportError?) {
        stats.recordClose()
    }
}

/// Counters shared by every echo handler of a server.
public final class EchoStats: Sendable {
    private struct State {
        var maxPendingWriteBytes = 0
        var backpressureEvents = 0
        var closes = 0
        var acceptsByLoop: [Int: Int] = [:]
    }
    private let state = Locked(State())

    public init() {}

    public func observe(pending: Int) { state.withLock { $0.maxPendingWriteBytes = max($0.maxPendingWriteBytes, pending) } }
    public func recordBackpressure() { state.withLock { $0.backpressureEvents += 1 } }
    public func recordClose() { state.withLock { $0.closes += 1 } }
    public func recordAccept(onLoop index: Int) { state.withLock { $0.acceptsByLoop[index, default: 0] += 1 } }
    public var acceptsByLoop: [Int: Int] { state.withLock { $0.acceptsByLoop } }
    public var maxPendingWriteBytes: Int { state.withLock { $0.maxPendingWriteBytes } }
    public var backpressureEvents: Int { state.withLock { $0.backpressureEvents } }
    public var closes: Int { state.withLock { $0.closes } }
}

/// Receives bytes and lets a task wait for them. It can check them against the test pattern
/// as they arrive (without keeping them) or keep them.
public final class Collector: ConnectionHandler, @unchecked Sendable {
    // `state` is guarded by its lock; the handler methods run on the connection's loop and
    // tasks read through the lock.
    private struct State {
        var count = 0
        var kept: [UInt8] = []
        var mismatches = 0
        var closed = false
        var closeError: TransportError?
        var waiters: [(Int, CheckedContinuation<Void, any Error>)] = []
        var closeWaiters: [CheckedContinuation<Void, Never>] = []
    }
    private let state = Locked(State())
    private let checksPattern: Bool
    private let patternOffset: Int

    /// - Parameters:
    ///   - checksPattern: Check each byte against the test pattern instead of keeping it.
    ///   - patternOffset: Where in the pattern the first byte is.
    public init(checksPattern: Bool = false, patternOffset: Int = 0) {
        self.checksPattern = checksPattern
        self.patternOffset = patternOffset
    }

    public var count: Int { state.withLock { $0.count } }
    public var kept: [UInt8] { state.withLock { $0.kept } }
    public var mismatches: Int { state.withLock { $0.mismatches } }
    public var closeError: TransportError? { state.withLock { $0.closeError } }
    public var isClosed: Bool { state.withLock { $0.closed } }

    public func connection(_ connection: Connection, didReceive bytes: UnsafeRawBufferPointer) {
        let ready = state.withLock { state -> [CheckedContinuation<Void, any Error>] in
            if checksPattern {
                for (index, byte) in bytes.enumerated() where byte != patternByte(patternOffset + state.count + index) {
                    state.mismatches += 1
                }
            } else {
                state.kept.append(contentsOf: bytes)
            }
            state.count += bytes.count
            let count = state.count
            let ready = state.waiters.filter { $0.0 <= count }.map(\.1)
            state.waiters.removeAll { $0.0 <= count }
            return ready
        }
        for waiter in ready { waiter.resume() }
    }

    public func connectionDidClose(_ connection: Connection, error: TransportError?) {
        let (waiters, closeWaiters) = state.withLock { state in
            state.closed = true
            state.closeError = error
            defer {
                state.waiters = []
                state.closeWaiters = []
            }
            return (state.waiters.map(\.1), state.closeWaiters)
        }
        for waiter in waiters {
            waiter.resume(throwing: error ?? TransportError(.connectionClosed, "closed before the bytes arrived"))
        }
        for waiter in closeWaiters { waiter.resume() }
    }

    /// Waits until at least `count` bytes have arrived; throws if the connection closes first.
    public func waitForBytes(_ count: Int) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            let outcome: Result<Void, any Error>? = state.withLock { state in
                if state.count >= count { return .success(()) }
                if state.closed {
                    return .failure(state.closeError ?? TransportError(.connectionClosed, "closed"))
                }
                state.waiters.append((count, continuation))
                return nil
            }
            if let outcome { continuation.resume(with: outcome) }
        }
    }

    /// Waits until the connection has closed.
    public func waitForClose() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let closed = state.withLock { state -> Bool in
                if state.closed { return true }
                state.closeWaiters.append(continuation)
                return false
            }
            if closed { continuation.resume() }
        }
    }
}

/// Does nothing with what arrives; pauses reading at once if asked, so the peer's writes back up.
public final class SilentHandler: ConnectionHandler {
    public init() {}
    public func connection(_ connection: Connection, didReceive bytes: UnsafeRawBufferPointer) {
        connection.pauseReading()
    }
    public func connectionDidClose(_ connection: Connection, error: TransportError?) {}
}
