extension Connection {
    /// Opens a TCP connection to `host`, optionally starting TLS at once (implicit TLS), and
    /// gives it the handler `handler` makes on the connection's loop.
    ///
    /// `host` may be a name (resolved with `uv_getaddrinfo`, IPv4 and IPv6) or an IP literal.
    /// Each address is tried in turn until one connects; `timeout` bounds the whole attempt,
    /// resolution and TLS handshake included.
    ///
    /// - Parameters:
    ///   - tls: A client ``TLSContext`` to start TLS right after connecting.
    ///   - serverName: The name sent as SNI and verified against the certificate; by default `host`.
    /// - Throws: ``TransportError`` (``TransportError/Kind/connectionRefused``,
    ///   ``TransportError/Kind/hostNotFound``, ``TransportError/Kind/connectTimeout``,
    ///   ``TransportError/Kind/tls``, …) or `CancellationError`; nothing is left open.
    public static func connect(
        to host: String,
        port: Int,
        on loop: EventLoop,
        timeout: Duration = .seconds(30),
        tls: TLSContext? = nil,
        serverName: String? = nil,
        options: ConnectionOptions = ConnectionOptions(),
        handler: @escaping @Sendable (Connection) -> any ConnectionHandler
    ) async throws -> Connection {
        try await connect(to: host, port: port, resolved: nil, on: loop, timeout: timeout, tls: tls, serverName: serverName,
                          options: options, handler: handler)
    }

    /// As ``connect(to:port:on:timeout:tls:serverName:options:handler:)``, for a name already
    /// resolved to `addresses` (tried in this order): the seam through which tests give a name
    /// several addresses, whatever this machine's resolver says.
    package static func connect(
        to host: String,
        resolvedAs addresses: [SocketAddress],
        on loop: EventLoop,
        timeout: Duration = .seconds(30),
        tls: TLSContext? = nil,
        serverName: String? = nil,
        options: ConnectionOptions = ConnectionOptions(),
        handler: @escaping @Sendable (Connection) -> any ConnectionHandler
    ) async throws -> Connection {
        try await connect(to: host, port: addresses.first?.port ?? 0, resolved: addresses, on: loop, timeout: timeout, tls: tls,
                          serverName: serverName, options: options, handler: handler)
    }

    private static func connect(
        to host: String, port: Int, resolved: [SocketAddress]?, on loop: EventLoop, timeout: Duration, tls: TLSContext?,
        serverName: String?, options: ConnectionOptions, handler: @escaping @Sendable (Connection) -> any ConnectionHandler
    ) async throws -> Connection {
        try await loop.perform("connect to \(host):\(port)") { (operation: LoopOperation<Connection>) in
            let attempt = ConnectAttempt(
                operation: operation, host: host, port: port, tls: tls, serverName: serverName ?? host,
                options: options, makeHandler: handler)
            attempt.start(timeout: timeout, resolved: resolved)
        }
    }
}

/// One call to ``Connection/connect(to:port:on:timeout:tls:serverName:options:handler:)``:
/// resolve, try each address, start TLS, install the handler.
private final class ConnectAttempt: @unchecked Sendable {
    // Every field is touched on the operation's loop thread only: it is created there, and
    // each closure that captures it (timer, resolver, connect, TLS completions) runs there.
    private let operation: LoopOperation<Connection>
    private let host: String
    private let port: Int
    private let tls: TLSContext?
    private let serverName: String
    private let options: ConnectionOptions
    private let makeHandler: @Sendable (Connection) -> any ConnectionHandler
    private var loop: EventLoop { operation.loop }

    private var addresses: [SocketAddress] = []
    private var nextAddress = 0
    private var lastError: TransportError?
    private var current: Connection?
    private var resolver: ResolveRequest?
    private var timer: LoopTimer?

    init(operation: LoopOperation<Connection>, host: String, port: Int, tls: TLSContext?, serverName: String,
         options: ConnectionOptions, makeHandler: @escaping @Sendable (Connection) -> any ConnectionHandler) {
        self.operation = operation
        self.host = host
        self.port = port
        self.tls = tls
        self.serverName = serverName
        self.options = options
        self.makeHandler = makeHandler
    }

    /// Starts: resolves `host`, unless `resolved` gives its addresses already.
    func start(timeout: Duration, resolved: [SocketAddress]? = nil) {
        // The attempt lives as long as the closures below hold it: the timer, the resolver's
        // completion, the current connection's connect completion.
        operation.onCancel = { [self] in abandon(TransportError(.connectionClosed, "connect cancelled")) }
        timer = loop.scheduleTimer(after: timeout) { [self] in
            let error = TransportError(.connectTimeout, "connect to \(host):\(port) timed out after \(timeout)")
            abandon(error)
            operation.fail(error)
        }
        if let resolved {
            addresses = resolved
            tryNextAddress()
            return
        }
        let resolver = ResolveRequest(loop: loop)
        self.resolver = resolver
        resolver.start(host: host, port: port) { [self] result in
            self.resolver = nil
            switch result {
            case .success(let addresses):
                self.addresses = addresses
                tryNextAddress()
            case .failure(let error):
                finish(.failure(error))
            }
        }
    }

    private func tryNextAddress() {
        guard !operation.isFinished else { return }
        guard nextAddress < addresses.count else {
            finish(.failure(lastError ?? TransportError(.hostNotFound, "\(host) has no address")))
            return
        }
        let address = addresses[nextAddress]
        nextAddress += 1
        let connection = Connection(on: loop, options: options, remote: address)
        current = connection
        connection.startConnect(to: address) { [self] status in
            connected(connection, to: address, status: status)
        }
    }

    private func connected(_ connection: Connection, to address: SocketAddress, status: Int32) {
        guard !operation.isFinished else {
            connection.closeNow(nil)
            return
        }
        guard status == 0 else {
            current = nil
            if let reason = connection.closeReason {
                // Closed under us (the loop is shutting down): report why, try nothing else.
                finish(.failure(reason))
                return
            }
            lastError = .uv(status, "connecting to \(address)")
            connection.closeNow(lastError)
            tryNextAddress()
            return
        }
        guard let tls else {
            activate(connection)
            return
        }
        connection.startTLS(context: tls, serverName: serverName) { [self] result in
            switch result {
            case .success: activate(connection)
            case .failure(let error): finish(.failure(error))
            }
        }
    }

    private func activate(_ connection: Connection) {
        guard !operation.isFinished else {
            connection.closeNow(nil)
            return
        }
        current = nil
        connection.install(makeHandler(connection))
        finish(.success(connection))
    }

    /// Stops everything in progress; the caller fails the operation.
    private func abandon(_ error: TransportError) {
        timer?.cancel()
        timer = nil
        resolver?.close(dueTo: error)
        resolver = nil
        current?.closeNow(error)
        current = nil
    }

    private func finish(_ result: Result<Connection, TransportError>) {
        timer?.cancel()
        timer = nil
        switch result {
        case .success(let connection): operation.succeed(connection)
        case .failure(let error): operation.fail(error)
        }
    }
}
