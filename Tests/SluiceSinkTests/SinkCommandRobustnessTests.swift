import Foundation
import SluiceCore
import SluiceTestSupport
import SluiceTransport
import Testing

/// `sluice sink` and `sluice bench` as processes, where robustness shows only from outside:
/// the statistics file, SIGTERM, and a process that runs out of file descriptors.
@Suite("sluice sink and bench: signals, files and limits")
struct SinkCommandRobustnessTests {
    /// Starts `sluice sink` with `arguments` (under `sh -c "ulimit -n N; exec …"` when
    /// `descriptorLimit` is given); returns the process and its port.
    private func startSink(_ arguments: [String], descriptorLimit: Int? = nil) async throws -> (ChildProcess, Int)? {
        guard let sluice = sluiceCommand() else { return nil }
        let all = ["sink", "--listen", "127.0.0.1:0", "--loops", "1"] + arguments
        let process: ChildProcess
        if let descriptorLimit {
            let quoted = ([sluice] + all).map { "'\($0)'" }.joined(separator: " ")
            process = try ChildProcess("/bin/sh", ["-c", "ulimit -n \(descriptorLimit) && exec \(quoted)"])
        } else {
            process = try ChildProcess(sluice, all)
        }
        let line = try await process.firstOutputLine(within: .seconds(20))
        guard let port = line.split(separator: ":").last.flatMap({ Int($0) }) else {
            process.stop()
            Issue.record("no port in \(line)")
            return nil
        }
        return (process, port)
    }

    @Test func theStatisticsFileIsNeverSeenHalfWritten() async throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-stats-\(UUID()).json").path
        guard let (sink, _) = try await startSink(["--stats-json", file, "--stats-interval", "0.002"]) else { return }
        defer { sink.stop() }
        let (reads, bad) = await offThread { () -> (Int, [String]) in
            let end = ContinuousClock.now + .seconds(2)
            var reads = 0
            var bad: [String] = []
            while ContinuousClock.now < end {
                guard let data = FileManager.default.contents(atPath: file) else { continue }  // not there yet
                reads += 1
                if (try? JSONSerialization.jsonObject(with: data)) == nil { bad.append(String(decoding: data, as: UTF8.self)) }
            }
            return (reads, bad)
        }
        #expect(reads > 500, "the file was read often enough to catch a rewrite: \(reads)")
        #expect(bad.isEmpty, "\(bad.count) of \(reads) reads found it empty or partial: \(bad.prefix(2))")
        try? FileManager.default.removeItem(atPath: file)
    }

    @Test func sigtermLetsTheMessageInItsContentFinishAnd421sTheRest() async throws {
        guard let (sink, port) = try await startSink(["--store", "memory", "--drain-grace", "20"]) else { return }
        defer { sink.stop() }
        let group = EventLoopGroup(numberOfLoops: 1)
        let address = try SocketAddress(ipAddress: "127.0.0.1", port: port)
        let sending = try await RawSession.open(to: address, on: group.loops[0])
        let idle = try await RawSession.open(to: address, on: group.loops[0])
        try await sending.send("EHLO c\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<a@example.com>\r\nDATA\r\nSubject: x\r\n\r\nhalf")
        #expect(await sending.replies(atLeast: 5).last?.code == .startMailInput)
        try await idle.send("EHLO c\r\n")
        await idle.replies(atLeast: 2)
        kill(sink.pid, SIGTERM)
        await idle.collector.waitForClose()
        #expect(idle.codes.last == 421, "a session between commands is told at once: \(idle.replies)")
        #expect(sink.isRunning, "the sink waits for the message in its content")
        try await sending.send(" and the rest\r\n.\r\n")
        await sending.collector.waitForClose()
        #expect(Array(sending.codes.suffix(2)) == [250, 421], "its 250 came, then the close: \(sending.replies)")
        #expect(await sink.exitStatus() == 0)
        let summary = String(decoding: await sink.outputAndError(quietLimit: .seconds(1)).error, as: UTF8.self)
        #expect(summary.contains("messages 1"), "\(summary)")
        await group.shutdown()
    }

    /// User and system CPU seconds `pid` has used, from /proc.
    private func cpuSeconds(_ pid: Int32) -> Double? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        guard fields.count > 12, let user = Double(fields[11]), let system = Double(fields[12]) else { return nil }
        return (user + system) / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    // In CI this runs in the serial ThreadSanitizer run only. In the parallel runs it is
    // at the mercy of every other test's load: in the parallel ASan run the sanitized sink
    // once kept its first 23 sessions open after their clients had closed (it never saw
    // their EOF), and in one of four parallel CI runs a connect was refused mid-test, which
    // means the sink was not listening, for a reason not yet found (the test now says what
    // became of the sink when that happens). Alone, serially, and outside CI it passes, and
    // it runs in the main suite outside CI so that it is seen.
    @Test(.disabled(if: Self.inParallelCIRun, "runs in CI's serial ThreadSanitizer run; see the comment"))
    func aSinkOutOfDescriptorsPausesAcceptingInsteadOfSpinning() async throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-emfile-\(UUID()).json").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        guard let (sink, port) = try await startSink(["--stats-json", file, "--stats-interval", "0.2"], descriptorLimit: 40)
        else { return }
        defer { sink.stop(grace: .seconds(5)) }
        let group = EventLoopGroup(numberOfLoops: 1)
        let address = try SocketAddress(ipAddress: "127.0.0.1", port: port)
        /// Opens a session; if the sink refused it, says what became of the sink (whether it
        /// still ran, and what it wrote on stderr) instead of a bare ECONNREFUSED.
        func open(_ what: String) async throws -> RawSession {
            do {
                return try await RawSession.open(to: address, on: group.loops[0])
            } catch {
                let running = sink.isRunning
                await sink.stopped(grace: .seconds(5))
                let log = String(decoding: await sink.outputAndError(quietLimit: .seconds(1)).error, as: UTF8.self)
                Issue.record("\(what): \(error); the sink \(running ? "ran" : "had exited"): \(log.suffix(3000))")
                throw error
            }
        }
        var sessions: [RawSession] = []
        for index in 0..<60 { sessions.append(try await open("session \(index) of the flood")) }
        let before = cpuSeconds(sink.pid)
        try await Task.sleep(for: .seconds(2))
        let after = cpuSeconds(sink.pid)
        let greeted = sessions.filter { !$0.replies.isEmpty }.count
        #expect(greeted > 0 && greeted < 60, "some sessions were served, the rest wait: \(greeted) of 60")
        // Paused, it leaves room: libdispatch's worker monitor opens /proc/<tid>/stat every
        // second and crashes the process (SIGILL) when it cannot. The level it rests at is
        // the fewest of several looks: a single look can land while the sink briefly holds
        // one more (its statistics file being written every 0.2 s, or a resume that tries
        // the spares and lets them go); a ThreadSanitizer CI run once saw 33.
        var descriptors = 40
        for _ in 0..<7 {
            let open = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(sink.pid)/fd").count) ?? 40
            descriptors = min(descriptors, open)
            try await Task.sleep(for: .milliseconds(70))
        }
        #expect(descriptors <= 40 - 8, "a sink that cannot accept leaves descriptors free: \(descriptors) of 40 open")
        if let before, let after {
            #expect(after - before < 0.5, "the sink idles while it cannot accept: \(after - before) s of CPU in 2 s")
        } else {
            Issue.record("cannot read the sink's CPU time from /proc")
        }
        // Once descriptors are free again, a new client is served.
        for session in sessions { await session.connection.close() }
        sessions = []
        let late = try await open("a client after the flood")
        try await late.send("EHLO c\r\n")
        let lateReplies = await late.replies(atLeast: 2)
        if lateReplies.map(\.code.rawValue) != [220, 250] {
            let running = sink.isRunning
            await sink.stopped(grace: .seconds(5))
            let log = String(decoding: await sink.outputAndError(quietLimit: .seconds(1)).error, as: UTF8.self)
            Issue.record("a client after the flood got \(lateReplies); the sink \(running ? "ran" : "had exited"): \(log.suffix(2000))")
        }
        await late.connection.close()
        // The statistics file too needs a descriptor: it is written again once they are free.
        var pauses = 0
        let deadline = ContinuousClock.now + scaled(.seconds(5))
        while pauses == 0, ContinuousClock.now < deadline {
            let statistics = FileManager.default.contents(atPath: file)
                .flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] }
            pauses = statistics?["acceptPauses"] as? Int ?? 0
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(pauses > 0, "the pauses are counted in the statistics")
        await group.shutdown()
        await sink.stopped(grace: .seconds(5))
        let log = String(decoding: await sink.outputAndError(quietLimit: .seconds(1)).error, as: UTF8.self)
        let warnings = log.split(separator: "\n").filter { $0.contains("accepting paused") || $0.contains("accept failed") }
        #expect(!warnings.isEmpty && warnings.count <= 3, "logged once per interval, not per failed accept: \(warnings.count) lines")
    }

    /// Whether this is one of CI's parallel runs (the main suite, or AddressSanitizer's), not
    /// its serial ThreadSanitizer run. `scripts/sanitize.sh` says which sanitizer runs
    /// (it exports both sanitizers' options whichever it is).
    static var inParallelCIRun: Bool {
        let environment = ProcessInfo.processInfo.environment
        switch environment["SLUICE_SANITIZER"] {
        case "thread": return false
        case "address": return true
        default: return environment["CI"] == "true"
        }
    }

    @Test func aRepliesFileThatDoesNotParseIsAUsageErrorNamingTheLine() async throws {
        guard let sluice = sluiceCommand() else { return }
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-replies-\(UUID()).txt").path
        defer { try? FileManager.default.removeItem(atPath: file) }
        try "gmail.test 2% 421 4.7.0 Rate limited\nyahoo.test often 550 No\n".write(toFile: file, atomically: true, encoding: .utf8)
        let result = try await runInBackground(sluice, ["sink", "--listen", "127.0.0.1:0", "--replies", file])
        #expect(result.status == 64, "\(result.output) \(result.error)")
        #expect(result.error.contains("line 2") && result.error.contains("'often' is not a rate"), "\(result.error)")
        let greylist = try await runInBackground(sluice, ["sink", "--listen", "127.0.0.1:0", "--greylist", "-1"])
        #expect(greylist.status == 64 && greylist.error.contains("--greylist"), "\(greylist.error)")
    }

    @Test func benchRefusesMoreConnectionsThanItsDescriptorsAllow() async throws {
        guard let sluice = sluiceCommand() else { return }
        let result = try await runInBackground(
            "/bin/sh", ["-c", "ulimit -n 200 && exec '\(sluice)' bench --connections 1000 --messages 10"])
        #expect(result.status == 64, "\(result.output) \(result.error)")
        #expect(result.error.contains("--connections 1000") && result.error.contains("200"), "\(result.error)")
        #expect(!result.output.contains("msg/s"), "nothing was run")
    }
}
