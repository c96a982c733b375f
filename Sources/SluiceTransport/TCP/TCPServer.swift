import CLibUV
public import Logging
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A TCP listener on every loop of an ``EventLoopGroup``, optionally speaking TLS from the
/// first byte (implicit TLS).
///
/// Each loop has its own listening socket on the same port (`SO_REUSEPORT`), so the kernel
/// spreads new connections across loops and no connection ever changes threads. Listening on
/// port 0 picks a free port; ``localAddress`` says which.
public final class TCPServer: Sendable {
    /// The address the server listens on, with the port actually bound.
    public let localAddress: SocketAddress
    private let listeners: [Listener]
    private let pauses: PauseCounter

    /// How many times a listener stopped accepting for a while because the process had no
    /// file descriptor left (EMFILE or ENFILE). Clients wait in the backlog meanwhile.
    public var acceptPauses: Int { pauses.count.load(ordering: .relaxed) }

    private init(localAddress: SocketAddress, listeners: [Listener], pauses: PauseCounter) {
        self.localAddress = localAddress
        self.listeners = listeners
        self.pauses = pauses
    }

    /// Starts listening on `host:port` (an IP literal or a name such as `localhost`).
    ///
    /// - Parameters:
    ///   - tls: A server ``TLSContext`` for implicit TLS; the handler is made once the
    ///     handshake is done, and a client that does not finish it within
    ///     `tlsHandshakeTimeout` is dropped.
    ///   - options: Options for each accepted connection. Servers usually want
    ///     ``ConnectionOptions/pausesReadingWhenNotWritable``.
    ///   - handler: Makes each accepted connection's handler, on that connection's loop.
    public static func listen(
        host: String,
        port: Int,
        group: EventLoopGroup,
        tls: TLSContext? = nil,
        options: ConnectionOptions = ConnectionOptions(),
        backlog: Int = 1024,
        tlsHandshakeTimeout: Duration = .seconds(10),
        logger: Logger = Logger(label: "sluice.transport"),
        handler: @escaping @Sendable (Connection) -> any ConnectionHandler
    ) async throws -> TCPServer {
        if let tls, tls.configuration.role != .server {
            throw TransportError(.invalidArgument, "a TCPServer needs a server TLS context")
        }
        guard let requested = try await group.loops[0].resolve(host: host, port: port).first else {
            throw TransportError(.hostNotFound, "\(host) has no address to listen on")
        }
        let shared = group.loops.count > 1
        var bound = requested
        var listeners: [Listener] = []
        let pauses = PauseCounter()
        do {
            for loop in group.loops {
                let descriptor = bound.withSockaddr { cuv_bound_socket($0, shared ? 1 : 0) }
                guard descriptor >= 0 else {
                    throw TransportError.uv(uv_translate_sys_error(-descriptor), "binding \(bound)")
                }
                if bound.port == 0 {
                    bound = SocketAddress.read { getsockname(descriptor, $0, $1) } ?? bound
                }
                let setup = ListenerSetup(
                    descriptor: descriptor, backlog: Int32(clamping: backlog), tls: tls, options: options,
                    handshakeTimeout: tlsHandshakeTimeout, logger: logger, makeHandler: handler)
                let listener = try await loop.perform("listen on \(bound)") { (operation: LoopOperation<Listener>) in
                    do {
                        operation.succeed(try Listener(on: loop, setup: setup, pauses: pauses))
                    } catch {
                        operation.fail(error)
                    }
                }
                listeners.append(listener)
            }
        } catch {
            for listener in listeners { await listener.close() }
            throw error
        }
        return TCPServer(localAddress: bound, listeners: listeners, pauses: pauses)
    }

    /// Stops accepting. Connections already accepted stay open; their handlers close them.
    public func close() async {
        for listener in listeners { await listener.close() }
    }
}

/// The accept pauses of a server's listeners, counted together.
private final class PauseCounter: Sendable {
    let count = Atomic<Int>(0)
}

/// What each per-loop listener needs.
private struct ListenerSetup: Sendable {
    let descriptor: Int32
    let backlog: Int32
    let tls: TLSContext?
    let options: ConnectionOptions
    let handshakeTimeout: Duration
    let logger: Logger
    let makeHandler: @Sendable (Connection) -> any ConnectionHandler
}

/// One listening socket on one loop. Its handle is touched on that loop's thread only.
///
/// When the process has no file descriptor left (EMFILE/ENFILE), libuv's accept loop hands
/// every failed accept to the callback and tries again at once, for ever: a core burned and a
/// log flooded. So the listener pauses: it closes its handle, which ends libuv's loop, while
/// `spare`, a duplicate of the listening descriptor made while descriptors were free, keeps
/// the socket and its backlog open. New clients wait in the backlog instead of being refused.
/// After a back-off it listens again on the spare, and duplicates it again for the next time;
/// while even that duplicate cannot be had, it stays paused and tries later.
private final class Listener: @unchecked Sendable, LoopResource {
    let loop: EventLoop
    let setup: ListenerSetup
    let pauses: PauseCounter
    private var handle: UnsafeMutablePointer<uv_tcp_t>?
    /// A duplicate of the listening descriptor, held for a pause; -1 once closed.
    private var spare: Int32
    private enum State { case listening, paused, closing, closed }
    private var state = State.listening
    private var resumeTimer: LoopTimer?
    private var backoff = Listener.firstBackoff
    private var pausesSinceLog = 0
    private var lastLog: ContinuousClock.Instant?
    private var closeWaiters: [() -> Void] = []

    static let firstBackoff = Duration.milliseconds(50)
    static let longestBackoff = Duration.seconds(1)

    init(on loop: EventLoop, setup: ListenerSetup, pauses: PauseCounter) throws(TransportError) {
        loop.assertInEventLoop()
        self.loop = loop
        self.setup = setup
        self.pauses = pauses
        spare = dup(setup.descriptor)
        if spare < 0 {
            let error = TransportError.uv(uv_translate_sys_error(errno), "keeping a spare listening descriptor")
            Glibc.close(setup.descriptor)
            throw error
        }
        loop.register(self)
        // From here the descriptor is the handle's: closing the handle closes it.
        if let error = listen(on: setup.descriptor) {
            state = .closed
            Glibc.close(spare)
            spare = -1
            loop.deregister(self)
            throw error
        }
    }

    /// Opens a handle on `descriptor` and listens; nil when it is listening.
    private func listen(on descriptor: Int32) -> TransportError? {
        let handle = UnsafeMutablePointer<uv_tcp_t>.allocate(capacity: 1)
        uv_tcp_init(loop.uvLoop, handle)
        loop.handleOpened()
        // Retained for the handle's life; released once, in its close callback.
        handle.pointee.data = Unmanaged.passRetained(self).toOpaque()
        self.handle = handle
        var status = uv_tcp_open(handle, uv_os_sock_t(descriptor))
        if status != 0 {
            Glibc.close(descriptor)
        } else {
            status = uv_listen(UnsafeMutablePointer(OpaquePointer(handle)), setup.backlog, listenerConnection)
        }
        guard status != 0 else { return nil }
        self.handle = nil
        uv_close(UnsafeMutablePointer(OpaquePointer(handle)), handleClosed)
        return .uv(status, "listening")
    }

    fileprivate func acceptOne(status: Int32) {
        guard status == 0 else {
            if status == Int32(UV_EMFILE.rawValue) || status == Int32(UV_ENFILE.rawValue) {
                pause(status)
            } else {
                setup.logger.warning("accept failed", metadata: ["error": "\(TransportError.uv(status, "accepting"))"])
            }
            return
        }
        guard let handle else { return }
        let connection = Connection(on: loop, options: setup.options, remote: nil)
        let accepted = connection.accept(from: UnsafeMutablePointer(OpaquePointer(handle)))
        guard accepted == 0 else {
            setup.logger.warning("accept failed", metadata: ["error": "\(TransportError.uv(accepted, "accepting"))"])
            connection.closeNow(.uv(accepted, "accepting"))
            return
        }
        guard let tls = setup.tls else {
            connection.install(setup.makeHandler(connection))
            return
        }
        let makeHandler = setup.makeHandler
        let logger = setup.logger
        let timer = loop.scheduleTimer(after: setup.handshakeTimeout) {
            connection.closeNow(TransportError(.connectTimeout, "TLS handshake with \(connection.remoteDescription) timed out"))
        }
        connection.startTLS(context: tls, serverName: nil) { result in
            timer.cancel()
            switch result {
            case .success:
                connection.install(makeHandler(connection))
            case .failure(let error):
                logger.debug("TLS handshake failed", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Stops accepting for a while: no descriptor is left to accept with.
    private func pause(_ status: Int32) {
        guard state == .listening, let handle else { return }
        state = .paused
        pauses.count.add(1, ordering: .relaxed)
        pausesSinceLog += 1
        let now = ContinuousClock.now
        if lastLog.map({ now - $0 >= .seconds(10) }) ?? true {
            setup.logger.warning("accepting paused: no file descriptor left", metadata: [
                "error": "\(TransportError.uv(status, "accepting"))", "pauses": "\(pausesSinceLog)",
                "retry": "\(backoff)",
            ])
            lastLog = now
            pausesSinceLog = 0
        }
        self.handle = nil
        // Closing the handle closes its descriptor and ends libuv's accept loop; `spare`
        // keeps the socket open.
        uv_close(UnsafeMutablePointer(OpaquePointer(handle)), handleClosed)
        scheduleResume()
    }

    private func scheduleResume() {
        let delay = backoff
        backoff = min(backoff * 2, Self.longestBackoff)
        resumeTimer = loop.scheduleTimer(after: delay) { [self] in
            loop.execute { self.resume() }
        }
    }

    private func resume() {
        guard state == .paused else { return }
        resumeTimer = nil
        // The next pause needs a spare of its own: no spare yet, no listening yet.
        let next = dup(spare)
        guard next >= 0 else {
            scheduleResume()
            return
        }
        let descriptor = spare
        spare = next
        state = .listening
        if let error = listen(on: descriptor) {
            setup.logger.warning("listening again failed", metadata: ["error": "\(error)"])
            state = .paused
            scheduleResume()
            return
        }
        backoff = Self.firstBackoff
    }

    func close(dueTo error: TransportError) {
        switch state {
        case .closing, .closed:
            return
        case .paused:
            resumeTimer?.cancel()
            resumeTimer = nil
            state = .closing
            finishClosing()
        case .listening:
            state = .closing
            if let handle {
                self.handle = nil
                uv_close(UnsafeMutablePointer(OpaquePointer(handle)), handleClosed)
            } else {
                finishClosing()
            }
        }
    }

    /// A handle's close callback ran: the listener is closed if it was closing.
    fileprivate func handleDidClose() {
        loop.handleClosed()
        if state == .closing { finishClosing() }
    }

    private func finishClosing() {
        state = .closed
        if spare >= 0 {
            Glibc.close(spare)
            spare = -1
        }
        loop.deregister(self)
        let waiters = closeWaiters
        closeWaiters = []
        for waiter in waiters { waiter() }
    }

    func close() async {
        _ = try? await loop.perform("close listener") { (operation: LoopOperation<Void>) in
            guard self.state != .closed else {
                operation.succeed(())
                return
            }
            self.closeWaiters.append { operation.succeed(()) }
            self.close(dueTo: TransportError(.connectionClosed, "listener closed"))
        }
    }
}

private func listenerConnection(_ server: UnsafeMutablePointer<uv_stream_t>?, _ status: Int32) {
    // Safe: `data` is the listener retained until its close callback.
    let listener = Unmanaged<Listener>.fromOpaque(server!.pointee.data).takeUnretainedValue()
    listener.acceptOne(status: status)
}

private func handleClosed(_ handle: UnsafeMutablePointer<uv_handle_t>?) {
    // Safe: the close callback ends the handle's life; take back the retain made when it
    // was opened, once.
    let listener = Unmanaged<Listener>.fromOpaque(handle!.pointee.data).takeRetainedValue()
    handle!.withMemoryRebound(to: uv_tcp_t.self, capacity: 1) { $0.deallocate() }
    listener.handleDidClose()
}
