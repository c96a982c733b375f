import CLibUV
#if canImport(Glibc)
import Glibc
#endif

/// A TCP connection on one event loop, optionally with TLS, bridged to Swift concurrency.
///
/// Two ways to use it:
/// - From any task: ``write(_:)-(SharedBytes)``, ``startTLS(context:serverName:)``, ``close()``
///   suspend until the loop says the work is done.
/// - From its ``ConnectionHandler``, on the loop: ``enqueueWrite(_:completion:)-1mksg``,
///   ``pauseReading()``, ``resumeReading()``, ``close(error:)`` act at once, without a hop;
///   ``bufferWrite(_:)-(UnsafeRawBufferPointer)`` gathers what one loop iteration writes and
///   writes it once, at the iteration's end (or at ``flush()``).
///
/// Memory: the libuv handle is heap-allocated; its `data` holds this object retained, and both
/// are released only in the close callback. A write owns its buffers until its write callback.
public final class Connection: @unchecked Sendable, LoopResource, EndOfIterationWork {
    // Thread-safety: `eventLoop`, `options`, `handle` (the pointer) are immutable. `addresses`
    // is guarded by its lock. Every other field is touched on `eventLoop`'s thread only.

    /// The loop this connection runs on.
    public let eventLoop: EventLoop
    /// The connection's tuning.
    public let options: ConnectionOptions

    private struct Addresses {
        var local: SocketAddress?
        var remote: SocketAddress?
    }
    private let addresses: Locked<Addresses>

    let handle: UnsafeMutablePointer<uv_tcp_t>
    /// Where the read libuv is making goes: the loop's shared buffer (while
    /// `borrowsLoopBuffer`), or this connection's own when another held the loop's.
    private var readBuffer = UnsafeMutableRawBufferPointer(start: nil, count: 0)
    private var borrowsLoopBuffer = false
    /// Allocated only when the loop's buffer was lent to someone else (a handler that made
    /// this connection read while it handled another's bytes); kept for the connection's life.
    private var ownReadBuffer: UnsafeMutableRawBufferPointer?

    enum State {
        case connecting
        case open
        /// A graceful close is flushing writes (uv_shutdown); uv_close has not been called.
        case shuttingDown
        /// uv_close was called; the close callback has not run yet.
        case closing
        case closed
    }
    private(set) var state: State = .connecting

    private enum TLSState {
        case none
        case handshaking(TLSSession, (Result<Void, TransportError>) -> Void)
        case established(TLSSession)
    }
    private var tls: TLSState = .none
    private var writesAwaitingHandshake: [([SharedBytes], ((TransportError?) -> Void)?)] = []

    private var handler: (any ConnectionHandler)?
    private var pausedByHandler = false
    private var pausedByBacklog = false
    private var isReading = false
    private var isWritableState = true
    private var closeError: TransportError?
    private var closeWaiters: [() -> Void] = []
    private var connectCompletion: ((Int32) -> Void)?
    private var gracefulCloseTimer: LoopTimer?

    /// Bytes handed to libuv and not yet written. Loop thread only.
    public private(set) var pendingWriteBytes = 0

    /// What `bufferWrite` gathered this loop iteration, flushed as one vectored write at the
    /// end of the iteration: shared chunks, and between them runs of `batchedBytes` (commands
    /// and replies are small, so they are copied in; the run before a chunk is written from
    /// there, not copied again). Loop thread only; every access is from a call that returns
    /// before the next, so the exclusivity checks are skipped.
    @exclusivity(unchecked) private var batchedPieces: [WritePiece] = []
    @exclusivity(unchecked) private var batchedBytes: [UInt8] = []
    /// How much of `batchedBytes` a piece already covers.
    @exclusivity(unchecked) private var batchedBytesInPieces = 0
    @exclusivity(unchecked) private var flushScheduled = false

    /// Creates the connection's handle on `loop`. Loop thread only.
    init(on loop: EventLoop, options: ConnectionOptions, remote: SocketAddress?) {
        loop.assertInEventLoop()
        precondition(options.writeLowWatermark <= options.writeHighWatermark, "low watermark above high watermark")
        eventLoop = loop
        self.options = options
        addresses = Locked(Addresses(local: nil, remote: remote))
        handle = .allocate(capacity: 1)
        uv_tcp_init(loop.uvLoop, handle)
        loop.handleOpened()
        // Retained for the handle's life; released once, in connectionHandleClosed.
        handle.pointee.data = Unmanaged.passRetained(self).toOpaque()
        loop.register(self)
    }

    var stream: UnsafeMutablePointer<uv_stream_t> { UnsafeMutablePointer(OpaquePointer(handle)) }
    private var rawHandle: UnsafeMutablePointer<uv_handle_t> { UnsafeMutablePointer(OpaquePointer(handle)) }

    /// The address of the peer.
    public var remoteAddress: SocketAddress? { addresses.withLock { $0.remote } }
    /// This side's address.
    public var localAddress: SocketAddress? { addresses.withLock { $0.local } }

    /// Whether the connection is open (not closing or closed). Loop thread only.
    public var isOpen: Bool {
        eventLoop.assertInEventLoop()
        return state == .open
    }

    /// Whether the bytes waiting to be written are within the watermarks. Loop thread only.
    public var isWritable: Bool {
        eventLoop.assertInEventLoop()
        return isWritableState
    }

    /// Whether TLS is established on this connection. Loop thread only.
    public var isSecure: Bool {
        eventLoop.assertInEventLoop()
        if case .established = tls { return true }
        return false
    }

    // MARK: Establishing

    /// Starts connecting to `address`; `completion` gets libuv's status. Loop thread only.
    func startConnect(to address: SocketAddress, completion: @escaping (Int32) -> Void) {
        eventLoop.assertInEventLoop()
        let request = UnsafeMutablePointer<uv_connect_t>.allocate(capacity: 1)
        // Retained while libuv holds the request; released once, in connectFinished.
        request.pointee.data = Unmanaged.passRetained(self).toOpaque()
        connectCompletion = completion
        let status = address.withSockaddr { uv_tcp_connect(request, handle, $0, connectFinished) }
        if status != 0 {
            Unmanaged<Connection>.fromOpaque(request.pointee.data).release()
            request.deallocate()
            connectCompletion = nil
            completion(status)
        }
    }

    fileprivate func connected(status: Int32) {
        if status == 0, state == .connecting {
            becameOpen()
        }
        let completion = connectCompletion
        connectCompletion = nil
        completion?(status)
    }

    /// Takes an accepted socket into this handle; on failure the descriptor is closed.
    /// Loop thread only.
    func adopt(descriptor: Int32) -> Int32 {
        let status = uv_tcp_open(handle, uv_os_sock_t(descriptor))
        if status == 0 {
            becameOpen()
        } else {
            Glibc.close(descriptor)
        }
        return status
    }

    private func becameOpen() {
        state = .open
        uv_tcp_nodelay(handle, 1)
        let local = SocketAddress.read { uv_tcp_getsockname(handle, $0, $1) }
        let remote = SocketAddress.read { uv_tcp_getpeername(handle, $0, $1) }
        addresses.withLock {
            $0.local = local
            $0.remote = remote ?? $0.remote
        }
        updateReading()
    }

    /// Gives the connection its handler and delivers anything TLS already decrypted.
    /// Loop thread only.
    func install(_ handler: any ConnectionHandler) {
        eventLoop.assertInEventLoop()
        guard state == .open || state == .shuttingDown else {
            // Closed before the handler existed: tell it, so it can release what it holds.
            handler.connectionDidClose(self, error: closeError)
            return
        }
        self.handler = handler
        deliverDecryptedBytes()
    }

    // MARK: Reading

    /// Stops delivering bytes to the handler until ``resumeReading()``. Loop thread only.
    public func pauseReading() {
        eventLoop.assertInEventLoop()
        pausedByHandler = true
        updateReading()
    }

    /// Resumes delivering bytes, starting with any TLS already decrypted. Loop thread only.
    public func resumeReading() {
        eventLoop.assertInEventLoop()
        guard pausedByHandler else { return }
        pausedByHandler = false
        updateReading()
        deliverDecryptedBytes()
    }

    private func updateReading() {
        let handshaking: Bool
        if case .handshaking = tls { handshaking = true } else { handshaking = false }
        let wanted = (state == .open || state == .shuttingDown) && !pausedByBacklog && (handshaking || !pausedByHandler)
        if wanted, !isReading {
            let status = uv_read_start(stream, connectionAllocate, connectionRead)
            if status == 0 {
                isReading = true
            } else {
                closeNow(.uv(status, "starting to read"))
            }
        } else if !wanted, isReading {
            uv_read_stop(stream)
            isReading = false
        }
    }

    /// libuv asks where its next read goes; ``read(count:)`` always follows.
    fileprivate func allocate() -> uv_buf_t {
        let (buffer, borrowed) = takeReadBuffer()
        readBuffer = buffer
        borrowsLoopBuffer = borrowed
        return cuv_buf(buffer.baseAddress, buffer.count)
    }

    /// A buffer for reading into: the loop's shared one when it is free (`borrowed`; give it
    /// back with `eventLoop.returnReadBuffer()`), else this connection's own.
    private func takeReadBuffer() -> (buffer: UnsafeMutableRawBufferPointer, borrowed: Bool) {
        let size = max(options.readBufferSize, 1024)
        if let shared = eventLoop.borrowReadBuffer(size: size) { return (shared, true) }
        if ownReadBuffer == nil { ownReadBuffer = .allocate(byteCount: size, alignment: 16) }
        return (ownReadBuffer!, false)
    }

    /// Gives the loop its buffer back once the bytes libuv read into it are handed on.
    private func releaseReadBuffer() {
        guard borrowsLoopBuffer else { return }
        borrowsLoopBuffer = false
        eventLoop.returnReadBuffer()
    }

    fileprivate func read(count: Int) {
        defer { releaseReadBuffer() }
        if count > 0 {
            received(UnsafeRawBufferPointer(rebasing: readBuffer[0..<count]))
        } else if count < 0 {
            if count == Int(UV_EOF.rawValue) {
                closeNow(nil)
            } else {
                closeNow(.uv(Int32(count), "reading from \(remoteDescription)"))
            }
        }
    }

    private func received(_ bytes: UnsafeRawBufferPointer) {
        switch tls {
        case .none:
            handler?.connection(self, didReceive: bytes)
        case .handshaking(let session, _):
            session.receive(bytes)
            releaseReadBuffer()  // TLS has the ciphertext: the buffer is free for what it decrypts
            continueHandshake()
        case .established(let session):
            session.receive(bytes)
            releaseReadBuffer()
            deliverDecryptedBytes()
        }
    }

    /// Hands the handler every plaintext byte TLS can decrypt now, while it keeps reading.
    private func deliverDecryptedBytes() {
        guard case .established(let session) = tls else { return }
        let (buffer, borrowed) = takeReadBuffer()
        defer { if borrowed { eventLoop.returnReadBuffer() } }
        while handler != nil, !pausedByHandler, state == .open || state == .shuttingDown {
            do {
                switch try session.read(into: buffer) {
                case .bytes(let count):
                    handler?.connection(self, didReceive: UnsafeRawBufferPointer(rebasing: buffer[0..<count]))
                case .needsMoreData:
                    flushCiphertext(session)
                    return
                case .closed:
                    closeNow(nil)
                    return
                }
            } catch {
                closeNow(.tls(error, "reading from \(remoteDescription)"))
                return
            }
        }
    }

    // MARK: TLS

    /// What the TLS handshake settled, once it has; nil before, or without TLS. Loop thread only.
    public var tlsDetails: TLSDetails? {
        guard case .established(let session) = tls else { return nil }
        return session.details
    }

    /// Starts TLS on this open connection (STARTTLS, or implicit TLS right after connecting):
    /// every byte read from now on is ciphertext. Writes enqueued before the handshake ends
    /// wait for it. `completion` runs once. Loop thread only.
    public func startTLS(
        context: TLSContext, serverName: String?, completion: @escaping (Result<Void, TransportError>) -> Void
    ) {
        eventLoop.assertInEventLoop()
        flush()  // what was written before STARTTLS goes in the clear, before the handshake
        guard state == .open else {
            completion(.failure(closedError("starting TLS")))
            return
        }
        guard case .none = tls else {
            preconditionFailure("startTLS called on a connection that already has TLS")
        }
        let session: TLSSession
        do {
            session = try TLSSession(context: context, serverName: serverName)
        } catch {
            let failure = TransportError.tls(error, "starting TLS with \(remoteDescription)")
            completion(.failure(failure))
            closeNow(failure)
            return
        }
        tls = .handshaking(session, completion)
        updateReading()
        continueHandshake()
    }

    private func continueHandshake() {
        guard case .handshaking(let session, let completion) = tls else { return }
        do {
            let complete = try session.handshake()
            flushCiphertext(session)
            guard complete else { return }
            tls = .established(session)
            updateReading()
            let waiting = writesAwaitingHandshake
            writesAwaitingHandshake = []
            for (chunks, writeCompletion) in waiting { enqueueWrite(chunks, completion: writeCompletion) }
            completion(.success(()))
            deliverDecryptedBytes()
        } catch {
            flushCiphertext(session)  // the alert that tells the peer why
            let failure = TransportError.tls(error, "TLS handshake with \(remoteDescription)")
            tls = .none
            completion(.failure(failure))
            closeNow(failure)
        }
    }

    private func flushCiphertext(_ session: TLSSession, completion: ((TransportError?) -> Void)? = nil) {
        if let ciphertext = session.takeCiphertext() {
            writeToSocket([.shared(ciphertext)], batched: [], completion: completion)
        } else {
            completion?(nil)
        }
    }

    // MARK: Writing

    /// Adds `bytes` to what this loop iteration writes. Everything written in one iteration
    /// goes out in one vectored write once the loop has handled every event ready in it (or
    /// at ``flush()``, ``startTLS(context:serverName:completion:)`` or a graceful
    /// ``close(error:)``, which flush first). Writing each reply or command at once woke a
    /// peer that had gone to sleep between messages, one wake-up per message paid by the
    /// writer; written back to back, they find it awake, and a message's content and the next
    /// envelope share a segment (a server without TCP_NODELAY would otherwise hold its second
    /// reply for the delayed ACK). Measured when the client first batched its writes: against
    /// Postfix's smtp-sink, 0.68 wake-ups a message became 0.05, and the client's CPU a message
    /// on one loop fell from 42 to 36 µs (medians of 12 runs). Loop thread only.
    public func bufferWrite(_ bytes: UnsafeRawBufferPointer) {
        batchedBytes.append(contentsOf: bytes)
        scheduleFlush()
    }

    /// Adds `bytes` to what this loop iteration writes (see ``bufferWrite(_:)-(UnsafeRawBufferPointer)``).
    public func bufferWrite(_ bytes: [UInt8]) {
        batchedBytes += bytes  // into storage kept from the last flush
        scheduleFlush()
    }

    /// Adds shared `chunks` to what this loop iteration writes, without copying them (see
    /// ``bufferWrite(_:)-(UnsafeRawBufferPointer)``).
    public func bufferWrite(contentsOf chunks: [SharedBytes]) {
        closeBatchedRun()
        for chunk in chunks { batchedPieces.append(.shared(chunk)) }
        scheduleFlush()
    }

    /// Makes the bytes batched since the last piece a piece of their own.
    private func closeBatchedRun() {
        guard batchedBytes.count > batchedBytesInPieces else { return }
        batchedPieces.append(.batched(upTo: batchedBytes.count))
        batchedBytesInPieces = batchedBytes.count
    }

    /// Hands what ``bufferWrite(_:)-(UnsafeRawBufferPointer)`` gathered to the socket now. Loop
    /// thread only.
    public func flush() {
        closeBatchedRun()
        guard !batchedPieces.isEmpty else { return }
        // Taken out and put back emptied, so the batch's storage serves the next iteration
        // (the write copies what the socket does not take at once).
        var pieces: [WritePiece] = []
        var bytes: [UInt8] = []
        swap(&pieces, &batchedPieces)
        swap(&bytes, &batchedBytes)
        batchedBytesInPieces = 0
        write(pieces, batched: bytes, completion: nil)
        if batchedPieces.isEmpty, batchedBytes.isEmpty {
            pieces.removeAll(keepingCapacity: true)
            bytes.removeAll(keepingCapacity: true)
            swap(&pieces, &batchedPieces)
            swap(&bytes, &batchedBytes)
        }
    }

    private func scheduleFlush() {
        guard !flushScheduled else { return }
        flushScheduled = true
        eventLoop.deferToEndOfIteration(self)
    }

    /// The flush ``bufferWrite(_:)-(UnsafeRawBufferPointer)`` deferred (the loop calls it).
    package func endOfIteration() {
        flushScheduled = false
        flush()
    }

    /// Queues `chunks` to be written in order, as one vectored write (encrypted first, if TLS
    /// is on). `completion` runs once the bytes are written, or with the error that stopped
    /// them. Loop thread only.
    public func enqueueWrite(_ chunks: [SharedBytes], completion: ((TransportError?) -> Void)? = nil) {
        enqueueWrite(chunks, then: [], completion: completion)
    }

    /// Writes `bytes`, at once if the socket takes them (no copy, no request), otherwise
    /// queues what is left (copied once). Loop thread only.
    public func enqueueWrite(_ bytes: [UInt8], completion: ((TransportError?) -> Void)? = nil) {
        enqueueWrite([], then: bytes, completion: completion)
    }

    /// Queues `chunks`, then `tail`, to be written in order as one vectored write (encrypted
    /// first, if TLS is on). `tail` is copied only if the socket does not take it at once: a
    /// message's shared content and the commands that follow it go out without a copy of
    /// either. `completion` runs once the bytes are written, or with the error that stopped
    /// them. Loop thread only.
    public func enqueueWrite(_ chunks: [SharedBytes], then tail: [UInt8],
                             completion: ((TransportError?) -> Void)? = nil) {
        eventLoop.assertInEventLoop()
        flush()  // what bufferWrite gathered goes first
        var pieces = chunks.map(WritePiece.shared)
        if !tail.isEmpty { pieces.append(.batched(upTo: tail.count)) }
        write(pieces, batched: tail, completion: completion)
    }

    /// Writes `pieces` in order, the `.batched` ones from `batched`.
    private func write(_ pieces: [WritePiece], batched: [UInt8], completion: ((TransportError?) -> Void)?) {
        guard state == .open else {
            completion?(closedError("writing"))
            return
        }
        switch tls {
        case .none:
            writeToSocket(pieces, batched: batched, completion: completion)
        case .handshaking:
            writesAwaitingHandshake.append((WritePiece.sharedChunks(pieces, batched: batched), completion))
        case .established(let session):
            do {
                try batched.withUnsafeBytes { batched in
                    Result { () throws(TLSError) in
                        try session.write(pieces, batched: batched, staging: eventLoop.sealingBuffer())
                    }
                }.get()
            } catch {
                let failure = TransportError.tls(error, "writing to \(remoteDescription)")
                completion?(failure)
                closeNow(failure)
                return
            }
            flushCiphertext(session, completion: completion)
        }
    }

    private func writeToSocket(_ pieces: [WritePiece], batched: [UInt8], completion: ((TransportError?) -> Void)?) {
        var total = WritePiece.byteCount(pieces)
        guard total > 0 else {
            completion?(nil)
            return
        }
        var written = 0
        if state == .open, pendingWriteBytes == 0 {
            // Nothing is queued, so the bytes may go straight to the socket, in one writev
            // and without a request; only what the socket does not take is queued.
            let status = batched.withUnsafeBytes { batched in
                withUnsafeTemporaryAllocation(of: uv_buf_t.self, capacity: pieces.count) { buffers in
                    var count = 0
                    WritePiece.forEach(pieces, batched: batched) { bytes in
                        buffers[count] = cuv_buf(UnsafeMutableRawPointer(mutating: bytes.baseAddress), bytes.count)
                        count += 1
                    }
                    return uv_try_write(stream, buffers.baseAddress, UInt32(count))
                }
            }
            if status == Int32(total) {
                completion?(nil)
                return
            }
            if status < 0, status != Int32(UV_EAGAIN.rawValue) {
                let failure = TransportError.uv(status, "writing to \(remoteDescription)")
                completion?(failure)
                closeNow(failure)
                return
            }
            written = max(0, Int(status))
        }
        // The rest waits for the socket, so the batched bytes are copied after all.
        var chunks = WritePiece.sharedChunks(pieces, batched: batched)
        if written > 0 {
            chunks = Self.dropping(written, from: chunks)
            total -= written
        }
        let write = WriteRequest(connection: self, chunks: chunks, byteCount: total, completion: completion)
        let status = uv_write(write.request, stream, write.buffers, UInt32(chunks.count), connectionWritten)
        guard status == 0 else {
            write.abandon()
            let failure = TransportError.uv(status, "writing to \(remoteDescription)")
            completion?(failure)
            closeNow(failure)
            return
        }
        pendingWriteBytes += total
        updateWritability()
    }

    /// `chunks` without their first `count` bytes (the chunk they end in is copied from there).
    private static func dropping(_ count: Int, from chunks: [SharedBytes]) -> [SharedBytes] {
        var remaining = count
        var index = 0
        while remaining >= chunks[index].count {
            remaining -= chunks[index].count
            index += 1
        }
        var rest = Array(chunks[index...])
        if remaining > 0 {
            rest[0] = SharedBytes(copying: UnsafeRawBufferPointer(rebasing: rest[0].bytes[remaining...]))
        }
        return rest
    }

    fileprivate func written(_ write: WriteRequest, status: Int32) {
        pendingWriteBytes -= write.byteCount
        if status == 0 {
            write.completion?(nil)
        } else {
            let failure: TransportError =
                status == Int32(UV_ECANCELED.rawValue)
                ? closedError("writing") : .uv(status, "writing to \(remoteDescription)")
            write.completion?(failure)
            if status != Int32(UV_ECANCELED.rawValue) { closeNow(failure) }
        }
        updateWritability()
    }

    private func updateWritability() {
        if isWritableState, pendingWriteBytes > options.writeHighWatermark {
            isWritableState = false
        } else if !isWritableState, pendingWriteBytes <= options.writeLowWatermark {
            isWritableState = true
        } else {
            return
        }
        if options.pausesReadingWhenNotWritable {
            pausedByBacklog = !isWritableState
            updateReading()
        }
        if state == .open { handler?.connection(self, writabilityChanged: isWritableState) }
        if isWritableState { deliverDecryptedBytes() }
    }

    // MARK: Closing

    /// Closes the connection. Without an error it is graceful: queued writes are flushed
    /// (for at most ``ConnectionOptions/gracefulCloseTimeout``), TLS sends close_notify, and
    /// the write side is shut down before the handle closes. With an error it closes at once
    /// and queued writes fail. The handler hears ``ConnectionHandler/connectionDidClose(_:error:)``
    /// once. Loop thread only.
    public func close(error: TransportError? = nil) {
        eventLoop.assertInEventLoop()
        if let error {
            closeNow(error)
            return
        }
        switch state {
        case .open:
            break
        case .connecting:
            closeNow(nil)
            return
        case .shuttingDown, .closing, .closed:
            return  // already on its way
        }
        flush()
        // A write that fails closes the connection at once (uv_close): the peer may have reset
        // it. Going on to shut down would then overwrite `.closing`, and the failed uv_shutdown
        // would close the handle a second time, which libuv aborts on.
        guard state == .open else { return }
        state = .shuttingDown
        if case .established(let session) = tls {
            session.shutdown()
            flushCiphertext(session)
            guard state == .shuttingDown else { return }  // as above, for the close_notify
        }
        let request = UnsafeMutablePointer<uv_shutdown_t>.allocate(capacity: 1)
        // Retained while libuv holds the request; released once, in connectionShutDown.
        request.pointee.data = Unmanaged.passRetained(self).toOpaque()
        if uv_shutdown(request, stream, connectionShutDown) != 0 {
            Unmanaged<Connection>.fromOpaque(request.pointee.data).release()
            request.deallocate()
            closeNow(nil)
            return
        }
        gracefulCloseTimer = eventLoop.scheduleTimer(after: options.gracefulCloseTimeout) { [self] in
            closeNow(TransportError(.connectionClosed, "graceful close of \(remoteDescription) timed out"))
        }
    }

    /// Closes at once. The first error given is the one reported.
    func closeNow(_ error: TransportError?) {
        switch state {
        case .closing, .closed:
            return
        case .connecting, .open, .shuttingDown:
            break
        }
        if closeError == nil { closeError = error }
        state = .closing
        gracefulCloseTimer?.cancel()
        gracefulCloseTimer = nil
        if isReading {
            uv_read_stop(stream)
            isReading = false
        }
        uv_close(rawHandle, connectionHandleClosed)
    }

    func close(dueTo error: TransportError) { closeNow(error) }

    /// The close callback: the end of the handle's life.
    fileprivate func handleClosed() {
        state = .closed
        eventLoop.deregister(self)
        eventLoop.handleClosed()
        ownReadBuffer?.deallocate()
        ownReadBuffer = nil
        readBuffer = UnsafeMutableRawBufferPointer(start: nil, count: 0)
        let failure = closeError ?? closedError("the handshake")
        if case .handshaking(_, let completion) = tls { completion(.failure(failure)) }
        tls = .none
        let waiting = writesAwaitingHandshake
        writesAwaitingHandshake = []
        for (_, completion) in waiting { completion?(closedError("writing")) }
        let handler = self.handler
        self.handler = nil
        handler?.connectionDidClose(self, error: closeError)
        let waiters = closeWaiters
        closeWaiters = []
        for waiter in waiters { waiter() }
    }

    /// Runs `body` once the connection has closed (at once if it already has). Loop thread only.
    func whenClosed(_ body: @escaping () -> Void) {
        eventLoop.assertInEventLoop()
        if state == .closed { body() } else { closeWaiters.append(body) }
    }

    /// Why the connection was closed, if it was closed with an error. Loop thread only.
    var closeReason: TransportError? {
        eventLoop.assertInEventLoop()
        return closeError
    }

    /// The error for an operation asked of a closed connection.
    private func closedError(_ operation: String) -> TransportError {
        if let closeError { return closeError }
        return TransportError(.connectionClosed, "\(operation): the connection to \(remoteDescription) is closed")
    }

    var remoteDescription: String { remoteAddress?.description ?? "peer" }
}

// MARK: - libuv callbacks (non-capturing; they recover the connection from `data`)

private func connectionAllocate(
    _ handle: UnsafeMutablePointer<uv_handle_t>?, _ suggested: Int, _ buffer: UnsafeMutablePointer<uv_buf_t>?
) {
    // Safe: `data` is the connection retained until the close callback; reads stop before it.
    let connection = Unmanaged<Connection>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
    buffer!.pointee = connection.allocate()
}

private func connectionRead(
    _ stream: UnsafeMutablePointer<uv_stream_t>?, _ count: Int, _ buffer: UnsafePointer<uv_buf_t>?
) {
    // Safe: as above; the bytes are in the buffer `allocate` gave libuv for this read.
    let connection = Unmanaged<Connection>.fromOpaque(stream!.pointee.data).takeUnretainedValue()
    connection.read(count: count)
}

private func connectFinished(_ request: UnsafeMutablePointer<uv_connect_t>?, _ status: Int32) {
    // Safe: the request's data is the connection retained in startConnect; released once here.
    let connection = Unmanaged<Connection>.fromOpaque(request!.pointee.data).takeRetainedValue()
    request!.deallocate()
    connection.connected(status: status)
}

private func connectionWritten(_ request: UnsafeMutablePointer<uv_write_t>?, _ status: Int32) {
    // Safe: the request's data is the WriteRequest retained at creation; released once here.
    let write = Unmanaged<WriteRequest>.fromOpaque(request!.pointee.data).takeRetainedValue()
    write.connection.written(write, status: status)
}

private func connectionShutDown(_ request: UnsafeMutablePointer<uv_shutdown_t>?, _ status: Int32) {
    // Safe: the request's data is the connection retained in close(); released once here.
    let connection = Unmanaged<Connection>.fromOpaque(request!.pointee.data).takeRetainedValue()
    request!.deallocate()
    connection.closeNow(nil)
}

private func connectionHandleClosed(_ handle: UnsafeMutablePointer<uv_handle_t>?) {
    // Safe: the close callback ends the handle's life; take back the retain from init once.
    let connection = Unmanaged<Connection>.fromOpaque(handle!.pointee.data).takeRetainedValue()
    connection.handleClosed()
    handle!.withMemoryRebound(to: uv_tcp_t.self, capacity: 1) { $0.deallocate() }
}

/// One `uv_write`: owns its request, its buffer array, and the chunks they point into, until
/// libuv's write callback.
/// One part of a vectored write: a shared chunk, or the batched bytes from where the last
/// `.batched` piece ended up to an offset.
enum WritePiece {
    case shared(SharedBytes)
    case batched(upTo: Int)

    /// Calls `body` with each piece's bytes, in order, skipping empty ones.
    static func forEach<Failure>(_ pieces: [WritePiece], batched: UnsafeRawBufferPointer,
                                 _ body: (UnsafeRawBufferPointer) throws(Failure) -> Void) throws(Failure) {
        var start = 0
        for piece in pieces {
            switch piece {
            case .shared(let chunk):
                if chunk.count > 0 { try body(chunk.bytes) }
            case .batched(let end):
                if end > start { try body(UnsafeRawBufferPointer(rebasing: batched[start..<end])) }
                start = end
            }
        }
    }

    /// The octets `pieces` hold.
    static func byteCount(_ pieces: [WritePiece]) -> Int {
        var total = 0
        var start = 0
        for piece in pieces {
            switch piece {
            case .shared(let chunk): total += chunk.count
            case .batched(let end):
                total += end - start
                start = end
            }
        }
        return total
    }

    /// `pieces` as shared chunks, the batched runs copied: for writes that must wait.
    static func sharedChunks(_ pieces: [WritePiece], batched: [UInt8]) -> [SharedBytes] {
        var chunks: [SharedBytes] = []
        chunks.reserveCapacity(pieces.count)
        batched.withUnsafeBytes { batched in
            var start = 0
            for piece in pieces {
                switch piece {
                case .shared(let chunk): chunks.append(chunk)
                case .batched(let end):
                    if end > start { chunks.append(SharedBytes(copying: UnsafeRawBufferPointer(rebasing: batched[start..<end]))) }
                    start = end
                }
            }
        }
        return chunks
    }
}

final class WriteRequest {
    let connection: Connection
    let request: UnsafeMutablePointer<uv_write_t>
    let buffers: UnsafeMutablePointer<uv_buf_t>
    let byteCount: Int
    let completion: ((TransportError?) -> Void)?
    /// Keeps the bytes alive while libuv points into them.
    private let chunks: [SharedBytes]

    init(connection: Connection, chunks: [SharedBytes], byteCount: Int, completion: ((TransportError?) -> Void)?) {
        self.connection = connection
        self.chunks = chunks
        self.byteCount = byteCount
        self.completion = completion
        request = .allocate(capacity: 1)
        buffers = .allocate(capacity: chunks.count)
        for (index, chunk) in chunks.enumerated() {
            buffers[index] = cuv_buf(UnsafeMutableRawPointer(mutating: chunk.bytes.baseAddress), chunk.count)
        }
        // Retained while libuv holds the request; released once, in connectionWritten (or abandon).
        request.pointee.data = Unmanaged.passRetained(self).toOpaque()
    }

    /// Undoes the retain when uv_write refused the request.
    func abandon() {
        Unmanaged<WriteRequest>.fromOpaque(request.pointee.data).release()
    }

    deinit {
        request.deallocate()
        buffers.deallocate()
    }
}
