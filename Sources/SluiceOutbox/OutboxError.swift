/// Why an outbox operation failed.
public struct OutboxError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What kind of failure.
    public struct Kind: Sendable, Hashable, CustomStringConvertible {
        private let name: String
        private init(_ name: String) { self.name = name }

        /// The outbox URL is malformed or names an unknown store.
        public static let invalidURL = Kind("invalid outbox URL")
        /// A message, address or argument is not acceptable; nothing was written.
        public static let invalidInput = Kind("invalid input")
        /// The store cannot be opened or reached.
        public static let unavailable = Kind("outbox unavailable")
        /// The store has no schema yet: run `sluice outbox init`.
        public static let notInitialized = Kind("outbox not initialised")
        /// The store's schema is newer than this Sluice knows; nothing was touched.
        public static let schemaTooNew = Kind("outbox schema too new")
        /// No message has that id.
        public static let notFound = Kind("no such message")
        /// The database refused a statement.
        public static let database = Kind("database error")

        public var description: String { name }
    }

    /// What kind of failure.
    public let kind: Kind
    /// What happened, in words.
    public let message: String

    /// An error.
    public init(_ kind: Kind, _ message: String) {
        self.kind = kind
        self.message = message
    }

    public var description: String { "\(kind): \(message)" }
}
