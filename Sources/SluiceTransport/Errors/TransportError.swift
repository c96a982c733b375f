import CLibUV

/// An error from the transport layer: resolving, connecting, reading, writing, TLS, or the
/// event loop itself.
///
/// Match on ``kind``; the ``description`` keeps libuv's error name and message
/// (`ECONNREFUSED: connection refused`) and what the transport was doing.
public struct TransportError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What went wrong, in a form that can be matched.
    public struct Kind: Hashable, Sendable, CustomStringConvertible {
        /// The kind in words, as messages say it.
        public let description: String
        private init(_ description: String) { self.description = description }

        /// The peer refused the connection (`ECONNREFUSED`).
        public static let connectionRefused = Kind("connection refused")
        /// The peer reset or broke the connection (`ECONNRESET`, `EPIPE`).
        public static let connectionReset = Kind("connection reset")
        /// The host name does not exist or has no address (`EAI_NONAME`, `EAI_NODATA`): the
        /// resolver's final answer.
        public static let hostNotFound = Kind("host not found")
        /// The name could not be looked up now: the resolver failed or did not answer
        /// (`EAI_AGAIN`, `EAI_FAIL`). Unlike ``hostNotFound``, a later try may succeed.
        public static let lookupFailed = Kind("name lookup failed")
        /// No address answered within the connect timeout.
        public static let connectTimeout = Kind("connect timeout")
        /// The connection was already closed when the operation was asked for, or closed
        /// before it finished.
        public static let connectionClosed = Kind("connection closed")
        /// The event loop has been shut down and takes no more work.
        public static let eventLoopShutDown = Kind("event loop shut down")
        /// The TLS handshake or a TLS record failed; ``TransportError/tls`` says why.
        public static let tls = Kind("TLS")
        /// The address to listen on is taken (`EADDRINUSE`).
        public static let addressInUse = Kind("address in use")
        /// An argument was not acceptable (a malformed address, a bad port).
        public static let invalidArgument = Kind("invalid argument")
        /// Any other system error; ``TransportError/systemErrorName`` names it.
        public static let system = Kind("system error")
    }

    /// What went wrong.
    public let kind: Kind
    /// The libuv error name (`ECONNREFUSED`, `EAI_NONAME`), when libuv reported the error.
    public let systemErrorName: String?
    /// The TLS failure, when ``kind`` is ``Kind/tls``.
    public let tls: TLSError?
    /// A sentence that says what failed and where.
    public let message: String

    /// Creates an error. Public so that layers above can report transport failures they detect.
    public init(_ kind: Kind, _ message: String, systemErrorName: String? = nil, tls: TLSError? = nil) {
        self.kind = kind
        self.message = message
        self.systemErrorName = systemErrorName
        self.tls = tls
    }

    public var description: String {
        if let tls { return "\(message): \(tls)" }
        return message
    }

    /// Wraps a TLS failure.
    static func tls(_ error: TLSError, _ context: String) -> TransportError {
        TransportError(.tls, context, tls: error)
    }

    /// Maps a negative libuv status to an error that keeps libuv's name and message,
    /// e.g. `ECONNREFUSED: connection refused (connecting to 127.0.0.1:1)`.
    static func uv(_ status: Int32, _ context: String) -> TransportError {
        let name = String(cString: uv_err_name(status))
        let text = String(cString: uv_strerror(status))
        let kind: Kind
        switch status {
        case Int32(UV_ECONNREFUSED.rawValue): kind = .connectionRefused
        case Int32(UV_ECONNRESET.rawValue), Int32(UV_EPIPE.rawValue), Int32(UV_ECONNABORTED.rawValue):
            kind = .connectionReset
        case Int32(UV_EAI_NONAME.rawValue), Int32(UV_EAI_NODATA.rawValue):
            kind = .hostNotFound
        case Int32(UV_EAI_AGAIN.rawValue), Int32(UV_EAI_FAIL.rawValue):
            kind = .lookupFailed
        case Int32(UV_ETIMEDOUT.rawValue): kind = .connectTimeout
        case Int32(UV_EOF.rawValue), Int32(UV_ECANCELED.rawValue): kind = .connectionClosed
        case Int32(UV_EADDRINUSE.rawValue): kind = .addressInUse
        case Int32(UV_EINVAL.rawValue), Int32(UV_EAFNOSUPPORT.rawValue): kind = .invalidArgument
        default: kind = .system
        }
        return TransportError(kind, "\(name): \(text) (\(context))", systemErrorName: name)
    }
}
