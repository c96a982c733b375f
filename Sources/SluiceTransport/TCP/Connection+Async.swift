extension Connection {
    /// Writes `chunks` in order and returns once libuv has written them (not when they are
    /// merely queued).
    ///
    /// Cancelling the task closes the connection, because a stream cut mid-write cannot be
    /// resumed, and throws `CancellationError`.
    public func write(_ chunks: [SharedBytes]) async throws {
        try await eventLoop.perform("write") { (operation: LoopOperation<Void>) in
            operation.onCancel = { self.closeNow(TransportError(.connectionClosed, "write cancelled")) }
            self.enqueueWrite(chunks) { error in
                if let error { operation.fail(error) } else { operation.succeed(()) }
            }
        }
    }

    /// Writes `bytes` (copied once); see ``write(_:)-(SharedBytes)``.
    public func write(_ bytes: [UInt8]) async throws {
        try await write([SharedBytes(bytes)])
    }

    /// Writes `bytes`; see ``write(_:)-(SharedBytes)``.
    public func write(_ bytes: SharedBytes) async throws {
        try await write([bytes])
    }

    /// Upgrades the open connection to TLS in place (STARTTLS) and returns once the handshake
    /// is done. A failed handshake closes the connection and throws
    /// ``TransportError/Kind/tls`` with the ``TLSError`` inside.
    ///
    /// `serverName` (for a client) is sent as SNI and verified against the certificate.
    public func startTLS(context: TLSContext, serverName: String?) async throws {
        try await eventLoop.perform("start TLS") { (operation: LoopOperation<Void>) in
            operation.onCancel = { self.closeNow(TransportError(.connectionClosed, "TLS handshake cancelled")) }
            self.startTLS(context: context, serverName: serverName) { result in
                switch result {
                case .success: operation.succeed(())
                case .failure(let error): operation.fail(error)
                }
            }
        }
    }

    /// Closes gracefully (see ``close(error:)``) and returns once the handle is closed.
    public func close() async {
        // If the loop has shut down, it closed every handle already; nothing is left to wait for.
        _ = try? await eventLoop.perform("close") { (operation: LoopOperation<Void>) in
            self.whenClosed { operation.succeed(()) }
            self.close(error: nil)
        }
    }
}
