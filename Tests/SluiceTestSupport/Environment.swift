import Foundation
import Synchronization
import Testing
import SluiceTransport

/// This process's descriptors that are TCP sockets with a local or remote port in `ports`
/// (read from /proc/self/fd and /proc/net/tcp{,6}), as "fd -> local remote" lines.
public func socketDescriptors(touchingPorts ports: Set<Int>) -> [String] {
    var endpointsByInode: [String: String] = [:]
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        guard let text = try? String(contentsOfFile: table, encoding: .utf8) else { continue }
        for line in text.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ")
            guard fields.count > 9 else { continue }
            func port(_ field: Substring) -> Int { Int(field.split(separator: ":").last ?? "", radix: 16) ?? -1 }
            if ports.contains(port(fields[1])) || ports.contains(port(fields[2])) {
                endpointsByInode[String(fields[9])] = "\(fields[1]) \(fields[2])"
            }
        }
    }
    let descriptors = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
    return descriptors.compactMap { fd in
        guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(fd)"),
              target.hasPrefix("socket:["), let endpoints = endpointsByInode[String(target.dropFirst(8).dropLast())]
        else { return nil }
        return "\(fd) -> \(endpoints)"
    }
}

/// This process's sockets that are not connected and never were, or whose connect failed:
/// those no /proc/net table lists and whose local address is unspecified (0.0.0.0 or ::).
///
/// A connection that ended (reset, say) but whose descriptor is still open is in no table
/// either, but it keeps its local address; a loaded parallel suite has hundreds of those for
/// a moment, so they are left out: they are not what a refused connect leaks.
public func unconnectedSocketDescriptors() -> [Int] {
    var listed = Set<String>()
    for table in ["tcp", "tcp6", "udp", "udp6", "unix", "raw", "raw6", "netlink", "packet"] {
        guard let text = try? String(contentsOfFile: "/proc/net/\(table)", encoding: .utf8) else { continue }
        let header = text.split(separator: "\n").first?.split(separator: " ") ?? []
        // The inode column: "inode" in the header (unix and netlink name it "Inode").
        guard let column = header.firstIndex(where: { $0.lowercased() == "inode" }) else { continue }
        for line in text.split(separator: "\n").dropFirst() {
            let fields = line.split(separator: " ")
            // tcp's header names fewer columns than its rows have before the inode.
            let index = table.hasPrefix("tcp") || table.hasPrefix("udp") || table.hasPrefix("raw") ? 9 : column
            if fields.count > index { listed.insert(String(fields[index])) }
        }
    }
    let descriptors = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/fd")) ?? []
    return descriptors.compactMap { name -> Int? in
        guard let target = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/fd/\(name)"),
              target.hasPrefix("socket:["), !listed.contains(String(target.dropFirst(8).dropLast())),
              let fd = Int32(name), hasUnspecifiedLocalAddress(fd)
        else { return nil }
        return Int(fd)
    }
}

/// Whether `fd` is an IPv4 or IPv6 socket bound to no address (0.0.0.0 or ::).
private func hasUnspecifiedLocalAddress(_ fd: Int32) -> Bool {
    var storage = sockaddr_storage()
    var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
    let named = withUnsafeMutablePointer(to: &storage) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    guard named == 0 else { return false }
    switch Int32(storage.ss_family) {
    case AF_INET:
        return withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { $0.pointee.sin_addr.s_addr == 0 }
        }
    case AF_INET6:
        return withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { pointer in
                withUnsafeBytes(of: pointer.pointee.sin6_addr) { $0.allSatisfy { $0 == 0 } }
            }
        }
    default:
        return false
    }
}

/// A port on 127.0.0.1 that nothing listens on (bound, then closed), for a peer to listen on.
/// Another listener may be given it in between; a test that needs connections refused uses
/// ``RefusedPort``.
public func unusedPort() throws -> Int {
    let (fd, port) = try boundSocket()
    close(fd)
    return port
}

/// A port on 127.0.0.1 that refuses connections for as long as this object is open: a socket
/// is bound to it and never listens, so a connect gets a reset, and no other listener can be
/// given the port meanwhile. (A port bound and closed can be: once another test's sink took
/// one and received the messages that were meant to be refused.)
public final class RefusedPort: Sendable {
    public let port: Int
    private let descriptor: Mutex<Int32?>

    public init() throws {
        let (fd, port) = try boundSocket()
        self.port = port
        descriptor = Mutex(fd)
    }

    /// Frees the port (before a check that no socket of the process still uses it).
    public func close() {
        descriptor.withLock { fd in
            if let open = fd { _ = Glibc.close(open) }
            fd = nil
        }
    }

    /// Listens on the port, so that connections complete and wait to be accepted.
    fileprivate func listen() throws {
        try descriptor.withLock { fd in try #require(fd.map { Glibc.listen($0, 16) } == 0) }
    }

    deinit { close() }
}

/// A port on 127.0.0.1 where the kernel completes each connection and nothing ever answers, for
/// as long as this object is open: a socket listens on it and never accepts. A peer that
/// waits for a greeting or a reply waits until its own timeout.
public final class SilentPort: Sendable {
    private let socket: RefusedPort
    public var port: Int { socket.port }

    public init() throws {
        socket = try RefusedPort()
        try socket.listen()
    }

    /// Frees the port; a connection waiting on it is reset.
    public func close() { socket.close() }
}

/// A TCP socket bound to a port the kernel picks on 127.0.0.1, and that port.
private func boundSocket() throws -> (Int32, Int) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    try #require(fd >= 0)
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
            bind(fd, pointer, length) == 0 && getsockname(fd, pointer, &length) == 0
        }
    }
    if !bound { close(fd) }
    try #require(bound)
    return (fd, Int(UInt16(bigEndian: address.sin_port)))
}

/// A listener on 127.0.0.1 whose accept queue is full and never drained: a connect to it
/// gets no answer, so it hangs until its timeout (the kernel drops SYNs on a full queue).
public final class BlackHole: Sendable {
    public let port: Int
    private let listener: Int32
    private let fillers: [Int32]

    /// Makes a black hole and waits briefly (without blocking a thread) for the kernel to
    /// fill its accept queue.
    public static func make() async throws -> BlackHole {
        let hole = try BlackHole()
        try await Task.sleep(for: .milliseconds(50))
        return hole
    }

    private init() throws {
        let (listener, port) = try plainLoopbackListener(backlog: 0)
        self.listener = listener
        self.port = port
        var address = loopbackAddress(port: port)
        let length = socklen_t(MemoryLayout<sockaddr_in>.size)
        var fillers: [Int32] = []
        for _ in 0..<3 {
            let filler = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            _ = withUnsafeMutablePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(filler, $0, length) }
            }
            fillers.append(filler)
        }
        self.fillers = fillers
    }

    deinit {
        for filler in fillers { close(filler) }
        close(listener)
    }
}

/// A TCP socket listening on 127.0.0.1, on a port the kernel picks, made with the plain
/// socket calls rather than through Sluice: for peers that must misbehave in ways Sluice's own
/// transport never would. The caller closes the descriptor.
public func plainLoopbackListener(backlog: Int32) throws -> (descriptor: Int32, port: Int) {
    let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard descriptor >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EINVAL) }
    var address = loopbackAddress(port: 0)
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let listening = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
            bind(descriptor, pointer, length) == 0 && listen(descriptor, backlog) == 0
                && getsockname(descriptor, pointer, &length) == 0
        }
    }
    guard listening else {
        let error = POSIXError(POSIXErrorCode(rawValue: errno) ?? .EINVAL)
        close(descriptor)
        throw error
    }
    return (descriptor, Int(UInt16(bigEndian: address.sin_port)))
}

/// 127.0.0.1:`port` as a `sockaddr_in`.
func loopbackAddress(port: Int) -> sockaddr_in {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = UInt16(port).bigEndian
    return address
}

/// Whether we run in CI, where a missing peer is a failure rather than a skip.
public let isCI = ProcessInfo.processInfo.environment["CI"].map { !$0.isEmpty && $0 != "false" } ?? false

/// Finds an executable on PATH.
public func findExecutable(_ name: String) -> String? {
    let path = ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin"
    for directory in path.split(separator: ":") {
        let candidate = "\(directory)/\(name)"
        if FileManager.default.isExecutableFile(atPath: candidate) { return candidate }
    }
    return nil
}

/// Runs a program to completion and returns its exit status, standard output and error.
/// `input` is written from a thread of its own while the output is read, so neither side
/// can fill a pipe and wait for the other.
@discardableResult
public func run(_ executable: String, _ arguments: [String], input: String? = nil,
                in directory: String? = nil) throws -> (status: Int32, output: String, error: String) {
    let child = try ChildProcess(executable, arguments, in: directory)
    if let input {
        Thread {
            child.writeInput(input.utf8)
            child.closeInput()
        }.start()
    } else {
        child.closeInput()
    }
    let (output, error) = child.readOutputAndError()
    return (child.waitUntilExit(), String(decoding: output, as: UTF8.self), String(decoding: error, as: UTF8.self))
}

/// Runs `body`, which blocks (waits for a process, sleeps), on a thread of its own.
///
/// The concurrency pool has one thread per core: a test that blocks one of them stalls
/// every other test's tasks meanwhile, and a test that measures how soon something reaches
/// a task then sees its task come seconds late. So tests never block a pool thread; they
/// wait here instead.
public func offThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        Thread { continuation.resume(with: Result { try body() }) }.start()
    }
}

/// ``offThread(_:)`` for a body that cannot throw.
public func offThread<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
    await withCheckedContinuation { continuation in
        Thread { continuation.resume(returning: body()) }.start()
    }
}

/// Runs a program on a thread of its own (so waiting for it never blocks the concurrency
/// pool) and returns its exit status, standard output and error.
public func runInBackground(_ executable: String, _ arguments: [String], input: String? = nil,
                            in directory: String? = nil) async throws
    -> (status: Int32, output: String, error: String) {
    try await offThread { try run(executable, arguments, input: input, in: directory) }
}

/// How much longer than usual the tests' deadlines are: `SLUICE_TEST_TIME_SCALE` (1 when
/// unset). scripts/sanitize.sh sets it, since sanitizers slow everything several times over.
public let testTimeScale: Double = ProcessInfo.processInfo.environment["SLUICE_TEST_TIME_SCALE"]
    .flatMap(Double.init).map { max(1, $0) } ?? 1

/// `limit` stretched by ``testTimeScale``.
public func scaled(_ limit: Duration) -> Duration { limit * testTimeScale }

/// Runs `body` and fails the test if it takes longer than `limit` (stretched by
/// ``testTimeScale``), so a hang is a failure, not a stuck CI job.
public func withDeadline<T: Sendable>(_ limit: Duration, _ what: String,
                               _ body: @escaping @Sendable () async throws -> T) async throws -> T {
    let limit = scaled(limit)
    return try await withThrowingTaskGroup(of: T?.self) { group in
        group.addTask { try await body() }
        group.addTask {
            try await Task.sleep(for: limit)
            return nil
        }
        guard let first = try await group.next(), let value = first else {
            group.cancelAll()
            throw DeadlineExceeded(what: what, limit: limit)
        }
        group.cancelAll()
        return value
    }
}

public struct DeadlineExceeded: Error, CustomStringConvertible {
    public let what: String
    public let limit: Duration
    public var description: String { "\(what) did not finish within \(limit)" }
}

/// Finds an external test peer. Outside CI a missing peer is reported in the output and the
/// test returns early; under CI (CI=true) it is a failure, never a silent skip.
public func requirePeer(_ name: String, install: String) -> String? {
    if let path = findExecutable(name) { return path }
    peerUnavailable("test peer '\(name)' is missing (install it with: \(install))")
    return nil
}

/// Says why a peer cannot be used: in the output outside CI (the test then returns early),
/// as a failure under CI.
public func peerUnavailable(_ message: String) {
    if isCI {
        Issue.record(Comment(rawValue: message + "; CI requires every peer"))
    } else {
        FileHandle.standardError.write(Data("SKIPPED: \(message)\n".utf8))
    }
}

/// The package's root directory (for built products such as the sluice command).
public func packageRoot(file: String = #filePath) -> String {
    var url = URL(fileURLWithPath: file)
    while url.path != "/" {
        url.deleteLastPathComponent()
        if FileManager.default.fileExists(atPath: url.appendingPathComponent("Package.swift").path) { return url.path }
    }
    return FileManager.default.currentDirectoryPath
}

/// The built sluice command, or a recorded issue if it is not built: `SLUICE_COMMAND` when
/// set (scripts/sanitize.sh points it at the command built with the sanitizer, so the
/// command-line tests run sanitized code too), else the debug build.
public func sluiceCommand() -> String? {
    let path = ProcessInfo.processInfo.environment["SLUICE_COMMAND"] ?? packageRoot() + "/.build/debug/sluice"
    if FileManager.default.isExecutableFile(atPath: path) { return path }
    Issue.record("build the sluice command first (swift build); scripts/test.sh does")
    return nil
}

/// `command` (an executable and its arguments) to run as a child whose memory a test
/// measures: under AddressSanitizer, through `/usr/bin/env` with the quarantine off, since it
/// holds freed memory back (256 MiB by default) and the measure would be the sanitizer's.
/// Use-after-free is still caught, only not after the memory is reused.
public func memoryMeasuredCommand(_ command: [String]) -> [String] {
    guard let options = ProcessInfo.processInfo.environment["ASAN_OPTIONS"] else { return command }
    return ["/usr/bin/env", "ASAN_OPTIONS=\(options):quarantine_size_mb=0"] + command
}

/// Runs `body`, then `cleanup` — after a throw too; for clean-ups that must be awaited, which
/// `defer` cannot do.
public func withCleanup<T>(_ body: () async throws -> T, cleanup: () async -> Void) async throws -> T {
    let result: T
    do {
        result = try await body()
    } catch {
        await cleanup()
        throw error
    }
    await cleanup()
    return result
}

/// A new directory under the system's temporary directory, named `prefix-` and a UUID, removed
/// with everything in it when the test process exits: a store or a server may still hold
/// files in it when the test that made it returns, and a run leaves nothing behind.
public func makeTestDirectory(_ prefix: String) throws -> String {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("\(prefix)-\(UUID().uuidString)").path
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    let first = testDirectories.withLock { directories in
        directories.append(directory)
        return directories.count == 1
    }
    if first {
        atexit {
            for directory in testDirectories.withLock({ $0 }) { try? FileManager.default.removeItem(atPath: directory) }
        }
    }
    return directory
}

private let testDirectories = Mutex<[String]>([])
