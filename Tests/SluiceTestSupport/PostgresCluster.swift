import Foundation
import Testing

/// A private PostgreSQL cluster for this test process: `initdb` in a temporary directory, the
/// server on a Unix socket there (no TCP port), stopped and its directory removed by a
/// watchdog once this process is gone. `initdb` refuses to run as root, so as root it runs as the `postgres` user.
///
/// Each test takes a database of its own (``createDatabase()``).
public final class PostgresCluster: Sendable {
    /// The directory holding the server's socket.
    public let socketDirectory: String
    /// The port in the socket's name.
    public let port: Int
    private let binaries: String
    /// The watchdog shell that runs the server (kept: dropping it would kill it).
    private let watchdog: ChildProcess

    private static let started = Task<Result<PostgresCluster, any Error>?, Never> {
        guard let binaries = findBinaries() else {
            return nil
        }
        do {
            return .success(try await PostgresCluster.start(binaries: binaries))
        } catch {
            return .failure(error)
        }
    }

    /// The process's cluster, started on first use; nil (said in the output, or a failure
    /// under CI) when PostgreSQL's server is not installed.
    public static func shared() async throws -> PostgresCluster? {
        switch await started.value {
        case .success(let cluster)?: return cluster
        case .failure(let error)?: throw error
        case nil:
            peerUnavailable("PostgreSQL's server (initdb, postgres) is missing; install it with: apt-get install postgresql")
            return nil
        }
    }

    private init(socketDirectory: String, port: Int, binaries: String, watchdog: ChildProcess) {
        self.socketDirectory = socketDirectory
        self.port = port
        self.binaries = binaries
        self.watchdog = watchdog
    }

    /// The directory of `initdb` and `postgres`: Debian keeps them out of PATH.
    private static func findBinaries() -> String? {
        let versions = (try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? []
        for version in versions.sorted(by: { (Int($0) ?? 0) > (Int($1) ?? 0) }) {
            let directory = "/usr/lib/postgresql/\(version)/bin"
            if FileManager.default.isExecutableFile(atPath: "\(directory)/initdb") { return directory }
        }
        if let initdb = findExecutable("initdb") { return (initdb as NSString).deletingLastPathComponent }
        return nil
    }

    private static func start(binaries: String) async throws -> PostgresCluster {
        let root = "/tmp/sluice-pg-\(UUID().uuidString.prefix(8))"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let asRoot = getuid() == 0
        if asRoot {
            // Owned by postgres, so that initdb and the server (run as postgres) can use it.
            guard let user = getpwnam("postgres") else {
                throw ClusterError(message: "running as root, and there is no postgres user to run initdb as")
            }
            chown(root, user.pointee.pw_uid, user.pointee.pw_gid)
        }
        let port = try unusedPort()
        func command(_ arguments: [String]) -> (String, [String]) {
            asRoot ? ("/usr/sbin/runuser", ["-u", "postgres", "--"] + arguments) : (arguments[0], Array(arguments.dropFirst()))
        }
        let (initdb, initArguments) = command(["\(binaries)/initdb", "-D", "\(root)/data", "-U", "postgres", "-A", "trust",
                                               "-E", "UTF8", "--no-sync", "--no-instructions"])
        let initialized = try await offThread { try run(initdb, initArguments) }
        guard initialized.status == 0 else {
            throw ClusterError(message: "initdb failed (\(initialized.status)): \(initialized.error)")
        }
        // The server runs under a watchdog that stops it once this process is gone, so that no
        // test run leaves a server behind.
        let server = [
            "\(binaries)/postgres", "-D", "\(root)/data", "-k", root, "-p", "\(port)", "-c", "listen_addresses=",
            "-c", "max_connections=200", "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
        ].map { "'\($0)'" }.joined(separator: " ")
        let script = "\(server) >'\(root)/server.log' 2>&1 & server=$!; "
            + "while [ -d /proc/\(getpid()) ] && kill -0 $server 2>/dev/null; do sleep 0.3; done; "
            + "kill -INT $server; wait $server; rm -rf '\(root)'"
        let (shell, shellArguments) = command(["/bin/sh", "-c", script])
        let watchdog = try ChildProcess(shell, shellArguments, input: .null, output: .null, error: .null)
        let cluster = PostgresCluster(socketDirectory: root, port: port, binaries: binaries, watchdog: watchdog)
        let deadline = ContinuousClock.now + .seconds(60)
        while ContinuousClock.now < deadline {
            let ready = try await offThread {
                try run("\(binaries)/pg_isready", ["-q", "-h", root, "-p", "\(port)", "-U", "postgres"])
            }
            if ready.status == 0 { return cluster }
            try await Task.sleep(for: .milliseconds(100))
        }
        let log = (try? String(contentsOfFile: "\(root)/server.log", encoding: .utf8)) ?? ""
        throw ClusterError(message: "the PostgreSQL server did not start within 60 s: \(log)")
    }

    /// A new, empty database; returns its libpq connection string.
    public func createDatabase() async throws -> String {
        let name = "t_" + UUID().uuidString.prefix(12).lowercased().replacingOccurrences(of: "-", with: "")
        let created = try await offThread {
            try run("\(self.binaries)/createdb", ["-h", self.socketDirectory, "-p", "\(self.port)", "-U", "postgres", name])
        }
        guard created.status == 0 else { throw ClusterError(message: "createdb failed: \(created.error)") }
        return conninfo(database: name)
    }

    /// The connection string for `database`.
    public func conninfo(database: String) -> String {
        "host=\(socketDirectory) port=\(port) user=postgres dbname=\(database)"
    }

    /// Runs `psql` with `sql` against `database`; returns its output.
    public func psql(_ sql: String, database: String) async throws -> String {
        let result = try await offThread {
            try run("\(self.binaries)/psql", ["-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", self.socketDirectory,
                                              "-p", "\(self.port)", "-U", "postgres", "-d", database, "-c", sql])
        }
        guard result.status == 0 else { throw ClusterError(message: "psql failed: \(result.error)") }
        return result.output
    }

    struct ClusterError: Error, CustomStringConvertible {
        let message: String
        var description: String { message }
    }
}
