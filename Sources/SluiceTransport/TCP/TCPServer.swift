import CLibUV
public import Logging
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

    private init(localAddress: SocketAddress, listeners: [Listener]) {
        self.localAddress = localAddress
        self.listeners = listeners
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
                        operation.succeed(try Listener(on: loop, setup: setup))
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
        return TCPServer(localAddress: bound, listeners: listeners)
    }

    /// Stops accepting. Connections already accepted stay open; their handlers close them.
    public func close() async {
        for listener in listeners { await listener.close() }
    }
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
private final class Listener: @unchecked Sendable, LoopResource {
    let loop: EventLoop
    let setup: ListenerSetup
    private let handle: UnsafeMutablePointer<uv_tcp_t>
    private enum State { case listening, closing, closed }
    private var state = State.listening
    private var closeWaiters: [() -> Void] = []
    private var stream: UnsafeMutablePointer<uv_stream_t> { UnsafeMutablePointer(OpaquePointer(handle)) }

    init(on loop: EventLoop, setup: ListenerSetup) throws(TransportError) {
        loop.assertInEventLoop()
        self.loop = loop
        self.setup = setup
        handle = .allocate(capacity: 1)
        uv_tcp_init(loop.uvLoop, handle)
        loop.handleOpened()
        // Retained for the handle's life; released once, in listenerClosed.
        handle.pointee.data = Unmanaged.passRetained(self).toOpaque()
        loop.register(self)
        // From here the descriptor is the handle's: closing the handle closes it.
        var status = uv_tcp_open(handle, uv_os_sock_t(setup.descriptor))
        if status != 0 {
            Glibc.close(setup.descriptor)
        } else {
            status = uv_listen(stream, setup.backlog, listenerConnection)
        }
        if status != 0 {
            close(dueTo: .uv(status, "listening"))
            throw .uv(status, "listening")
        }
    }

    fileprivate func acceptOne(status: Int32) {
        guard status == 0 else {
            setup.logger.warning("accept failed", metadata: ["error": "\(TransportError.uv(status, "accepting"))"])
            return
        }
        let connection = Connection(on: loop, options: setup.options, remote: nil)
        let accepted = connection.accept(from: stream)
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

    func close(dueTo error: TransportError) {
        guard state == .listening else { return }
        state = .closing
        uv_close(UnsafeMutablePointer(OpaquePointer(handle)), listenerClosed)
    }

    fileprivate func closed() {
        state = .closed
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

private func listenerConnection(_ server: UnsafeMutablePointer<uv_stream_t>?, _ status: Int32) {
    // Safe: `data` is the listener retained until its close callback.
    let listener = Unmanaged<Listener>.fromOpaque(server!.pointee.data).takeUnretainedValue()
    listener.acceptOne(status: status)
}

private func listenerClosed(_ handle: UnsafeMutablePointer<uv_handle_t>?) {
    // Safe: the close callback ends the handle's life; take back the retain from init once.
    let listener = Unmanaged<Listener>.fromOpaque(handle!.pointee.data).takeRetainedValue()
    listener.closed()
    handle!.withMemoryRebound(to: uv_tcp_t.self, capacity: 1) { $0.deallocate() }
}
