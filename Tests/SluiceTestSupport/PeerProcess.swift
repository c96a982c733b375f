import Foundation
import SluiceTransport
public import Testing

/// Python from the peers' virtual environment (scripts/setup.sh makes it), if it can import
/// `modules`. Outside CI a missing peer is reported and the test returns early; under CI it
/// is a failure. Each list of modules is checked once per run.
public func peerPython(importing modules: [String]) async -> String? {
    let python = packageRoot() + "/.build/peers-venv/bin/python"
    // No modules: the interpreter alone ("import " with nothing after it is a syntax error,
    // which read as a missing peer).
    let key = modules.isEmpty ? "sys" : modules.joined(separator: ", ")
    let known = importable.withLock { $0[key] }
    let available: Bool
    if let known {
        available = known
    } else {
        let result = FileManager.default.isExecutableFile(atPath: python)
            ? try? await runInBackground(python, ["-c", "import " + key]) : nil
        available = result?.status == 0
        importable.withLock { $0[key] = available }
    }
    if available { return python }
    let message = "Python peers \(key) are missing (run scripts/setup.sh)"
    if isCI {
        Issue.record(Comment(rawValue: message + "; CI requires every peer"))
    } else {
        FileHandle.standardError.write(Data("SKIPPED: \(message)\n".utf8))
    }
    return nil
}

/// What ``peerPython(importing:)`` found, by module list.
private let importable = Locked<[String: Bool]>([:])

/// A peer server in a process of its own: started, waited for until it prints its first
/// line, and stopped at the end.
public final class PeerProcess: Sendable {
    private let child: ChildProcess
    /// The first line the peer printed (its "ready" line).
    public let firstLine: String

    /// Starts `executable` and waits (at most 20 s) for its first line of output. A peer
    /// that exits or stays silent instead throws ``PeerStartError`` with what it wrote to
    /// standard error, so a failed start says why.
    public init(_ executable: String, _ arguments: [String]) async throws {
        let child = try ChildProcess(executable, arguments)
        do {
            firstLine = try await child.firstOutputLine(within: .seconds(20))
        } catch {
            let status = await child.stopped()
            let stderr = await child.outputAndError(quietLimit: .milliseconds(200)).error
            throw PeerStartError(program: executable, status: status, error: String(decoding: stderr, as: UTF8.self))
        }
        self.child = child
    }

    /// Stops the peer (SIGTERM, then SIGKILL after half a second) and returns what it wrote
    /// to standard error; the waiting is done off the concurrency pool.
    @discardableResult
    public func stop() async -> String {
        await offThread { [child] in
            child.stop()
            return String(decoding: child.readOutputAndError(quietLimit: .milliseconds(200)).error, as: UTF8.self)
        }
    }
}

/// A peer that exited, or printed nothing, before its first line.
public struct PeerStartError: Error, CustomStringConvertible {
    public let program: String
    /// Its exit status (128 + the signal when it was killed).
    public let status: Int32
    /// What it wrote to standard error.
    public let error: String
    public var description: String {
        "\(program) did not start (exit status \(status)); it wrote:\n\(error.suffix(4000))"
    }
}

extension Trait where Self == ConditionTrait {
    /// Runs the test only where its independent peers are installed: the `executables` on
    /// PATH and the `python` modules in the peers' virtual environment. Outside CI a test whose
    /// peer is missing shows as skipped, with the reason; under CI (`CI=true`) it always runs,
    /// so a missing peer is a failure there, never a silent skip.
    public static func needsPeers(executables: [String] = [], python: [String] = []) -> Self {
        let names = (executables + python.map { "Python's \($0)" }).joined(separator: ", ")
        return .enabled("needs \(names) (scripts/setup.sh installs them)") {
            if isCI { return true }
            guard executables.allSatisfy({ findExecutable($0) != nil }) else { return false }
            guard !python.isEmpty else { return true }
            let interpreter = packageRoot() + "/.build/peers-venv/bin/python"
            guard FileManager.default.isExecutableFile(atPath: interpreter) else { return false }
            let result = try? await runInBackground(interpreter, ["-c", "import " + python.joined(separator: ", ")])
            return result?.status == 0
        }
    }
}
