import Dispatch
public import SluiceCore
public import SluiceTransport
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// Where a sink keeps what it takes.
public enum SinkStore: Hashable, Sendable {
    /// Count and drop (the default, for load work).
    case discard
    /// Keep in memory; tests await them with ``SMTPSink/waitForMessages(count:timeout:)``.
    case memory
    /// A Maildir (`DIR/tmp`, `DIR/new`, `DIR/cur`): each message is written, synced and
    /// renamed into `new/` before it is answered 250.
    case maildir(String)
    /// One mbox file, appended and synced before each 250 (`From ` lines quoted as `>From `).
    case mbox(String)
    /// Code of yours: each message is answered 250 once it returns, 451 if it throws (the
    /// client keeps the message and tries again). `sluice sink --bounces` records reports in
    /// an outbox this way.
    case handler(SinkHandler)

    /// Parses `discard`, `memory`, `maildir:DIR` or `mbox:FILE`.
    public init?(_ text: String) {
        switch text {
        case "discard": self = .discard
        case "memory": self = .memory
        default:
            if text.hasPrefix("maildir:"), text.count > 8 {
                self = .maildir(String(text.dropFirst(8)))
            } else if text.hasPrefix("mbox:"), text.count > 5 {
                self = .mbox(String(text.dropFirst(5)))
            } else {
                return nil
            }
        }
    }
}

/// What ``SinkStore/handler(_:)`` calls with each message.
public struct SinkHandler: Hashable, Sendable {
    private let id = SinkHandler.ids.add(1, ordering: .relaxed).newValue
    private static let ids = Atomic<Int>(0)
    let handle: @Sendable (StoredMessage) async throws -> Void

    /// A handler; `handle` may suspend (a database write, say) and runs off the event loops.
    public init(_ handle: @escaping @Sendable (StoredMessage) async throws -> Void) { self.handle = handle }

    public static func == (lhs: SinkHandler, rhs: SinkHandler) -> Bool { lhs.id == rhs.id }
    public func hash(into hasher: inout Hasher) { hasher.combine(id) }
}

/// A message a sink took.
public struct StoredMessage: Hashable, Sendable {
    /// The id it was answered with (`250 … queued as ID`).
    public let id: String
    /// The envelope sender (nil for `<>`).
    public let from: EnvelopeAddress?
    /// The accepted recipients.
    public let recipients: [EnvelopeAddress]
    /// The content as received (CRLF line endings, dot-stuffing undone).
    public let content: [UInt8]
    /// The client's EHLO name.
    public let heloName: String
    /// The authenticated user, if any.
    public let authenticatedUser: String?
    /// Whether it came over TLS.
    public let wasSecure: Bool
    /// The client's address and port.
    public let clientAddress: SocketAddress?
    /// What the session's TLS handshake settled (version, cipher), if it was encrypted.
    public let tls: TLSDetails?
    /// When its end of data arrived, since the Unix epoch.
    public let receivedAt: Duration

    init(id: String, _ message: ReceivedMessage, _ arrival: Arrival) {
        self.id = id
        from = message.from
        recipients = message.recipients
        content = message.content
        heloName = message.heloName
        authenticatedUser = message.authenticatedUser
        wasSecure = message.wasSecure
        clientAddress = arrival.client
        tls = arrival.tls
        receivedAt = arrival.time
    }
}

/// A store's failure: the message was not kept, and the client gets a 451.
struct StoreError: Error, CustomStringConvertible {
    let description: String
}

/// Keeps messages as the configured ``SinkStore`` says. Disk stores do their I/O on a serial
/// queue of their own, so a slow disk never stalls an event loop.
final class MessageStore: Sendable {
    let kind: SinkStore
    private let memory = Locked<[StoredMessage]>([])
    private let waiters = Locked<[(Int, CheckedContinuation<[StoredMessage], Never>)]>([])
    private let counter = Atomic<Int>(0)
    private let queue = DispatchQueue(label: "sluice.sink.store")
    /// The sink's name, for trace headers.
    private let hostname: String
    /// The name in Maildir file names (no '/' or ':').
    private let fileHostname: String
    private let wireBytes: Bool
    private let observer: (@Sendable (StoredMessage) -> Void)?

    init(_ kind: SinkStore, hostname: String, wireBytes: Bool = false,
         observer: (@Sendable (StoredMessage) -> Void)? = nil) throws {
        self.kind = kind
        self.hostname = hostname
        fileHostname = hostname.replacingSlashes
        self.wireBytes = wireBytes
        self.observer = observer
        switch kind {
        case .discard, .memory, .handler:
            break
        case .maildir(let directory):
            for sub in ["", "/tmp", "/new", "/cur"] {
                let path = directory + sub
                if mkdir(path, 0o755) != 0, errno != EEXIST {
                    throw StoreError(description: "cannot create \(path): \(String(cString: strerror(errno)))")
                }
            }
        case .mbox(let path):
            let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
            guard fd >= 0 else { throw StoreError(description: "cannot open \(path): \(String(cString: strerror(errno)))") }
            close(fd)
        }
    }

    /// A new id, unique within this process.
    func nextID() -> String {
        let n = counter.add(1, ordering: .relaxed).newValue
        return String(n, radix: 36, uppercase: true)
    }

    /// Stores `message`; `completion` runs once it is durably kept (or not), on any thread.
    /// The observer, if any, sees it once it is kept.
    func store(_ message: ReceivedMessage, arrival: @autoclosure () -> Arrival,
               completion: @escaping @Sendable (Result<String, StoreError>) -> Void) {
        let id = nextID()
        if case .discard = kind, observer == nil {
            completion(.success(id))  // the load path: no copy, no clock
            return
        }
        let stored = StoredMessage(id: id, message, arrival())
        let observer = self.observer
        let completion: @Sendable (Result<String, StoreError>) -> Void = { result in
            completion(result)
            if case .success = result { observer?(stored) }
        }
        switch kind {
        case .discard:
            completion(.success(id))
        case .handler(let handler):
            Task {
                do {
                    try await handler.handle(stored)
                    completion(.success(id))
                } catch {
                    completion(.failure(StoreError(description: "\(error)")))
                }
            }
        case .memory:
            let ready = memory.withLock { messages -> [(CheckedContinuation<[StoredMessage], Never>, [StoredMessage])] in
                messages.append(stored)
                let count = messages.count
                let snapshot = messages
                return waiters.withLock { waiters in
                    let due = waiters.filter { $0.0 <= count }
                    waiters.removeAll { $0.0 <= count }
                    return due.map { ($0.1, snapshot) }
                }
            }
            completion(.success(id))
            for (waiter, messages) in ready { waiter.resume(returning: messages) }
        case .maildir(let directory):
            let (hostname, fileHostname, wireBytes) = (self.hostname, self.fileHostname, self.wireBytes)
            queue.async {
                let bytes = stored.bytesForDisk(hostname: hostname, wireBytes: wireBytes)
                completion(Result { try Self.writeMaildir(bytes, directory: directory, id: id, hostname: fileHostname) }
                    .mapError { $0 as? StoreError ?? StoreError(description: "\($0)") }.map { id })
            }
        case .mbox(let path):
            let (hostname, wireBytes) = (self.hostname, self.wireBytes)
            queue.async {
                let bytes = stored.bytesForDisk(hostname: hostname, wireBytes: wireBytes)
                completion(Result { try Self.appendMbox(bytes, from: stored.from, path: path) }
                    .mapError { $0 as? StoreError ?? StoreError(description: "\($0)") }.map { id })
            }
        }
    }

    /// The messages kept in memory so far.
    var messages: [StoredMessage] { memory.withLock { $0 } }

    /// Waits until at least `count` messages are in memory.
    func waitForMessages(count: Int) async -> [StoredMessage] {
        await withCheckedContinuation { continuation in
            let now: [StoredMessage]? = memory.withLock { messages in
                if messages.count >= count { return messages }
                waiters.withLock { $0.append((count, continuation)) }
                return nil
            }
            if let now { continuation.resume(returning: now) }
        }
    }

    // MARK: Disk

    private static func fail(_ what: String) -> StoreError {
        StoreError(description: "\(what): \(String(cString: strerror(errno)))")
    }

    private static func writeAll(_ fd: Int32, _ bytes: [UInt8], _ what: String) throws(StoreError) {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if written < 0 {
                if errno == EINTR { continue }
                throw fail(what)
            }
            offset += written
        }
    }

    /// tmp/NAME, written and synced, then renamed into new/NAME, and new/ synced.
    static func writeMaildir(_ content: [UInt8], directory: String, id: String, hostname: String) throws(StoreError) {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let name = "\(now.tv_sec).M\(now.tv_nsec / 1000)P\(getpid())Q\(id).\(hostname)"
        let temporary = "\(directory)/tmp/\(name)"
        let final = "\(directory)/new/\(name)"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw fail("creating \(temporary)") }
        do throws(StoreError) {
            try writeAll(fd, content, "writing \(temporary)")
            guard fsync(fd) == 0 else { throw fail("syncing \(temporary)") }
        } catch {
            close(fd)
            unlink(temporary)
            throw error
        }
        close(fd)
        guard rename(temporary, final) == 0 else {
            unlink(temporary)
            throw fail("moving \(temporary) to new/")
        }
        let directoryFD = open("\(directory)/new", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if directoryFD >= 0 {
            defer { close(directoryFD) }
            guard fsync(directoryFD) == 0 else { throw fail("syncing \(directory)/new") }
        }
    }

    /// Appends one mbox entry (mboxrd: `>From ` quoting) and syncs the file. `content`'s
    /// line endings are kept as they are (LF, or CRLF when the wire bytes are kept).
    static func appendMbox(_ content: [UInt8], from: EnvelopeAddress?, path: String) throws(StoreError) {
        var entry = Array("From \(StoredMessage.safe(from?.address ?? "MAILER-DAEMON")) \(mboxDate())\n".utf8)
        var lineStart = true
        for (index, byte) in content.enumerated() {
            if lineStart {
                // mboxrd: quote any line matching ^>*From by one more '>'.
                var probe = index
                while probe < content.count, content[probe] == UInt8(ascii: ">") { probe += 1 }
                if content[probe...].starts(with: "From ".utf8) { entry.append(UInt8(ascii: ">")) }
            }
            entry.append(byte)
            lineStart = byte == 10
        }
        if entry.last != 10 { entry.append(10) }
        entry.append(10)
        let fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw fail("opening \(path)") }
        defer { close(fd) }
        try writeAll(fd, entry, "appending to \(path)")
        guard fsync(fd) == 0 else { throw fail("syncing \(path)") }
    }

    /// The `From ` line's date, `asctime` style, in UTC.
    private static func mboxDate() -> String { utcTime(Int(time(nil)), "%a %b %e %H:%M:%S %Y") }
}

extension String {
    /// Maildir names may not hold '/' or ':'.
    fileprivate var replacingSlashes: String {
        String(map { $0 == "/" || $0 == ":" ? "_" : $0 })
    }
}
