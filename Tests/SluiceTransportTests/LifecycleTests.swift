import Synchronization
import Testing
import SluiceTransport
import SluiceTestSupport

@Suite("Cancellation, shutdown, timers and leaks")
struct LifecycleTests {
    @Test func cancellingMidConnectResumesOnceWithCancellationAndFreesTheHandle() async throws {
        let group = EventLoopGroup(numberOfLoops: 1)
        let blackHole = try await BlackHole.make()
        let task = Task {
            try await Connection.connect(
                to: "127.0.0.1", port: blackHole.port, on: group.loops[0], timeout: .seconds(60)) { _ in SilentHandler() }
        }
        // A connect in flight holds two handles: its socket and its timeout timer.
        #expect(await waitForHandles(group, toReturnTo: 2) == 2, "the connect is in progress")
        task.cancel()
        await #expect(throws: CancellationError.self) { _ = try await task.value }
        #expect(await waitForHandles(group, toReturnTo: 0) == 0)
        await group.shutdown()
    }

    @Test func alreadyCancelledTaskOpensNothing() async throws {
        let group = EventLoopGroup(numberOfLoops: 1)
        let (server, stats) = try await startEchoServer(on: group)
        let baseline = group.liveHandleCount
        let port = server.localAddress.port
        let task = Task {
            withUnsafeCurrentTask { $0?.cancel() }
            return try await Connection.connect(to: "127.0.0.1", port: port, on: group.loops[0]) { _ in SilentHandler() }
        }
        await #expect(throws: CancellationError.self) { _ = try await task.value }
        #expect(await waitForHandles(group, toReturnTo: baseline) == baseline)
        // A connection opened and closed again would also bring the handles back: the server
        // must have accepted nothing. (An accept would have come within this wait.)
        try await Task.sleep(for: .milliseconds(200))
        #expect(stats.acceptsByLoop.isEmpty, "the server accepted \(stats.acceptsByLoop)")
        await server.close()
        await group.shutdown()
    }

    @Test func cancellingMidWriteResumesOnceClosesAndFrees() async throws {
        // The server runs on a group of its own and stops reading at once, so a large write
        // cannot finish; the client's group is checked alone. (The server's paused connection
        // cannot see the client's close until it reads again: that is what pausing means.)
        let serverGroup = EventLoopGroup(numberOfLoops: 1)
        let server = try await TCPServer.listen(host: "127.0.0.1", port: 0, group: serverGroup) { _ in SilentHandler() }
        let group = EventLoopGroup(numberOfLoops: 1)
        let collector = Collector()
        let connection = try await Connection.connect(
            to: "127.0.0.1", port: server.localAddress.port, on: group.loops[0]) { _ in collector }
        let big = SharedBytes(count: 64 * 1024 * 1024) { $0.initializeMemory(as: UInt8.self, repeating: 0x61) }
        let writer = Task { try await connection.write(big) }
        try await Task.sleep(for: .milliseconds(200))
        writer.cancel()
        await #expect(throws: CancellationError.self) { try await writer.value }
        try await withDeadline(.seconds(5), "close after cancelled write") { await collector.waitForClose() }
        #expect(collector.isClosed)
        #expect(await waitForHandles(group, toReturnTo: 0) == 0)
        await group.shutdown()
        await server.close()
        await serverGroup.shutdown()
    }

    @Test func writeOnAClosedConnectionFailsInsteadOfHanging() async throws {
        let group = EventLoopGroup(numberOfLoops: 1)
        let (server, _) = try await startEchoServer(on: group)
        let connection = try await Connection.connect(
            to: "127.0.0.1", port: server.localAddress.port, on: group.loops[0]) { _ in Collector() }
        await connection.close()
        await #expect { try await connection.write(Array("late".utf8)) }
            throws: { ($0 as? TransportError)?.kind == .connectionClosed }
        await server.close()
        await group.shutdown()
    }

    @Test func shutdownClosesEveryHandleAndFailsWhatWaits() async throws {
        let group = EventLoopGroup(numberOfLoops: 2)
        let (server, _) = try await startEchoServer(on: group)
        let collector = Collector()
        _ = try await Connection.connect(to: "127.0.0.1", port: server.localAddress.port, on: group.loops[1]) { _ in
            collector
        }
        let blackHole = try await BlackHole.make()
        let pending = Task {
            try await Connection.connect(
                to: "127.0.0.1", port: blackHole.port, on: group.loops[0], timeout: .seconds(60)) { _ in SilentHandler() }
        }
        let fired = Atomic<Bool>(false)
        group.loops[0].scheduleTimer(after: .seconds(60)) { fired.store(true, ordering: .relaxed) }
        // Two listeners, both ends of one connection, the pending connect and its timeout timer,
        // and the test's timer.
        #expect(await waitForHandles(group, toReturnTo: 7) == 7, "listeners, connections and timers are open")

        await group.shutdown()
        #expect(group.liveHandleCount == 0)
        await #expect { _ = try await pending.value } throws: { ($0 as? TransportError)?.kind == .eventLoopShutDown }
        #expect(collector.isClosed)
        #expect(collector.closeError?.kind == .eventLoopShutDown)
        let timerFired = fired.load(ordering: .relaxed)
        #expect(!timerFired)
        #expect(!group.loops[0].execute {}, "a shut-down loop takes no work")
        await #expect { try await group.loops[0].sleep(for: .milliseconds(1)) }
            throws: { ($0 as? TransportError)?.kind == .eventLoopShutDown }
    }

    @Test(arguments: [Duration.milliseconds(-300), .seconds(-2), .nanoseconds(-1), .zero])
    func aDelayAlreadyPastFiresAtOnce(delay: Duration) async throws {
        // A deadline computed as `instant - .now` is negative when the instant has passed; the
        // client's pool does that under load (ThreadSanitizer's slowness found it: -0.3 s has
        // components (0, -3e17) and trapped the conversion to milliseconds).
        let group = EventLoopGroup(numberOfLoops: 1)
        let fired = Atomic<Bool>(false)
        group.loops[0].scheduleTimer(after: delay) { fired.store(true, ordering: .relaxed) }
        // Waited with the task clock, not with the loop's timer conversion under test.
        try await Task.sleep(for: .milliseconds(200))
        let didFire = fired.load(ordering: .relaxed)
        #expect(didFire, "a delay of \(delay) fires at once")
        await group.shutdown()
    }

    @Test func cancelWhenClosedWaitsForTheHandleToClose() async throws {
        let group = EventLoopGroup(numberOfLoops: 1)
        let loop = group.loops[0]
        let timer = loop.scheduleTimer(after: .seconds(60)) {}
        // Once the close callback has run, not merely once uv_close was asked for.
        let countsWhenTold: [Int] = await withCheckedContinuation { continuation in
            loop.execute {
                let whileOpen = loop.liveHandleCount
                timer.cancel { continuation.resume(returning: [whileOpen, loop.liveHandleCount]) }
            }
        }
        #expect(countsWhenTold == [1, 0])
        // A timer already cancelled, its close still pending, waits for it too.
        let never = await withCheckedContinuation { continuation in
            loop.execute {
                let timer = loop.scheduleTimer(after: .seconds(60)) {}
                timer.cancel()
                timer.cancel { continuation.resume(returning: loop.liveHandleCount) }
            }
        }
        #expect(never == 0)
        await group.shutdown()
    }

    @Test func timersFireOnceOnTheirLoopAndCancelledOnesNever() async throws {
        let group = EventLoopGroup(numberOfLoops: 1)
        let loop = group.loops[0]
        let fires = Atomic<Int>(0)
        let onLoop = Atomic<Bool>(false)
        loop.scheduleTimer(after: .milliseconds(10)) {
            fires.add(1, ordering: .relaxed)
            onLoop.store(loop.inEventLoop, ordering: .relaxed)
        }
        let cancelled = Atomic<Bool>(false)
        let timer = loop.scheduleTimer(after: .milliseconds(50)) { cancelled.store(true, ordering: .relaxed) }
        timer.cancel()
        let clock = ContinuousClock()
        let start = clock.now
        try await loop.sleep(for: .milliseconds(150))
        #expect(clock.now - start >= .milliseconds(150))
        let (fireCount, firedOnLoop, cancelledFired) =
            (fires.load(ordering: .relaxed), onLoop.load(ordering: .relaxed), cancelled.load(ordering: .relaxed))
        #expect(fireCount == 1)
        #expect(firedOnLoop)
        #expect(!cancelledFired)
        #expect(await waitForHandles(group, toReturnTo: 0) == 0)

        let sleeper = Task { try await loop.sleep(for: .seconds(60)) }
        try await Task.sleep(for: .milliseconds(20))
        sleeper.cancel()
        await #expect(throws: CancellationError.self) { try await sleeper.value }
        #expect(await waitForHandles(group, toReturnTo: 0) == 0)
        await group.shutdown()
    }

    @Test func tenThousandConnectCloseCyclesLeakNoDescriptorOrHandle() async throws {
        let group = EventLoopGroup(numberOfLoops: 2)
        let (server, _) = try await startEchoServer(on: group)
        let port = server.localAddress.port
        let refused = try RefusedPort()
        let refusedPort = refused.port
        var blackHole: BlackHole? = try await BlackHole.make()
        let blackHolePort = blackHole!.port

        let unconnectedBefore = unconnectedSocketDescriptors().count
        let baselineHandles = await waitForHandles(group, toReturnTo: 2)  // the two listeners
        #expect(baselineHandles == 2)

        let counts = try await withDeadline(.seconds(600), "10,000 cycles") {
            try await cycles(good: 6000, refused: 3500, cancelled: 500, group: group, port: port,
                             refusedPort: refusedPort, blackHolePort: blackHolePort)
        }
        #expect(counts.good == 6000 && counts.refused == 3500 && counts.cancelled == 500, "\(counts)")

        #expect(await waitForHandles(group, toReturnTo: baselineHandles) == baselineHandles)
        await server.close()
        blackHole = nil
        refused.close()
        #expect(await waitForHandles(group, toReturnTo: 0) == 0)
        // Other suites run in parallel in this process, so the descriptor count is not
        // steady; instead no descriptor of ours may still be a socket on the ports used here.
        let leaked = socketDescriptors(touchingPorts: [port, refusedPort, blackHolePort])
        #expect(leaked.isEmpty, "descriptors still open: \(leaked)")
        // A socket whose connect was refused is in no /proc/net table, so the check above
        // cannot see it: count this process's sockets that are connected to nothing. 3,500
        // refused connects leaking would show; other suites' come and go by a few.
        let unconnected = unconnectedSocketDescriptors().count
        #expect(unconnected <= unconnectedBefore + 16,
                "sockets connected to nothing: \(unconnectedBefore) before, \(unconnected) after")
        await group.shutdown()
    }

    /// Connects, echoes a byte and closes `good` times, is refused `refused` times, and
    /// cancels `cancelled` connects in flight, 50 at a time; returns how many of each it saw.
    private func cycles(good: Int, refused: Int, cancelled: Int, group: EventLoopGroup, port: Int,
                        refusedPort: Int, blackHolePort: Int) async throws
        -> (good: Int, refused: Int, cancelled: Int) {
        enum Kind { case good, refused, cancelled }
        let seen = Tally()
        let kinds = Array(repeating: Kind.good, count: good) + Array(repeating: .refused, count: refused)
            + Array(repeating: .cancelled, count: cancelled)
        for batch in stride(from: 0, to: kinds.count, by: 50) {
            try await withThrowingTaskGroup(of: Void.self) { tasks in
                for kind in kinds[batch..<min(batch + 50, kinds.count)] {
                    tasks.addTask {
                        switch kind {
                        case .good:
                            let collector = Collector()
                            let connection = try await Connection.connect(
                                to: "127.0.0.1", port: port, on: group.next()) { _ in collector }
                            try await connection.write(Array("x".utf8))
                            try await collector.waitForBytes(1)
                            await connection.close()
                            seen.good.add(1, ordering: .relaxed)
                        case .refused:
                            do {
                                _ = try await Connection.connect(to: "127.0.0.1", port: refusedPort, on: group.next()) { _ in
                                    SilentHandler()
                                }
                                Issue.record("a connect to a closed port succeeded")
                            } catch let error as TransportError where error.kind == .connectionRefused {
                                seen.refused.add(1, ordering: .relaxed)
                            }
                        case .cancelled:
                            let attempt = Task {
                                try await Connection.connect(
                                    to: "127.0.0.1", port: blackHolePort, on: group.next(), timeout: .seconds(60)) { _ in
                                    SilentHandler()
                                }
                            }
                            try await Task.sleep(for: .milliseconds(1))
                            attempt.cancel()
                            do {
                                _ = try await attempt.value
                                Issue.record("a connect to the black hole succeeded")
                            } catch is CancellationError {
                                seen.cancelled.add(1, ordering: .relaxed)
                            }
                        }
                    }
                }
                try await tasks.waitForAll()
            }
        }
        return (seen.good.load(ordering: .relaxed), seen.refused.load(ordering: .relaxed),
                seen.cancelled.load(ordering: .relaxed))
    }
}

/// Counts of each kind of cycle.
private final class Tally: Sendable {
    let good = Atomic<Int>(0)
    let refused = Atomic<Int>(0)
    let cancelled = Atomic<Int>(0)
}
