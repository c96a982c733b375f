import CLibUV
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// One libuv event loop running on its own thread.
///
/// Every libuv handle belongs to exactly one loop and is touched only on that loop's thread.
/// Other threads hand the loop work with ``execute(_:)``: the job is appended to a
/// mutex-guarded queue and `uv_async_send` wakes the loop, which drains the whole queue per
/// wake-up. Loops are made and owned by an ``EventLoopGroup``.
public final class EventLoop: @unchecked Sendable {
    // Thread-safety of each field:
    // - `uvLoop`, `wakeup`, `index`: set in init, never reassigned; the memory they point to is
    //   touched only on the loop thread (after init) and freed by the loop thread as it exits.
    // - `queue`: guarded by its lock.
    // - `thread`, `loopThread`: written before init returns (init waits on `started`), read-only after.
    // - `resources`, `deferred`, `running`, `readBuffer`, `readBufferLent`, `sealing`: loop thread only.
    //   `deferred` and `running` skip the runtime's exclusivity checks (two per deferral, and
    //   a busy loop defers a write per connection per iteration): no access to them overlaps
    //   another, since deferred work runs from the swapped-out batch and defers into the
    //   emptied array. `readBuffer` and `readBufferLent` skip them too (a borrow and a return
    //   per read): each access is a whole read or write of the field, inside one call. So does
    //   `sealing`.
    // - `liveHandleCounter`: atomic.
    let uvLoop: UnsafeMutablePointer<uv_loop_t>
    private let wakeup: UnsafeMutablePointer<uv_async_t>
    /// Runs ``deferred`` once per iteration, after the iteration's I/O callbacks.
    private let check: UnsafeMutablePointer<uv_check_t>
    @exclusivity(unchecked) private var deferred: [DeferredWork] = []
    /// The batch of ``deferred`` being run; its storage is kept for the next iteration (every
    /// connection with output defers its write, so a busy loop defers work every iteration).
    @exclusivity(unchecked) private var running: [DeferredWork] = []
    /// The loop's position in its group, for names and logs.
    public let index: Int
    /// The read buffer this loop's connections share, as libuv advises for `uv_alloc_cb`: a
    /// read's bytes are handed on before its callback returns, so one buffer serves every
    /// connection in turn, and 10,000 connections do not keep 10,000 buffers of 64 KB.
    @exclusivity(unchecked) private var readBuffer = UnsafeMutableRawBufferPointer(start: nil, count: 0)
    @exclusivity(unchecked) private var readBufferLent = false
    /// Where TLS gathers a write's small pieces into one record (``sealingBuffer()``).
    @exclusivity(unchecked) private var sealing = UnsafeMutableRawBufferPointer(start: nil, count: 0)

    private struct JobQueue {
        var jobs: [@Sendable () -> Void] = []
        var acceptsJobs = true
        var shutdownWaiters: [CheckedContinuation<Void, Never>] = []
        var finished = false
    }

    private let queue = Locked(JobQueue())
    private var thread: pthread_t = pthread_t()
    private var loopThread: pthread_t = pthread_t()
    private var resources: [ObjectIdentifier: any LoopResource] = [:]
    private let liveHandleCounter = Atomic<Int>(0)

    init(index: Int) {
        self.index = index
        uvLoop = .allocate(capacity: 1)
        let status = uv_loop_init(uvLoop)
        precondition(status == 0, "uv_loop_init failed: \(String(cString: uv_strerror(status)))")
        wakeup = .allocate(capacity: 1)
        check = .allocate(capacity: 1)
        uv_async_init(uvLoop, wakeup, eventLoopWakeupCallback)
        // Safe: the loop outlives its async handle (the handle is closed before the loop ends),
        // so an unretained pointer back to the loop is enough.
        wakeup.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        uv_check_init(uvLoop, check)
        // Safe as for `wakeup`: the check handle is closed before the loop ends.
        check.pointee.data = Unmanaged.passUnretained(self).toOpaque()

        let started = UnsafeMutablePointer<uv_sem_t>.allocate(capacity: 1)
        uv_sem_init(started, 0)
        defer {
            uv_sem_destroy(started)
            started.deallocate()
        }
        let context = ThreadStart(loop: self, started: started)
        let box = Unmanaged.passRetained(context).toOpaque()
        let result = pthread_create(&thread, nil, { raw in
            // Safe: `raw` is the retained ThreadStart passed below; taken (released) exactly once here.
            let context = Unmanaged<ThreadStart>.fromOpaque(raw!).takeRetainedValue()
            context.loop.run(signalling: context.started)
            return nil
        }, box)
        precondition(result == 0, "pthread_create failed: \(result)")
        uv_sem_wait(started)
    }

    /// Carries the loop and the start semaphore into the new thread.
    private final class ThreadStart {
        let loop: EventLoop
        let started: UnsafeMutablePointer<uv_sem_t>
        init(loop: EventLoop, started: UnsafeMutablePointer<uv_sem_t>) {
            self.loop = loop
            self.started = started
        }
    }

    /// Lends the loop's shared read buffer, `size` bytes of it, until ``returnReadBuffer()``;
    /// nil while it is lent already (a handler that makes another connection read meanwhile:
    /// that connection reads into a buffer of its own). Loop thread only.
    func borrowReadBuffer(size: Int) -> UnsafeMutableRawBufferPointer? {
        guard !readBufferLent else { return nil }
        if readBuffer.count < size {
            readBuffer.deallocate()
            readBuffer = .allocate(byteCount: size, alignment: 16)
        }
        readBufferLent = true
        return UnsafeMutableRawBufferPointer(rebasing: readBuffer[0..<size])
    }

    /// Takes back the buffer ``borrowReadBuffer(size:)`` lent. Loop thread only.
    func returnReadBuffer() {
        assert(readBufferLent, "the loop's read buffer was returned but not lent")
        readBufferLent = false
    }

    /// A buffer of one TLS record's plaintext (16 KB) that a connection gathers a write in
    /// before sealing it. Used only within one call that does not return to the loop, so
    /// every connection of the loop shares it without lending. Loop thread only.
    func sealingBuffer() -> UnsafeMutableRawBufferPointer {
        if sealing.baseAddress == nil { sealing = .allocate(byteCount: 16_384, alignment: 16) }
        return sealing
    }

    /// The loop thread's body: run until every handle is closed, then free the loop.
    private func run(signalling started: UnsafeMutablePointer<uv_sem_t>) {
        loopThread = pthread_self()
        currentLoopKey.set(self)
        cuv_set_thread_name("sluice-loop-\(index)")
        uv_sem_post(started)

        uv_run(uvLoop, UV_RUN_DEFAULT)

        let closeStatus = uv_loop_close(uvLoop)
        assert(closeStatus == 0, "loop closed with live handles: \(closeStatus)")
        uvLoop.deallocate()
        wakeup.deallocate()
        check.deallocate()
        readBuffer.deallocate()
        readBuffer = UnsafeMutableRawBufferPointer(start: nil, count: 0)
        sealing.deallocate()
        sealing = UnsafeMutableRawBufferPointer(start: nil, count: 0)
        let waiters = queue.withLock { queue in
            queue.finished = true
            defer { queue.shutdownWaiters = [] }
            return queue.shutdownWaiters
        }
        for waiter in waiters { waiter.resume() }
    }

    /// True when called on this loop's thread.
    public var inEventLoop: Bool { pthread_equal(pthread_self(), loopThread) != 0 }

    /// Stops the program if not on this loop's thread. Loop-only state calls this.
    @inline(__always)
    public func assertInEventLoop(file: StaticString = #fileID, line: UInt = #line) {
        assert(inEventLoop, "not on event loop \(index)'s thread", file: file, line: line)
    }

    /// Runs `job` on the loop's thread, after every job submitted before it.
    ///
    /// - Returns: `false` if the loop is shutting down and the job will never run.
    @discardableResult
    public func execute(_ job: @escaping @Sendable () -> Void) -> Bool {
        let accepted = queue.withLock { queue in
            guard queue.acceptsJobs else { return false }
            queue.jobs.append(job)
            return true
        }
        if accepted { uv_async_send(wakeup) }
        return accepted
    }

    /// Drains the job queue; called by the async handle on the loop thread.
    fileprivate func runQueuedJobs() {
        let jobs = queue.withLock { queue in
            defer { queue.jobs.removeAll(keepingCapacity: true) }
            return queue.jobs
        }
        for job in jobs { job() }
    }

    // MARK: Resources and handle accounting

    /// Registers a resource that the loop closes if it shuts down first. Loop thread only.
    func register(_ resource: any LoopResource) {
        assertInEventLoop()
        resources[ObjectIdentifier(resource)] = resource
    }

    /// Forgets a resource once it has closed. Loop thread only.
    func deregister(_ resource: any LoopResource) {
        assertInEventLoop()
        resources[ObjectIdentifier(resource)] = nil
    }

    /// Counts a libuv handle that was initialised; balanced by ``handleClosed()``.
    func handleOpened() { liveHandleCounter.add(1, ordering: .relaxed) }

    /// Counts a libuv handle whose close callback ran.
    func handleClosed() { liveHandleCounter.subtract(1, ordering: .relaxed) }

    /// The number of libuv handles this loop's transport objects have open (connections,
    /// listeners, timers), not counting the loop's own wake-up handle. Readable from any
    /// thread; it returns to its earlier value once everything opened since has closed.
    public var liveHandleCount: Int { liveHandleCounter.load(ordering: .relaxed) }

    // MARK: Shutdown

    /// Closes every handle on the loop, lets their close callbacks run, and ends the thread.
    /// Jobs submitted before the call still run; later ones are refused.
    func shutdown() async {
        let first = queue.withLock { queue -> Bool in
            defer { queue.acceptsJobs = false }
            if queue.acceptsJobs {
                // Appended while still accepting, so it runs after every earlier job.
                queue.jobs.append { [self] in closeEverything() }
            }
            return queue.acceptsJobs
        }
        if first { uv_async_send(wakeup) }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let resumeNow = queue.withLock { queue -> Bool in
                if queue.finished { return true }
                queue.shutdownWaiters.append(continuation)
                return false
            }
            if resumeNow { continuation.resume() }
        }
        if first {
            // The thread's last act was to resume us; joining only waits for it to return.
            pthread_join(thread, nil)
        }
    }

    private func closeEverything() {
        let error = TransportError(.eventLoopShutDown, "event loop \(index) shut down")
        for resource in resources.values { resource.close(dueTo: error) }
        uv_close(UnsafeMutableRawPointer(wakeup).assumingMemoryBound(to: uv_handle_t.self), nil)
        uv_close(UnsafeMutableRawPointer(check).assumingMemoryBound(to: uv_handle_t.self), nil)
        runDeferred()
    }

    // MARK: End of iteration

    /// The loop whose thread this is, if it is a loop thread.
    public static var current: EventLoop? { currentLoopKey.get() }

    /// Runs `body` on this loop's thread once the current iteration's I/O callbacks are done,
    /// so work that many callbacks would each do (waking a consumer, flushing) is done once
    /// per iteration. Loop thread only.
    public func deferToEndOfIteration(_ body: @escaping () -> Void) {
        schedule(.body(body))
    }

    /// Calls `work`'s ``EndOfIterationWork/endOfIteration()`` on this loop's thread once the
    /// current iteration's I/O callbacks are done. Unlike a closure, deferring an object
    /// allocates nothing: a connection that defers its write every iteration uses this.
    /// Loop thread only.
    package func deferToEndOfIteration(_ work: any EndOfIterationWork) {
        schedule(.object(work))
    }

    private func schedule(_ work: DeferredWork) {
        assertInEventLoop()
        if deferred.isEmpty { uv_check_start(check, eventLoopCheckCallback) }
        deferred.append(work)
    }

    fileprivate func runDeferred() {
        while !deferred.isEmpty {
            swap(&deferred, &running)  // what the bodies defer goes to the emptied array
            for work in running {
                switch work {
                case .body(let body): body()
                case .object(let object): object.endOfIteration()
                }
            }
            running.removeAll(keepingCapacity: true)
        }
        uv_check_stop(check)
    }

    private enum DeferredWork {
        case body(() -> Void)
        case object(any EndOfIterationWork)
    }
}

/// An object with work to do once per loop iteration, after the iteration's I/O callbacks
/// (see ``EventLoop/deferToEndOfIteration(_:)-(any EndOfIterationWork)``).
package protocol EndOfIterationWork: AnyObject {
    /// Does the deferred work, on the loop's thread.
    func endOfIteration()
}

/// The check handle's callback: runs what was deferred to the end of the iteration.
private func eventLoopCheckCallback(_ handle: UnsafeMutablePointer<uv_check_t>?) {
    // Safe: `data` is the unretained loop, which outlives its check handle.
    Unmanaged<EventLoop>.fromOpaque(handle!.pointee.data).takeUnretainedValue().runDeferred()
}

/// A per-thread pointer to the loop running on the thread.
private let currentLoopKey = ThreadLocalLoop()

private final class ThreadLocalLoop: Sendable {
    // Safe: the key is created once here and never changes; each thread reads only its own value.
    private let key: pthread_key_t

    init() {
        var key = pthread_key_t()
        pthread_key_create(&key, nil)
        self.key = key
    }

    /// The loop runs on this thread until it exits, so an unretained pointer is enough.
    func set(_ loop: EventLoop) { pthread_setspecific(key, Unmanaged.passUnretained(loop).toOpaque()) }

    func get() -> EventLoop? {
        guard let raw = pthread_getspecific(key) else { return nil }
        return Unmanaged<EventLoop>.fromOpaque(raw).takeUnretainedValue()
    }
}

/// The async handle's callback: drains the job queue of the loop it belongs to.
private func eventLoopWakeupCallback(_ handle: UnsafeMutablePointer<uv_async_t>?) {
    // Safe: `data` is the unretained loop, which outlives its async handle.
    let loop = Unmanaged<EventLoop>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
    loop.runQueuedJobs()
}

/// A loop-bound object owning libuv handles or requests, which the loop closes on shutdown.
protocol LoopResource: AnyObject {
    /// Closes the resource and fails whatever waits on it with `error`. Loop thread only.
    func close(dueTo error: TransportError)
}

/// Names the calling thread as top, perf and gdb show it (at most 15 bytes are kept): for
/// the threads other modules start, such as the outbox's database thread.
package func nameCurrentThread(_ name: String) {
    cuv_set_thread_name(name)
}
