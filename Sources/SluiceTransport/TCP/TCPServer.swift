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
/// It accepts for itself, from a `uv_poll_t` on the listening socket, rather than through
/// `uv_listen`: when the process has no file descriptor left (EMFILE/ENFILE), libuv accepts
/// and closes every waiting client with a reserved descriptor, or, when another thread took
/// that descriptor, hands every failed accept to the callback and tries again at once, for
/// ever (a core burned and a log flooded). Here the listener stops polling instead, for a
/// back-off that doubles from 50 ms to 1 s: clients wait in the backlog and are served once
/// descriptors are free. It logs once per 10 seconds with a count, and counts every pause.
///
/// While it accepts it holds a few spare descriptors, and it lets them go when it pauses: the
/// process must never sit at its limit. libdispatch's worker monitor opens
/// `/proc/<tid>/stat` every second while a queue has work, and crashes the process
/// ("registered worker exited prematurely", SIGILL) when that open fails: a flood of clients
/// killed `sluice sink` that way. The spares are taken back before accepting resumes; while
/// they cannot be, the pause goes on.
private final class Listener: @unchecked Sendable, LoopResource {
    let loop: EventLoop
    let setup: ListenerSetup
    let pauses: PauseCounter
    private let poll: UnsafeMutablePointer<uv_poll_t>
    private enum State { case listening, paused, closing, closed }
    private var state = State.listening
    private var resumeTimer: LoopTimer?
    private var backoff = Listener.firstBackoff
    private var pausesSinceLog = 0
    private var lastLog: ContinuousClock.Instant?
    private var closeWaiters: [() -> Void] = []
    /// Descriptors held while accepting, let go while paused (see the type's comment).
    private var spares: [Int32] = []

    static let spareCount = 8

    static let firstBackoff = Duration.milliseconds(50)
    static let longestBackoff = Duration.seconds(1)
    /// Accepts per wake-up, so that one busy listener does not starve the loop's connections.
    static let acceptsPerWakeUp = 128

    init(on loop: EventLoop, setup: ListenerSetup, pauses: PauseCounter) throws(TransportError) {
        loop.assertInEventLoop()
        self.loop = loop
        self.setup = setup
        self.pauses = pauses
        poll = .allocate(capacity: 1)
        let listened = cuv_listen(setup.descriptor, setup.backlog)
        var status = listened < 0 ? uv_translate_sys_error(-listened) : uv_poll_init(loop.uvLoop, poll, setup.descriptor)
        guard status == 0 else {
            Glibc.close(setup.descriptor)
            poll.deallocate()
            throw .uv(status, "listening")
        }
        loop.handleOpened()
        _ = takeSpares()
        // Retained for the handle's life; released once, in pollClosed.
        poll.pointee.data = Unmanaged.passRetained(self).toOpaque()
        loop.register(self)
        status = uv_poll_start(poll, Int32(UV_READABLE.rawValue), listenerReadable)
        if status != 0 {
            close(dueTo: .uv(status, "listening"))
            throw .uv(status, "listening")
        }
    }

    fileprivate func becameReadable(status: Int32) {
        guard status == 0 else {
            // An error on the listening socket itself: polling again at once would spin.
            pause(status)
            return
        }
        acceptPending()
    }

    private func acceptPending() {
        var served = false
        for _ in 0..<Self.acceptsPerWakeUp {
            guard state == .listening else { return }
            let accepted = cuv_accept(setup.descriptor)
            if accepted >= 0 {
                backoff = Self.firstBackoff
                serve(accepted)
                served = true
                continue
            }
            switch accepted {
            case -EAGAIN, -EWOULDBLOCK:
                // The last accept may have taken the last descriptor: then pause now, spares
                // released, rather than sit at the limit until the next client comes.
                if served, !Self.hasDescriptorToSpare() { pause(UV_EMFILE.rawValue) }
                return
            case -EINTR, -ECONNABORTED:
                continue
            case -EMFILE, -ENFILE, -ENOBUFS, -ENOMEM:
                pause(uv_translate_sys_error(-accepted))
                return
            default:
                setup.logger.warning("accept failed", metadata: [
                    "error": "\(TransportError.uv(uv_translate_sys_error(-accepted), "accepting"))",
                ])
                return
            }
        }
    }

    private func serve(_ descriptor: Int32) {
        let connection = Connection(on: loop, options: setup.options, remote: nil)
        let adopted = connection.adopt(descriptor: descriptor)
        guard adopted == 0 else {
            setup.logger.warning("accept failed", metadata: ["error": "\(TransportError.uv(adopted, "accepting"))"])
            connection.closeNow(.uv(adopted, "accepting"))
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

    /// Stops accepting for a while: no descriptor (or no memory) to accept with.
    private func pause(_ status: Int32) {
        state = .paused
        uv_poll_stop(poll)
        releaseSpares()
        pauses.count.add(1, ordering: .relaxed)
        pausesSinceLog += 1
        let now = ContinuousClock.now
        if lastLog.map({ now - $0 >= .seconds(10) }) ?? true {
            setup.logger.warning("accepting paused: the process has no file descriptor left", metadata: [
                "error": "\(TransportError.uv(status, "accepting"))", "pauses": "\(pausesSinceLog)", "retry": "\(backoff)",
            ])
            lastLog = now
            pausesSinceLog = 0
        }
        let delay = backoff
        backoff = min(backoff * 2, Self.longestBackoff)
        resumeTimer = loop.scheduleTimer(after: delay) { [self] in
            loop.execute { self.resume() }
        }
    }

    private func resume() {
        guard state == .paused else { return }
        resumeTimer = nil
        guard takeSpares() else {
            // Still no room to spare: accepting now would take the process to its limit.
            pause(UV_EMFILE.rawValue)
            return
        }
        state = .listening
        uv_poll_start(poll, Int32(UV_READABLE.rawValue), listenerReadable)
    }

    /// Whether the process can open one more descriptor (it opens and closes one).
    private static func hasDescriptorToSpare() -> Bool {
        let descriptor = open("/dev/null", O_RDONLY | O_CLOEXEC)
        guard descriptor >= 0 else { return false }
        Glibc.close(descriptor)
        return true
    }

    /// Opens the spare descriptors, and checks that one more could be opened besides;
    /// false (holding none) when the process has not that much room.
    private func takeSpares() -> Bool {
        while spares.count < Self.spareCount {
            let descriptor = open("/dev/null", O_RDONLY | O_CLOEXEC)
            guard descriptor >= 0 else {
                releaseSpares()
                return false
            }
            spares.append(descriptor)
        }
        guard Self.hasDescriptorToSpare() else {
            releaseSpares()
            return false
        }
        return true
    }

    private func releaseSpares() {
        for descriptor in spares { Glibc.close(descriptor) }
        spares.removeAll()
    }

    func close(dueTo error: TransportError) {
        guard state == .listening || state == .paused else { return }
        resumeTimer?.cancel()
        resumeTimer = nil
        releaseSpares()
        state = .closing
        uv_close(UnsafeMutablePointer(OpaquePointer(poll)), pollClosed)
    }

    fileprivate func closed() {
        state = .closed
        // A poll handle does not own its descriptor.
        Glibc.close(setup.descriptor)
        loop.deregister(self)
        loop.handleClosed()
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

private func listenerReadable(_ handle: UnsafeMutablePointer<uv_poll_t>?, _ status: Int32, _ events: Int32) {
    // Safe: `data` is the listener retained until its close callback.
    let listener = Unmanaged<Listener>.fromOpaque(handle!.pointee.data).takeUnretainedValue()
    listener.becameReadable(status: status)
}

private func pollClosed(_ handle: UnsafeMutablePointer<uv_handle_t>?) {
    // Safe: the close callback ends the handle's life; take back the retain from init once.
    let listener = Unmanaged<Listener>.fromOpaque(handle!.pointee.data).takeRetainedValue()
    handle!.withMemoryRebound(to: uv_poll_t.self, capacity: 1) { $0.deallocate() }
    listener.closed()
}
