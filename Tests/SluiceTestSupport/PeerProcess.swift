import Foundation
import Testing

/// Python from the peers' virtual environment (scripts/setup.sh makes it), if it can import
/// `modules`. Outside CI a missing peer is reported and the test returns early; under CI it
/// is a failure.
public func peerPython(importing modules: [String]) -> String? {
    let python = packageRoot() + "/.build/peers-venv/bin/python"
    if FileManager.default.isExecutableFile(atPath: python),
       let result = try? run(python, ["-c", "import " + modules.joined(separator: ", ")]), result.status == 0 {
        return python
    }
    let message = "Python peers \(modules.joined(separator: ", ")) are missing (run scripts/setup.sh)"
    if isCI {
        Issue.record(Comment(rawValue: message + "; CI requires every peer"))
    } else {
        FileHandle.standardError.write(Data("SKIPPED: \(message)\n".utf8))
    }
    return nil
}

/// A peer server in a process of its own: started, waited for until it prints its first
/// line, and terminated at the end.
public final class PeerProcess: @unchecked Sendable {
    // `process` and the pipes are set in init and only read afterwards.
    private let process = Process()
    private let output = Pipe()
    private let errors = Pipe()
    /// The first line the peer printed (its "ready" line).
    public let firstLine: String

    /// Starts `executable` and waits (at most 20 s) for its first line of output.
    public init(_ executable: String, _ arguments: [String]) async throws {
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = output
        process.standardError = errors
        process.standardInput = Pipe()
        try process.run()
        let reader = output.fileHandleForReading
        firstLine = try await withDeadline(.seconds(20), "\(executable) to start") {
            try await Task.detached {
                var line = Data()
                while let byte = try reader.read(upToCount: 1), !byte.isEmpty, byte != Data([10]) { line.append(byte) }
                return String(decoding: line, as: UTF8.self)
            }.value
        }
    }

    /// Stops the peer and returns what it wrote to standard error so far.
    ///
    /// SIGTERM first; SIGKILL after half a second, since a child of the test process may
    /// have inherited SIGTERM ignored (seen here: Python peers outlived SIGTERM).
    @discardableResult
    public func stop() -> String {
        if process.isRunning {
            process.terminate()
            let deadline = Date().addingTimeInterval(0.5)
            while process.isRunning, Date() < deadline { usleep(10_000) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
        }
        process.waitUntilExit()
        let handle = errors.fileHandleForReading
        return String(decoding: (try? handle.readToEnd()) ?? Data(), as: UTF8.self)
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }
}
