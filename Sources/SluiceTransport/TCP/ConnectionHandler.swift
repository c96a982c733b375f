/// The protocol side of a ``Connection``: it receives bytes and events on the connection's
/// event loop thread, without a hop per read.
///
/// A handler is made on the loop by the factory given to ``Connection/connect(to:port:on:timeout:tls:serverName:options:handler:)``
/// or ``TCPServer/listen(host:port:group:tls:options:backlog:tlsHandshakeTimeout:logger:handler:)``,
/// once the connection is established (and its TLS handshake done, if it started with TLS).
/// Its methods are called on that loop only.
public protocol ConnectionHandler: AnyObject {
    /// Bytes arrived (decrypted, if TLS is on). `bytes` is valid only during the call.
    func connection(_ connection: Connection, didReceive bytes: UnsafeRawBufferPointer)

    /// The bytes waiting to be written crossed the connection's high watermark (`false`) or
    /// fell back to its low watermark (`true`).
    func connection(_ connection: Connection, writabilityChanged isWritable: Bool)

    /// The connection closed: cleanly (`nil`: we closed it, or the peer closed its side) or
    /// because of `error`. Called once; the connection drops its handler afterwards.
    func connectionDidClose(_ connection: Connection, error: TransportError?)
}

extension ConnectionHandler {
    /// By default, writability changes are ignored.
    public func connection(_ connection: Connection, writabilityChanged isWritable: Bool) {}
}

/// Tuning for one connection.
public struct ConnectionOptions: Sendable, Hashable {
    /// The most one read takes in. Reads go into a buffer the event loop's connections
    /// share (or, rarely, one of the connection's own), so this costs memory per loop.
    public var readBufferSize: Int = 64 * 1024
    /// Above this many bytes waiting to be written, the connection is not writable.
    public var writeHighWatermark: Int = 256 * 1024
    /// At or below this many bytes waiting to be written, it is writable again.
    public var writeLowWatermark: Int = 64 * 1024
    /// When true, the connection stops reading while it is not writable, so a peer that
    /// does not read what we send cannot make us buffer without bound. Right for servers,
    /// whose writes answer reads; wrong for a pipelining client, which must keep reading
    /// replies to a server that stops reading until its replies are read.
    public var pausesReadingWhenNotWritable: Bool = false
    /// How long a graceful close waits for queued writes before it closes anyway.
    public var gracefulCloseTimeout: Duration = .seconds(10)

    /// The defaults.
    public init() {}
}
