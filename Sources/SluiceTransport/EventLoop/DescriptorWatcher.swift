import CLibUV

/// Watches a file descriptor that someone else owns (a database client library's socket) for
/// readiness on an event loop, through `uv_poll`. Its handler runs on the loop's thread with
/// what became ready; the descriptor is never read, written or closed here.
///
/// Everything but ``init(loop:descriptor:handler:)`` is for the loop's thread only.
package final class DescriptorWatcher: @unchecked Sendable, LoopResource {
    /// What to wait for, or what became ready.
    package struct Events: OptionSet, Sendable {
        package let rawValue: Int32
        package init(rawValue: Int32) { self.rawValue = rawValue }
        /// Readable (or closed by the peer).
        package static let readable = Events(rawValue: Int32(UV_READABLE.rawValue))
        /// Writable.
        package static let writable = Events(rawValue: Int32(UV_WRITABLE.rawValue))
    }

    // `handle`, `handler` and `watching` are touched on `loop`'s thread only.
    /// The loop it runs on.
    package let loop: EventLoop
    private var handle: UnsafeMutablePointer<uv_poll_t>?
    private var handler: ((Events, Int32) -> Void)?
    private var watching: Events = []

    /// Starts watching `descriptor` on `loop` (loop thread only); `handler` gets the events
    /// that became ready and a status (0, or a negative libuv error).
    /// - Throws: ``TransportError`` when libuv refuses the descriptor.
    package init(loop: EventLoop, descriptor: Int32, handler: @escaping (Events, Int32) -> Void) throws(TransportError) {
        loop.assertInEventLoop()
        self.loop = loop
        self.handler = handler
        let handle = UnsafeMutablePointer<uv_poll_t>.allocate(capacity: 1)
        let status = uv_poll_init(loop.uvLoop, handle, descriptor)
        guard status == 0 else {
            handle.deallocate()
            throw TransportError.uv(status, "watching a descriptor")
        }
        loop.handleOpened()
        // Retained for the handle's life; released once, in watcherClosed.
        handle.pointee.data = Unmanaged.passRetained(self).toOpaque()
        self.handle = handle
        loop.register(self)
    }

    /// Waits for `events` from now on (none stops waiting, keeping the handle).
    package func watch(_ events: Events) {
        loop.assertInEventLoop()
        guard let handle, events != watching else { return }
        watching = events
        if events.isEmpty {
            uv_poll_stop(handle)
        } else {
            uv_poll_start(handle, events.rawValue, descriptorReady)
        }
    }

    /// Stops watching for good and lets go of the handler. Call it before the owner closes
    /// the descriptor.
    package func close() {
        loop.assertInEventLoop()
        handler = nil
        guard let handle else { return }
        self.handle = nil
        uv_poll_stop(handle)
        uv_close(UnsafeMutableRawPointer(handle).assumingMemoryBound(to: uv_handle_t.self), watcherClosed)
    }

    func close(dueTo error: TransportError) {
        let handler = self.handler
        close()
        handler?([.readable], -1)
    }

    fileprivate func ready(_ status: Int32, _ events: Int32) {
        handler?(Events(rawValue: events), status)
    }

    fileprivate func closed() {
        loop.deregister(self)
        loop.handleClosed()
    }
}

private func descriptorReady(_ handle: UnsafeMutablePointer<uv_poll_t>?, _ status: Int32, _ events: Int32) {
    // Safe: `data` holds the watcher retained in init; it is released only in watcherClosed.
    Unmanaged<DescriptorWatcher>.fromOpaque(handle!.pointee.data).takeUnretainedValue().ready(status, events)
}

private func watcherClosed(_ raw: UnsafeMutablePointer<uv_handle_t>?) {
    // Safe: this is the end of the handle's life; take back the retain from init once.
    let watcher = Unmanaged<DescriptorWatcher>.fromOpaque(raw!.pointee.data).takeRetainedValue()
    watcher.closed()
    raw!.withMemoryRebound(to: uv_poll_t.self, capacity: 1) { $0.deallocate() }
}
