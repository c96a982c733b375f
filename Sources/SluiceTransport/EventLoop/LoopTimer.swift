import CLibUV

/// A one-shot timer on an event loop. Its body runs once on the loop's thread when it fires,
/// unless it was cancelled first.
///
/// Create one with ``EventLoop/scheduleTimer(after:_:)``. ``cancel()`` may be called from any
/// thread; called on the loop's thread it is certain to stop a timer that has not yet fired.
public final class LoopTimer: @unchecked Sendable, LoopResource {
    // `handle` and `body` are touched on `loop`'s thread only.
    /// The loop the timer runs on.
    public let loop: EventLoop
    private var handle: UnsafeMutablePointer<uv_timer_t>?
    private var body: (@Sendable () -> Void)?
    /// Run once the handle's close callback has run (``cancel(whenClosed:)``).
    private var closeWaiters: [() -> Void] = []
    private var isClosing = false

    fileprivate init(loop: EventLoop, body: @escaping @Sendable () -> Void) {
        self.loop = loop
        self.body = body
    }

    fileprivate func start(milliseconds: UInt64) {
        loop.assertInEventLoop()
        guard body != nil else { return }  // cancelled before it started
        let handle = UnsafeMutablePointer<uv_timer_t>.allocate(capacity: 1)
        uv_timer_init(loop.uvLoop, handle)
        loop.handleOpened()
        // Retained for the handle's life; released once, in timerClosed.
        handle.pointee.data = Unmanaged.passRetained(self).toOpaque()
        self.handle = handle
        loop.register(self)
        startHandle(handle, milliseconds: milliseconds)
    }

    /// Starts `handle` to fire no sooner than `milliseconds` from now. libuv measures from
    /// the loop's cached time, taken when the loop last woke and truncated to whole
    /// milliseconds: the cache is refreshed first, and one millisecond more covers the
    /// truncation, so a timer never fires before its delay (it fired 0.2 ms early here).
    private func startHandle(_ handle: UnsafeMutablePointer<uv_timer_t>, milliseconds: UInt64) {
        uv_update_time(loop.uvLoop)
        uv_timer_start(handle, timerFired, milliseconds == 0 ? 0 : milliseconds + 1, 0)
    }

    fileprivate func fire() {
        loop.assertInEventLoop()
        let body = self.body
        self.body = nil
        closeHandle()
        body?()
    }

    /// Restarts a timer that has not fired or been cancelled, to fire `delay` from now, and
    /// returns true; returns false if it already fired or was cancelled. Much cheaper than
    /// cancelling and scheduling anew (no handle is closed or made). Loop thread only.
    @discardableResult
    public func reschedule(after delay: Duration) -> Bool {
        loop.assertInEventLoop()
        guard let handle, body != nil else { return false }
        startHandle(handle, milliseconds: delay.milliseconds)
        return true
    }

    /// Stops the timer if it has not fired. Safe from any thread, and more than once.
    public func cancel() {
        if loop.inEventLoop {
            body = nil
            closeHandle()
        } else {
            loop.execute { self.cancel() }
        }
    }

    /// Stops the timer if it has not fired, and calls `whenClosed` on the loop's thread once
    /// its libuv handle is closed — at once if it has none, later in this loop iteration or
    /// the next if it is closing. For owners whose own "closed" must mean every handle is
    /// gone. Loop thread only.
    public func cancel(whenClosed: @escaping () -> Void) {
        loop.assertInEventLoop()
        body = nil
        closeHandle()
        if isClosing {
            closeWaiters.append(whenClosed)
        } else {
            whenClosed()
        }
    }

    func close(dueTo error: TransportError) {
        body = nil
        closeHandle()
    }

    private func closeHandle() {
        guard let handle else { return }
        self.handle = nil
        isClosing = true
        uv_timer_stop(handle)
        uv_close(UnsafeMutableRawPointer(handle).assumingMemoryBound(to: uv_handle_t.self), timerClosed)
    }

    fileprivate func closed() {
        loop.deregister(self)
        loop.handleClosed()
        isClosing = false
        let waiters = closeWaiters
        closeWaiters = []
        for waiter in waiters { waiter() }
    }
}

private func timerFired(_ handle: UnsafeMutablePointer<uv_timer_t>?) {
    // Safe: `data` holds the timer retained in start(); it is released only in timerClosed.
    Unmanaged<LoopTimer>.fromOpaque(handle!.pointee.data).takeUnretainedValue().fire()
}

private func timerClosed(_ raw: UnsafeMutablePointer<uv_handle_t>?) {
    // Safe: this is the end of the handle's life; take back the retain from start() once.
    let timer = Unmanaged<LoopTimer>.fromOpaque(raw!.pointee.data).takeRetainedValue()
    timer.closed()
    raw!.withMemoryRebound(to: uv_timer_t.self, capacity: 1) { $0.deallocate() }
}

extension EventLoop {
    /// Runs `body` on this loop's thread once `delay` has passed, unless the returned timer is
    /// cancelled first. Callable from any thread.
    @discardableResult
    public func scheduleTimer(after delay: Duration, _ body: @escaping @Sendable () -> Void) -> LoopTimer {
        let timer = LoopTimer(loop: self, body: body)
        let milliseconds = delay.milliseconds
        if inEventLoop {
            timer.start(milliseconds: milliseconds)
        } else {
            execute { timer.start(milliseconds: milliseconds) }
        }
        return timer
    }

    /// Suspends the calling task for `delay`, measured by this loop's clock.
    public func sleep(for delay: Duration) async throws {
        try await perform("sleep") { (operation: LoopOperation<Void>) in
            let timer = self.scheduleTimer(after: delay) { operation.succeed(()) }
            operation.onCancel = { timer.cancel() }
        }
    }
}

extension Duration {
    /// Whole milliseconds, rounded up so a short positive delay is never zero; never negative.
    var milliseconds: UInt64 {
        // A deadline already past gives a negative delay, whose components can be (0, -n):
        // compare the whole value, not its seconds.
        guard self > .zero else { return 0 }
        let (seconds, attoseconds) = components
        let millis = UInt64(seconds) * 1000 + UInt64((attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000)
        return millis
    }
}
