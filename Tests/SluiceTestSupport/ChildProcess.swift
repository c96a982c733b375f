import CSpawn
import Foundation
import SluiceTransport

/// A program running in a child process, started with `posix_spawn`.
///
/// The tests do not use Foundation's `Process`: in Swift 6.3.1 its `run()` on Linux copies a
/// whole 256-byte `d_name` out of each `/proc/self/fd` entry and crashes now and then when
/// the test process has many descriptors open, as the socket tests do
/// (swiftlang/swift-corelibs-foundation#5472; it killed a CI run here). This starts the child
/// with every descriptor above 2 closed, its signal mask cleared and every signal at its
/// default disposition, so a child never inherits a socket or an ignored SIGTERM.
public final class ChildProcess: @unchecked Sendable {
    /// Where one of the child's standard streams goes.
    public enum Stream: Sendable {
        /// A pipe to this process.
        case pipe
        /// /dev/null.
        case null
    }

    /// The child's process ID.
    public let pid: Int32
    // Each of these is -1 when the stream is not piped; a pipe end is closed only by its
    // owner (`closeInput`, `readOutputLine`'s caller, deinit).
    private let input = Locked<Int32>(-1)
    private let outputDescriptor: Int32
    private let errorDescriptor: Int32
    /// The exit status once the child has been reaped.
    private let reaped = Locked<Int32?>(nil)

    /// Starts `executable` (an absolute path) with `arguments`, in `directory` if given.
    public init(_ executable: String, _ arguments: [String], in directory: String? = nil,
                input inputStream: Stream = .pipe, output: Stream = .pipe, error: Stream = .pipe) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        var parentEnds: [Int32] = [-1, -1, -1]
        var childEnds: [Int32] = []
        defer { for fd in childEnds { close(fd) } }
        for (target, stream) in [inputStream, output, error].enumerated() {
            switch stream {
            case .null:
                posix_spawn_file_actions_addopen(&actions, Int32(target), "/dev/null", target == 0 ? O_RDONLY : O_WRONLY, 0)
            case .pipe:
                var ends: [Int32] = [-1, -1]
                guard cspawn_pipe_cloexec(&ends) == 0 else {
                    for fd in parentEnds where fd >= 0 { close(fd) }
                    throw SpawnError(program: executable, errno: errno)
                }
                let (parentEnd, childEnd) = target == 0 ? (ends[1], ends[0]) : (ends[0], ends[1])
                parentEnds[target] = parentEnd
                childEnds.append(childEnd)
                posix_spawn_file_actions_adddup2(&actions, childEnd, Int32(target))
            }
        }
        cspawn_addclosefrom(&actions, 3)
        if let directory { cspawn_addchdir(&actions, directory) }

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        var allSignals = sigset_t()
        sigfillset(&allSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        posix_spawnattr_setsigdefault(&attributes, &allSignals)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))

        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { for argument in argv { free(argument) } }
        var pid: pid_t = 0
        let status = posix_spawn(&pid, executable, &actions, &attributes, argv, environ)
        guard status == 0 else {
            for fd in parentEnds where fd >= 0 { close(fd) }
            throw SpawnError(program: executable, errno: status)
        }
        self.pid = pid
        input.withLock { $0 = parentEnds[0] }
        outputDescriptor = parentEnds[1]
        errorDescriptor = parentEnds[2]
    }

    deinit {
        if isRunning {
            Glibc.kill(pid, SIGKILL)
            _ = waitUntilExit()
        }
        closeInput()
        for fd in [outputDescriptor, errorDescriptor] where fd >= 0 { close(fd) }
    }

    // MARK: Standard streams

    /// Writes all of `bytes` to the child's standard input (blocking); false if the child
    /// stopped reading.
    @discardableResult
    public func writeInput(_ bytes: some Collection<UInt8>) -> Bool {
        let fd = input.withLock { $0 }
        guard fd >= 0 else { return false }
        return Array(bytes).withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let written = write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if written < 0, errno == EINTR { continue }
                guard written > 0 else { return false }
                offset += written
            }
            return true
        }
    }

    /// Closes the child's standard input, so it reads end of file.
    public func closeInput() {
        input.withLock { fd in
            if fd >= 0 { close(fd) }
            fd = -1
        }
    }

    /// The next line of the child's standard output, without its LF (blocking); nil at end
    /// of file with nothing read.
    public func readOutputLine() -> String? {
        var line: [UInt8] = []
        var byte: UInt8 = 0
        while true {
            let count = read(outputDescriptor, &byte, 1)
            if count < 0, errno == EINTR { continue }
            guard count == 1 else { return line.isEmpty ? nil : String(decoding: line, as: UTF8.self) }
            if byte == UInt8(ascii: "\n") { return String(decoding: line, as: UTF8.self) }
            line.append(byte)
        }
    }

    /// The first line of standard output, waited for on a thread of its own (so the
    /// concurrency pool never blocks); the child is killed if it prints none within `limit`.
    public func firstOutputLine(within limit: Duration) async throws -> String {
        let line: String?
        do {
            line = try await withDeadline(limit, "the first line of process \(pid)") {
                await offThread { self.readOutputLine() }
            }
        } catch {
            Glibc.kill(pid, SIGKILL)
            throw error
        }
        guard let line else { throw SpawnError(program: "process \(pid)", errno: EPIPE) }
        return line
    }

    /// Reads standard output and standard error to their ends, both at once (so a child
    /// that fills one pipe while we wait on the other cannot deadlock), or until nothing has
    /// come for `quietLimit` (for a child whose own children may hold the pipes open).
    public func readOutputAndError(quietLimit: Duration? = nil) -> (output: [UInt8], error: [UInt8]) {
        let timeout = quietLimit.map { Int32($0.components.seconds * 1000 + $0.components.attoseconds / 1_000_000_000_000_000) } ?? -1
        var collected: [[UInt8]] = [[], []]
        var open = [outputDescriptor, errorDescriptor]
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while open.contains(where: { $0 >= 0 }) {
            var polled = open.map { pollfd(fd: $0, events: Int16(POLLIN), revents: 0) }
            let ready = poll(&polled, nfds_t(polled.count), timeout)
            if ready < 0, errno == EINTR { continue }
            guard ready > 0 else { break }
            for index in polled.indices where polled[index].fd >= 0 && polled[index].revents != 0 {
                let count = read(polled[index].fd, &buffer, buffer.count)
                if count > 0 {
                    collected[index].append(contentsOf: buffer[..<count])
                } else if count == 0 || errno != EINTR {
                    open[index] = -1
                }
            }
        }
        return (collected[0], collected[1])
    }

    // MARK: Lifetime

    /// Whether the child has not exited yet (it is reaped when it has).
    public var isRunning: Bool {
        reaped.withLock { status in
            if status != nil { return false }
            var raw: Int32 = 0
            let result = waitpid(pid, &raw, WNOHANG)
            guard result == pid else { return result == 0 }
            status = Self.exitStatus(raw)
            return false
        }
    }

    /// A memory figure of the child in bytes, from the `field` line of /proc/PID/status
    /// (`VmRSS:`, `VmHWM:`); nil once it has been reaped, or when it cannot be read.
    public func memoryReading(_ field: String) -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = text.split(separator: "\n").first(where: { $0.hasPrefix(field) }),
              let kilobytes = Int(line.split(separator: " ").dropFirst().first ?? "") else { return nil }
        return kilobytes * 1024
    }

    /// Starts reading the child's peak resident memory (VmHWM) every few milliseconds until
    /// it exits, on a thread of its own; the function returned gives the last reading before
    /// then (nil if there was none). Started at once and off the concurrency pool: a reader
    /// that was a task waited behind the busy pool past a short child's exit, and read
    /// nothing. Not the `ru_maxrss` its reaping gives: a child that posix_spawn starts shares
    /// this process's memory until its exec, and Linux keeps that peak as the child's (it read
    /// 104 MiB for a 40 MiB child).
    public func peakResidentBytesSampler() -> @Sendable () async -> Int? {
        let peak = Locked<Int?>(nil)
        let finished = DispatchSemaphore(value: 0)
        Thread { [self] in
            while isRunning {
                if let reading = memoryReading("VmHWM:") { peak.withLock { $0 = max($0 ?? 0, reading) } }
                usleep(5_000)
            }
            finished.signal()
        }.start()
        return {
            await offThread {
                finished.wait()
                finished.signal()
                return peak.withLock { $0 }
            }
        }
    }

    /// Waits for the child to exit (blocking) and returns its exit status: the code it
    /// exited with, or 128 + the signal that killed it.
    public func waitUntilExit() -> Int32 {
        while isRunning { usleep(2_000) }
        return reaped.withLock { $0 } ?? -1
    }

    /// Waits for the child to exit on a thread of its own and returns its exit status.
    public func exitStatus() async -> Int32 {
        await offThread { self.waitUntilExit() }
    }

    /// ``stop(grace:)`` waited for on a thread of its own: from an async test, since the
    /// concurrency pool has two threads here and a test blocking one starves every timer test
    /// running beside it.
    @discardableResult
    public func stopped(grace: Duration = .milliseconds(500)) async -> Int32 {
        await offThread { self.stop(grace: grace) }
    }

    /// ``readOutputAndError(quietLimit:)`` waited for on a thread of its own (see ``stopped(grace:)``).
    public func outputAndError(quietLimit: Duration? = nil) async -> (output: [UInt8], error: [UInt8]) {
        await offThread { self.readOutputAndError(quietLimit: quietLimit) }
    }

    /// Sends SIGTERM, then SIGKILL if the child is still there after `grace`, and reaps it.
    @discardableResult
    public func stop(grace: Duration = .milliseconds(500)) -> Int32 {
        if isRunning {
            Glibc.kill(pid, SIGTERM)
            let deadline = ContinuousClock.now + grace
            while isRunning, ContinuousClock.now < deadline { usleep(5_000) }
            if isRunning { Glibc.kill(pid, SIGKILL) }
        }
        return waitUntilExit()
    }

    private static func exitStatus(_ raw: Int32) -> Int32 {
        let signal = raw & 0x7f
        return signal == 0 ? (raw >> 8) & 0xff : 128 + signal
    }
}

/// A program that could not be started.
public struct SpawnError: Error, CustomStringConvertible {
    public let program: String
    public let errno: Int32
    public var description: String { "cannot run \(program): \(String(cString: strerror(errno)))" }
}
