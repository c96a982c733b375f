import Foundation
import Sluice
import SluiceSink
import SluiceTestSupport
import Testing

/// `sluice bench` as a user runs it: a process, its exit status, its JSON and its progress.
@Suite("sluice bench")
struct BenchCommandTests {
    static func bench(_ arguments: [String]) async throws -> (status: Int32, output: String, error: String)? {
        guard let sluice = sluiceCommand() else { return nil }
        return try await withDeadline(scaled(.seconds(120)), "sluice bench") {
            try await runInBackground(sluice, ["bench"] + arguments)
        }
    }

    static func object(_ text: String) throws -> [String: Any] {
        try #require(JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
    }

    @Test func theEmbeddedSinkRunReportsEveryMeasureAsJSON() async throws {
        guard let run = try await Self.bench(["--messages", "3000", "--connections", "4", "--size", "2048", "--json"])
        else { return }
        #expect(run.status == 0, "\(run.error)")
        let result = try Self.object(run.output)
        #expect(result["messages"] as? Int == 3000)
        #expect((result["outcomes"] as? [String: Int]) == ["accepted": 3000])
        #expect(result["size"] as? Int == 2048)
        #expect(result["connections"] as? Int == 4)
        #expect((result["messagesPerSecond"] as? Double ?? 0) > 0)
        #expect((result["megabytesPerSecond"] as? Double ?? 0) > 0)
        let latency = try #require(result["latencyMilliseconds"] as? [String: Double])
        #expect(Set(latency.keys) == ["p50", "p90", "p99", "max"])
        #expect(latency["p50"]! <= latency["p99"]! && latency["p99"]! <= latency["max"]!)
        #expect((result["clientCPUMicrosecondsPerMessage"] as? Double ?? 0) > 0)
        #expect(result["sinkCPUSeconds"] != nil, "the embedded sink's CPU is reported apart")
    }

    @Test func offATerminalThereIsNoLiveLine() async throws {
        // stderr is a pipe here: the result on stdout, nothing on stderr.
        guard let run = try await Self.bench(["--duration", "2", "--rate", "300", "--connections", "2"]) else { return }
        #expect(run.status == 0, "\(run.error)")
        #expect(run.error.isEmpty, "\(run.error)")
        #expect(run.output.contains("outcomes:  accepted"))
        #expect(run.output.contains("client CPU:"))
        #expect(run.output.contains("latency:   p50"))
    }

    @Test func onATerminalTheLiveLineRedrawsInPlaceWithTheLastSecondAndOpenConnections() async throws {
        guard let python = await peerPython(importing: ["pty"]), let sluice = sluiceCommand() else { return }
        // Python's pty module gives the bench a pseudo-terminal; what it drew is collected.
        let script = """
            import json, os, pty, subprocess, sys
            master, slave = pty.openpty()
            child = subprocess.Popen(sys.argv[1:], stdin=slave, stdout=slave, stderr=slave, close_fds=True)
            os.close(slave)
            out = bytearray()
            while True:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    break  # EIO: the child and its terminal are gone
                if not data:
                    break
                out.extend(data)
            print(json.dumps({"status": child.wait(), "out": out.decode("utf-8", "replace")}))
            """
        let run = try await withDeadline(.seconds(60), "the bench on a pseudo-terminal") {
            try await runInBackground(python, ["-c", script, sluice, "bench", "--duration", "3", "--rate", "400", "--connections", "2"])
        }
        #expect(run.status == 0, "\(run.error)")
        let object = try Self.object(run.output)
        #expect(object["status"] as? Int == 0)
        let drawn = try #require(object["out"] as? String)
        let redraws = drawn.components(separatedBy: "\r\u{1B}[2K").dropFirst().map { $0 }
        #expect(redraws.count >= 5, "redrawn in place several times a second: \(redraws.count)")
        let lines = redraws.filter { $0.hasPrefix("[") }
        #expect(lines.contains { $0.contains(" msg/s now") && $0.contains("  p99 ") && $0.contains(" ms  errors 0  open ") },
                "the last second's rate and p99, errors and open connections: \(lines.suffix(2))")
        #expect(lines.allSatisfy { !$0.contains("\n") }, "each draw stays one line")
        let open = lines.compactMap { $0.components(separatedBy: "open ").last?.split(separator: " ").first.flatMap { Int($0) } }
        #expect(!open.isEmpty && open.allSatisfy { (0...2).contains($0) } && open.contains { $0 >= 1 }, "at most two, opened as needed: \(open)")
        #expect(drawn.contains("outcomes:  accepted"), "the result follows the cleared line")
    }

    @Test func theOpenModelPacesArrivalsAndSaysSo() async throws {
        guard let run = try await Self.bench(["--messages", "300", "--rate", "150", "--connections", "2", "--json"])
        else { return }
        #expect(run.status == 0, "\(run.error)")
        let result = try Self.object(run.output)
        let model = try #require(result["model"] as? [String: Any])
        #expect(model["name"] as? String == "open")
        #expect(model["rate"] as? Double == 150)
        // Every arrival is sent or, on a machine slowed past a second's lateness (the
        // sanitizers), counted as dropped; whatever is sent is accepted.
        let sent = try #require(result["messages"] as? Int)
        #expect(sent + (model["dropped"] as? Int ?? -1) == 300)
        #expect((result["outcomes"] as? [String: Int]) == ["accepted": sent])
        // 300 arrivals at 150 a second take two seconds, however fast the sink is.
        #expect((result["elapsedSeconds"] as? Double ?? 0) >= 1.95, "\(result["elapsedSeconds"] ?? "")")
    }

    /// A server that stalls: the closed model slows its arrivals to the server's pace and
    /// reports the latency of what it sent; the open model keeps arriving, counts from each
    /// message's intended start (so the stall shows), and counts what could not start.
    @Test func aStalledServerShowsInTheOpenModelsLatencyAndDrops() async throws {
        let sink = try await startSink { $0.replyDelay = .fixed(.milliseconds(300)) }
        guard let run = try await Self.bench([
            "--target", "127.0.0.1:\(sink.localAddress.port)", "--security", "none", "--connections", "1",
            "--in-flight", "2", "--rate", "50", "--messages", "100", "--max-lateness", "0.5", "--json",
        ]) else { return }
        #expect(run.status == 0, "\(run.error)")
        let result = try Self.object(run.output)
        let model = try #require(result["model"] as? [String: Any])
        let dropped = try #require(model["dropped"] as? Int)
        let sent = try #require(result["messages"] as? Int)
        #expect(sent + dropped == 100, "every arrival is sent or counted as dropped")
        #expect(dropped > 50, "the server takes a few a second of the 50 arriving: \(dropped) dropped")
        let latency = try #require(result["latencyMilliseconds"] as? [String: Double])
        #expect(latency["p50"]! >= 300, "latency counts the wait to start as well: \(latency)")
        await sink.shutdown()
    }

    /// A run of a duration has no message count (Int.max); dropping late arrivals in it once
    /// overflowed that count and crashed the command.
    @Test func aRunOfADurationThatDropsArrivalsEndsCleanly() async throws {
        let sink = try await startSink { $0.replyDelay = .fixed(.milliseconds(200)) }
        guard let run = try await Self.bench([
            "--target", "127.0.0.1:\(sink.localAddress.port)", "--security", "none", "--connections", "1",
            "--in-flight", "1", "--rate", "200", "--duration", "2", "--max-lateness", "0.1", "--json",
        ]) else { return }
        #expect(run.status == 0, "\(run.error)")
        let model = try #require(try Self.object(run.output)["model"] as? [String: Any])
        #expect((model["dropped"] as? Int ?? 0) > 100, "\(model)")
        await sink.shutdown()
    }

    @Test func aTimeSeriesHasALineForEachSecond() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-series-\(UUID().uuidString).jsonl").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        guard let run = try await Self.bench(["--messages", "300", "--rate", "100", "--connections", "2", "--json",
                                               "--timeseries", path])
        else { return }
        #expect(run.status == 0, "\(run.error)")
        let sent = try #require(try Self.object(run.output)["messages"] as? Int)
        let lines = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n")
        let seconds = try lines.map { try Self.object(String($0)) }
        #expect(seconds.map { $0["second"] as? Int } == Array(0..<seconds.count), "one line a second, in order")
        #expect(seconds.count >= 3, "300 arrivals at 100 a second take three seconds")
        #expect(seconds.reduce(0) { $0 + ($1["messages"] as? Int ?? 0) } == sent, "every report is in one second")
        #expect(seconds.reduce(0) { $0 + ($1["failed"] as? Int ?? 1) } == 0)
        // How many fall in each second depends on the machine's pace (the sanitizers slow it
        // several times over), so only the shape of each line is checked here.
        for second in seconds where (second["messages"] as? Int ?? 0) > 0 {
            #expect((second["latencyMilliseconds"] as? [String: Double])?["p99"].map { $0 > 0 } == true, "\(second)")
        }
    }

    @Test func aTimeSeriesNamedCSVIsCSVThatPythonReads() async throws {
        guard let python = await peerPython(importing: ["csv"]) else { return }
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-series-\(UUID().uuidString).csv").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        guard let run = try await Self.bench(["--messages", "300", "--rate", "150", "--max-lateness", "600", "--connections", "2",
                                               "--timeseries", path])
        else { return }
        #expect(run.status == 0, "\(run.error)")
        let script = """
            import csv, json, sys
            rows = list(csv.DictReader(open(sys.argv[1], newline="")))
            print(json.dumps({"columns": list(rows[0].keys()), "messages": sum(int(r["messages"]) for r in rows),
                              "failed": sum(int(r["failed"]) for r in rows), "p99": [float(r["p99_ms"]) for r in rows],
                              "connections": [int(r["connections"]) for r in rows], "seconds": [int(r["second"]) for r in rows]}))
            """
        let read = try await runInBackground(python, ["-c", script, path])
        #expect(read.status == 0, "\(read.error)")
        let table = try Self.object(read.output)
        #expect(table["columns"] as? [String] == ["second", "messages", "accepted", "failed", "p50_ms", "p90_ms", "p99_ms", "max_ms",
                                                  "connections"])
        #expect(table["messages"] as? Int == 300 && table["failed"] as? Int == 0)
        let seconds = try #require(table["seconds"] as? [Int])
        #expect(seconds == Array(0..<seconds.count))
        #expect((table["connections"] as? [Int])?.allSatisfy { (1...2).contains($0) } == true, "\(table["connections"] ?? "")")
    }

    @Test func openStagesSendTheirArrivalsAndTheHoldShowsInTheTimeSeries() async throws {
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-stages-\(UUID().uuidString).jsonl").path
        defer { try? FileManager.default.removeItem(atPath: path) }
        guard let run = try await Self.bench(["--stages", "1s:0-200,1s:200,1s:200-0", "--connections", "2", "--json",
                                               "--timeseries", path])
        else { return }
        #expect(run.status == 0, "\(run.error)")
        let result = try Self.object(run.output)
        let model = try #require(result["model"] as? [String: Any])
        #expect(model["name"] as? String == "open" && model["stages"] as? String == "1s:0-200,1s:200,1s:200-0", "\(model)")
        let dropped = try #require(model["dropped"] as? Int)
        // The ramps bring 100 each and the hold 200: every one is sent or counted as dropped.
        #expect((result["messages"] as? Int ?? 0) + dropped == 400, "\(result)")
        // Three seconds of stages, then the last replies; left to its 100,000 messages at these
        // rates the run would take minutes. Beside the whole suite on two cores it has been 3.7 s.
        #expect((result["elapsedSeconds"] as? Double ?? 0) < 6 * testTimeScale, "the stages end the run")
        let seconds = try String(contentsOfFile: path, encoding: .utf8).split(separator: "\n").map { try Self.object(String($0)) }
        let counts = seconds.map { $0["messages"] as? Int ?? 0 }
        // The sanitizers slow the machine several times over, and then arrivals run late; the
        // profile's shape is checked only at full speed.
        // On a loaded machine (every suite starting at once on two cores) dozens of arrivals
        // of one second land in the next: 163 in the hold once, and [67, 168, 165] another
        // time, the ramp down carrying the hold's late third. The bands allow for it; the
        // hold must still send more than the ramp up. A machine further behind than that
        // (once [59, 80, 144, 117]: the run's end spilling a second late) says nothing about
        // the profile, only about the machine.
        let spilled = counts.dropFirst(3).reduce(0, +)
        if testTimeScale == 1, dropped == 0, counts.count >= 3, spilled <= 40 {
            #expect((140...260).contains(counts[1]), "the hold at 200 a second: \(counts)")
            #expect((50...200).contains(counts[0]) && (50...200).contains(counts[2]), "each ramp brings 100: \(counts)")
            #expect(counts[1] > counts[0], "the hold sends more than the ramp up: \(counts)")
        }
    }

    @Test func closedStagesSetHowManyAreInFlight() async throws {
        // Replies held 100 ms: in flight N, about 10·N messages a second.
        let sink = try await startSink { $0.replyDelay = .fixed(.milliseconds(100)) }
        guard let run = try await Self.bench(["--target", "127.0.0.1:\(sink.localAddress.port)", "--security", "none",
                                               "--stages", "1s:2,1s:8", "--model", "closed", "--connections", "8", "--json"])
        else { return }
        #expect(run.status == 0, "\(run.error)")
        let result = try Self.object(run.output)
        let model = try #require(result["model"] as? [String: Any])
        #expect(model["name"] as? String == "closed" && model["inFlight"] as? Int == 8 && model["stages"] as? String == "1s:2,1s:2-8", "D:V ramps from where the stage before ended: \(model)")
        let messages = try #require(result["messages"] as? Int)
        // At most 2 in flight for 1 s, then 2 rising to 8 (a reply takes over 100 ms, and pipelined
        // replies come in the sink's order): fewer than 20 + 80 can have been sent.
        #expect(messages > 0 && messages <= 100 + 8, "\(messages)")
        await sink.shutdown()
    }

    @Test func oneMessageAConnectionMakesASessionForEveryMessage() async throws {
        let sink = try await startSink()
        guard let run = try await Self.bench(["--target", "127.0.0.1:\(sink.localAddress.port)", "--security", "none",
                                               "--messages", "40", "--connections", "2", "--messages-per-connection", "1"])
        else { return }
        #expect(run.status == 0, "\(run.error)")
        #expect(sink.statistics.messages == 40)
        #expect(sink.statistics.sessions == 40, "a new connection, greeting and EHLO for every message")
        await sink.shutdown()
    }

    @Test func aTargetThatRejectsSomeMailIsCountedAndTheExitStatusSaysSo() async throws {
        let sink = try await startSink { $0.faults.rejectRecipients = .everyNth(4) }
        guard let run = try await Self.bench(["--target", "127.0.0.1:\(sink.localAddress.port)", "--security", "none",
                                               "--messages", "400", "--connections", "2", "--json"])
        else { return }
        #expect(run.status == 1, "not every message was accepted")
        let outcomes = try #require(try Self.object(run.output)["outcomes"] as? [String: Int])
        #expect(outcomes["accepted"] == 300)
        #expect(outcomes["rejected"] == 100)
        #expect(sink.statistics.messages == 300)
        await sink.shutdown()
    }

    @Test func aServerThatRefusesEverythingHasNoAcceptedRateAndSaysWhereItFailed() async throws {
        let sink = try await startSink { $0.faults.rejectRecipients = .everyNth(1) }
        guard let json = try await Self.bench(["--target", "127.0.0.1:\(sink.localAddress.port)", "--security", "none",
                                                "--messages", "100", "--connections", "2", "--json"]),
              let text = try await Self.bench(["--target", "127.0.0.1:\(sink.localAddress.port)", "--security", "none",
                                                "--messages", "100", "--connections", "2"])
        else { return }
        let result = try Self.object(json.output)
        #expect(json.status == 1)
        #expect(result["accepted"] as? Int == 0)
        #expect(result["acceptedPerSecond"] as? Double == 0)
        #expect((result["messagesPerSecond"] as? Double ?? 0) > 0, "attempts are counted apart")
        #expect(result["failures"] as? [String: Int] == ["RCPT 550": 100])
        #expect(text.status == 1)
        #expect(text.output.contains("rate:      0 msg/s accepted"), "\(text.output)")
        #expect(text.output.contains("failures:  RCPT 550 ×100"), "\(text.output)")
        let reason = text.error.split(separator: "\n").filter { $0.hasPrefix("sluice bench:") }
        #expect(reason == ["sluice bench: 100 of 100 messages were not accepted (RCPT 550 ×100)"], "\(text.error)")
        await sink.shutdown()
    }

    @Test func fromToPatternSubjectAndHeadersGoOutAndEveryMessageHasItsOwnMessageID() async throws {
        let sink = try await startSink()
        guard let run = try await Self.bench(["--target", "127.0.0.1:\(sink.localAddress.port)", "--security", "none",
                                              "--messages", "50", "--connections", "2", "--from", "load@example.com",
                                              "--to", "user{n}@example.test", "--recipients", "3", "--subject", "Load 1",
                                              "--header", "X-Campaign: spring", "--json"])
        else { return }
        #expect(run.status == 0, "\(run.error)")
        let stored = try await sink.waitForMessages(count: 50)
        #expect(stored.allSatisfy { $0.from?.address == "load@example.com" })
        #expect(stored.allSatisfy { $0.recipients.map(\.address) == ["user1@example.test", "user2@example.test", "user3@example.test"] })
        let texts = stored.map { String(decoding: $0.content, as: UTF8.self) }
        #expect(texts.allSatisfy { $0.contains("\r\nSubject: Load 1\r\n") && $0.contains("\r\nX-Campaign: spring\r\n") })
        #expect(texts.allSatisfy { $0.contains("\r\nFrom: Sluice Bench <load@example.com>\r\n") })
        let ids = texts.compactMap { $0.split(separator: "\r\n").first { $0.hasPrefix("Message-ID: ") } }
        #expect(ids.count == 50 && Set(ids).count == 50, "\(ids.prefix(3))")
        #expect(stored.allSatisfy { $0.content.count == 1024 }, "--size is the size of each copy")
        await sink.shutdown()
    }

    @Test func anEMLIsSentWithItsOwnMessageIDReplacedInEachCopy() async throws {
        let sink = try await startSink()
        let file = try SendCommandTests.emlFile("From: a@example.com\r\nTo: b@example.org\r\nMessage-ID: <same@example.com>\r\n"
                                                + "Subject: replayed\r\n\r\nThe body\r\n")
        defer { try? FileManager.default.removeItem(atPath: file) }
        guard let run = try await Self.bench(["--target", "127.0.0.1:\(sink.localAddress.port)", "--security", "none",
                                              "--messages", "20", "--connections", "2", "--eml", file, "--to", "x@example.org"])
        else { return }
        #expect(run.status == 0, "\(run.error)")
        let texts = try await sink.waitForMessages(count: 20).map { String(decoding: $0.content, as: UTF8.self) }
        #expect(texts.allSatisfy { !$0.contains("<same@example.com>") && $0.hasSuffix("Subject: replayed\r\n\r\nThe body\r\n") })
        #expect(Set(texts).count == 20)
        await sink.shutdown()
    }

    @Test(arguments: ["starttls", "tls"])
    func theEmbeddedSinkReallyRunsTLSWhenAskedAndSaysSo(security: String) async throws {
        guard let run = try await Self.bench(["--messages", "500", "--connections", "2", "--security", security, "--json"]),
              let plain = try await Self.bench(["--messages", "500", "--connections", "2"])
        else { return }
        #expect(run.status == 0, "\(run.error)")
        let result = try Self.object(run.output)
        #expect((result["outcomes"] as? [String: Int]) == ["accepted": 500])
        #expect(result["security"] as? String == "\(security), certificate made at start-up and verified")
        #expect(result["sinkTLSSessions"] as? Int == 2, "every connection finished a TLS handshake")
        #expect(plain.output.contains("security:  none (plaintext)"), "\(plain.output)")
    }

    @Test(.needsPeers(executables: ["openssl"], python: ["dkim", "nacl"]))
    func withDKIMKeysEveryCopyIsSignedOnItsOwnAndVerifies() async throws {
        guard let keys = try await DKIMTestKeys.shared() else { return }
        let sink = try await startSink()
        guard let run = try await Self.bench(["--target", "127.0.0.1:\(sink.localAddress.port)", "--security", "none",
                                              "--messages", "3", "--connections", "1", "--from", "bench@example.com",
                                              "--dkim-domain", "example.com", "--dkim-selector", "rsa", "--dkim-key",
                                              keys.rsaPKCS8, "--dkim-selector", "ed", "--dkim-key", keys.ed25519])
        else { return }
        #expect(run.status == 0, "\(run.error)")
        #expect(run.output.contains("DKIM-signed per message"), "\(run.output)")
        let stored = try await sink.waitForMessages(count: 3)
        #expect(Set(stored.map(\.content)).count == 3)
        for message in stored { #expect(try await keys.verify(message.content) == [true, true]) }
        await sink.shutdown()
    }

    @Test(arguments: [["--size", "10"], ["--connections", "0"], ["--target", "nohost:99999"], ["--rate", "-1"],
                      ["--eml", "/nonexistent/sluice.eml"], ["--to", "a@b.example,c@d.example", "--recipients", "3"],
                      ["--header", "no colon"], ["--from", "not an address"], ["--stages", "10s"],
                      ["--stages", "1s:10", "--rate", "5"], ["--stages", "1s:10", "--duration", "5"], ["--model", "open"],
                      ["--model", "closed", "--rate", "5"]])
    func badFlagsAreUsageErrors(arguments: [String]) async throws {
        guard let run = try await Self.bench(arguments) else { return }
        #expect(run.status == 64, "\(arguments): \(run.error)")
        #expect(run.error.contains("Error:") || run.error.hasPrefix("sluice bench: "), "says what is wrong: \(run.error)")
    }

    /// Flags that parse but cannot be used (found once the run starts) are named in one line,
    /// not followed by the root command's usage, and no mail is sent.
    @Test(arguments: [["--user", "u", "--password-file", "/nonexistent/sluice/password"],
                      ["--user", "u", "--password-env", "SLUICE_TEST_VARIABLE_NOT_SET"],
                      ["--security", "starttls", "--ca-file", "/nonexistent/sluice/ca.pem"]])
    func flagsUnusableAtRunTimeNameTheFlag(arguments: [String]) async throws {
        let sink = try await startSink()
        guard let run = try await Self.bench(["--target", "127.0.0.1:\(sink.localAddress.port)", "--security", "none",
                                               "--messages", "10"] + arguments)
        else { return }
        #expect(run.status == 64, "\(arguments): \(run.error)")
        #expect(run.error.hasPrefix("sluice bench: "), "\(run.error)")
        #expect(run.error.contains(arguments.last!), "the file or variable is named: \(run.error)")
        #expect(run.error.hasSuffix("; nothing was sent\n"), "\(run.error)")
        #expect(!run.error.contains("Usage:"), "\(run.error)")
        #expect(sink.statistics.sessions == 0, "no connection was made")
        await sink.shutdown()
    }
}

/// What `sluice bench` sends: size and recipient mixes, checksums.
@Suite("sluice bench: message mixes and checksums")
struct BenchMixTests {
    /// Whether `observed` of `trials` lies within five standard deviations of `share`: a
    /// bound a correct draw misses about once in 1.7 million runs.
    static func withinBounds(_ observed: Int, of trials: Int, share: Double) -> Bool {
        let expected = Double(trials) * share
        let deviation = (Double(trials) * share * (1 - share)).squareRoot()
        return abs(Double(observed) - expected) <= 5 * deviation
    }

    @Test func sizeAndRecipientMixesHoldWithinStatisticalBounds() async throws {
        let sink = try await startSink()
        let messages = 2_000
        guard let run = try await BenchCommandTests.bench([
            "--target", "127.0.0.1:\(sink.localAddress.port)", "--security", "none", "--messages", String(messages),
            "--connections", "4", "--size-mix", "300:70,5k:30", "--recipients", "1:50,3:50", "--json"])
        else { return }
        #expect(run.status == 0, "\(run.error)")
        let stored = try await sink.waitForMessages(count: messages)
        let sizes = Dictionary(grouping: stored, by: \.content.count).mapValues(\.count)
        #expect(Set(sizes.keys) == [300, 5_120], "every size is one of the mix, exactly: \(sizes.keys.sorted())")
        #expect(Self.withinBounds(sizes[300] ?? 0, of: messages, share: 0.7), "\(sizes)")
        let counts = Dictionary(grouping: stored, by: \.recipients.count).mapValues(\.count)
        #expect(Set(counts.keys) == [1, 3], "\(counts.keys.sorted())")
        #expect(Self.withinBounds(counts[1] ?? 0, of: messages, share: 0.5), "\(counts)")
        #expect(stored.filter { $0.recipients.count == 3 }.allSatisfy {
            $0.recipients.map(\.address) == ["rcpt1@sink.test", "rcpt2@sink.test", "rcpt3@sink.test"]
        })
        let result = try BenchCommandTests.object(run.output)
        #expect(result["sizes"] as? String == "300:70,5120:30")
        #expect(result["recipientCounts"] as? String == "1:50,3:50")
        let total = stored.reduce(0) { $0 + $1.content.count }
        #expect(result["size"] as? Int == total / messages, "the mean size of what was accepted")
        await sink.shutdown()
    }

    @Test func aUniformRangeCoversItsSpanAndASeedRepeatsARun() async throws {
        let sink = try await startSink()
        let arguments = ["--target", "127.0.0.1:\(sink.localAddress.port)", "--security", "none", "--messages", "1000",
                         "--connections", "2", "--size", "1k-4k", "--recipients", "1-4", "--seed", "42"]
        guard let first = try await BenchCommandTests.bench(arguments) else { return }
        #expect(first.status == 0, "\(first.error)")
        #expect(first.output.contains("messages of 1024-4096 (mean"), "\(first.output)")
        #expect(first.output.contains("seed 42"), "\(first.output)")
        let firstRun = try await sink.waitForMessages(count: 1000)
        let sizes = firstRun.map(\.content.count)
        #expect(sizes.allSatisfy { (1_024...4_096).contains($0) })
        #expect(sizes.min()! < 1_100 && sizes.max()! > 4_000, "the draws reach both ends")
        let mean = Double(sizes.reduce(0, +)) / 1000
        // A uniform over 3,073 values has a standard deviation of about 887; the mean of a
        // thousand draws, about 28.
        #expect(abs(mean - 2_560) < 5 * 28, "mean \(mean)")
        #expect(Set(firstRun.map(\.recipients.count)) == [1, 2, 3, 4])

        guard let second = try await BenchCommandTests.bench(arguments) else { return }
        #expect(second.status == 0, "\(second.error)")
        let both = try await sink.waitForMessages(count: 2000)
        /// Message number → (size, recipients), from the number in each Message-ID.
        func drawn(_ messages: ArraySlice<StoredMessage>) -> [Int: [Int]] {
            var result: [Int: [Int]] = [:]
            for message in messages {
                let text = String(decoding: message.content, as: UTF8.self)
                guard let id = text.split(separator: "\r\n").first(where: { $0.hasPrefix("Message-ID: <") }),
                      let number = Int(id.dropFirst("Message-ID: <".count).prefix(16)) else { continue }
                result[number] = [message.content.count, message.recipients.count]
            }
            return result
        }
        #expect(drawn(both[..<1000]).count == 1000)
        #expect(drawn(both[..<1000]) == drawn(both[1000...]), "the same seed draws the same size and recipients for each number")
        await sink.shutdown()
    }

    @Test func checksummedMessagesPassAVerifyingSinkAndACorruptedOneFails() async throws {
        // The embedded sink verifies what --checksum adds.
        guard let embedded = try await BenchCommandTests.bench(["--messages", "500", "--connections", "2", "--size", "1k-20k",
                                                                "--checksum", "--json"])
        else { return }
        #expect(embedded.status == 0, "\(embedded.error)")
        let result = try BenchCommandTests.object(embedded.output)
        #expect(result["sinkChecksums"] as? [String: Int] == ["verified": 500, "mismatched": 0])

        // A message whose body changed after it was checksummed, as corruption on the way
        // would change it: `sluice sink --verify` refuses every copy.
        let sink = try await startSink { $0.verifiesChecksums = true }
        let body = "The body as it was checksummed\r\n"
        let field = String(decoding: ContentChecksum.field(forBody: Array(body.utf8)), as: UTF8.self)
        let file = try SendCommandTests.emlFile("From: a@example.com\r\nTo: b@example.org\r\nSubject: s\r\n\(field)\r\n"
                                                + body.replacingOccurrences(of: "checksummed", with: "Checksummed"))
        defer { try? FileManager.default.removeItem(atPath: file) }
        guard let corrupted = try await BenchCommandTests.bench([
            "--target", "127.0.0.1:\(sink.localAddress.port)", "--security", "none", "--messages", "20", "--connections", "2",
            "--eml", file, "--json"])
        else { return }
        #expect(corrupted.status == 1, "\(corrupted.output)")
        let failures = try #require(try BenchCommandTests.object(corrupted.output)["failures"] as? [String: Int])
        #expect(failures.values.reduce(0, +) == 20 && failures.keys.allSatisfy { $0.hasSuffix(" 554") }, "\(failures)")
        #expect(sink.statistics.checksumMismatches == 20 && sink.statistics.messages == 0)
        await sink.shutdown()
    }

    /// The stored messages by their number (from each Message-ID), the Message-ID line cut.
    static func byNumber(_ stored: [StoredMessage]) -> [Int: String] {
        var result: [Int: String] = [:]
        for message in stored {
            let text = String(decoding: message.content, as: UTF8.self)
            var lines = text.components(separatedBy: "\r\n")
            guard let index = lines.firstIndex(where: { $0.hasPrefix("Message-ID: <") }),
                  let number = Int(lines[index].dropFirst("Message-ID: <".count).prefix(16)) else { continue }
            lines.remove(at: index)
            result[number] = lines.joined(separator: "\r\n")
        }
        return result
    }

    @Test func anMboxWrittenByPythonIsReplayedRoundRobinMessageForMessage() async throws {
        guard let python = await peerPython(importing: ["mailbox"]) else { return }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-corpus-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // Three messages, one with a body line that mbox must quote ("From here").
        let writer = """
            import mailbox, sys
            box = mailbox.mbox(sys.argv[1])
            box.add("From: a@example.com\\nTo: b@example.org\\nMessage-ID: <one@example.com>\\nSubject: one\\n\\nFirst body\\n")
            box.add("From: a@example.com\\nTo: b@example.org\\nSubject: two\\n\\nFrom here on, quoted\\nsecond\\n")
            box.add("From: c@example.com\\nTo: d@example.org\\nSubject: three\\n\\n" + ("x" * 70 + "\\n") * 40)
            box.flush()
            """
        let mbox = directory + "/corpus.mbox"
        let wrote = try await runInBackground(python, ["-c", writer, mbox])
        #expect(wrote.status == 0, "\(wrote.error)")
        let sink = try await startSink()
        guard let run = try await BenchCommandTests.bench([
            "--target", "127.0.0.1:\(sink.localAddress.port)", "--security", "none", "--messages", "9", "--connections", "2",
            "--eml", mbox, "--json"])
        else { return }
        try #require(run.status == 0, "\(run.error)")
        let result = try BenchCommandTests.object(run.output)
        #expect((result["sizes"] as? String)?.hasSuffix("(3 messages)") == true, "\(result["sizes"] ?? "")")
        let stored = Self.byNumber(try await sink.waitForMessages(count: 9))
        let expected = [
            "From: a@example.com\r\nTo: b@example.org\r\nSubject: one\r\n\r\nFirst body\r\n",
            "From: a@example.com\r\nTo: b@example.org\r\nSubject: two\r\n\r\nFrom here on, quoted\r\nsecond\r\n",
            "From: c@example.com\r\nTo: d@example.org\r\nSubject: three\r\n\r\n"
                + String(repeating: String(repeating: "x", count: 70) + "\r\n", count: 40),
        ]
        #expect(stored.count == 9)
        for (number, text) in stored {
            #expect(text == expected[(number - 1) % 3], "copy \(number)")
        }
        await sink.shutdown()
    }

    @Test func aDirectoryOfMessagesIsReplayedInNameOrderAndABadOneIsNamed() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-corpus-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try "From: a@example.com\r\nSubject: b\r\n\r\nsecond\r\n".write(toFile: directory + "/b.eml", atomically: true, encoding: .utf8)
        try "From: a@example.com\r\nSubject: a\r\n\r\nfirst\r\n".write(toFile: directory + "/a.eml", atomically: true, encoding: .utf8)
        try "not a message".write(toFile: directory + "/.hidden", atomically: true, encoding: .utf8)
        let sink = try await startSink()
        guard let run = try await BenchCommandTests.bench([
            "--target", "127.0.0.1:\(sink.localAddress.port)", "--security", "none", "--messages", "4", "--connections", "1",
            "--eml", directory])
        else { return }
        #expect(run.status == 0, "\(run.error)")
        let stored = Self.byNumber(try await sink.waitForMessages(count: 4))
        #expect(stored.mapValues { $0.contains("Subject: a") ? "a" : "b" } == [1: "a", 2: "b", 3: "a", 4: "b"])
        await sink.shutdown()

        try "Subject: no From here\r\n\r\nbody\r\n".write(toFile: directory + "/c.eml", atomically: true, encoding: .utf8)
        guard let bad = try await BenchCommandTests.bench(["--eml", directory, "--messages", "1"]) else { return }
        #expect(bad.status == 64 && bad.error.contains("c.eml"), "names the file that is not a message: \(bad.error)")
    }

    @Test(arguments: [["--size", "1k-"], ["--size", "4k-1k"], ["--size", "1k:0,2k:5"], ["--size-mix", "1k"],
                      ["--size", "1k", "--size-mix", "1k:1,2k:1"], ["--recipients", "0-3"], ["--recipients", "1:x"],
                      ["--size", "100"], ["--eml", "/dev/null", "--size-mix", "1k:1,2k:1"], ["--recipients", "1-5000"]])
    func badMixesAreUsageErrors(arguments: [String]) async throws {
        guard let run = try await BenchCommandTests.bench(arguments) else { return }
        #expect(run.status == 64, "\(arguments): \(run.error)")
        #expect(run.error.contains("--size") || run.error.contains("--recipients"), "names the flag: \(run.error)")
    }
}

/// `sluice bench --report`: read by Python's HTML parser and looked at in headless Chromium.
@Suite("sluice bench: the HTML report")
struct BenchReportTests {
    /// Python that reads a report with `html.parser` and prints what it found as JSON: the
    /// title, each chart's title and series (with their point counts), the tables' cells and
    /// the embedded data.
    static let reader = """
        import html.parser, json, sys
        class Reader(html.parser.HTMLParser):
            def __init__(self):
                super().__init__(); self.found = {"svg": [], "cells": [], "scripts": 0}; self.stack = []; self.text = ""
            def handle_starttag(self, tag, attrs):
                attrs = dict(attrs); self.stack.append(tag); self.text = ""
                if tag == "svg": self.found["svg"].append({"label": attrs.get("aria-label"), "series": {}})
                if tag == "polyline": self.found["svg"][-1]["series"][attrs["data-series"]] = len(attrs["points"].split())
                if tag == "script":
                    self.found["scripts"] += 1; self.found["scriptType"] = attrs.get("type")
            def handle_endtag(self, tag):
                if tag in ("td", "th"): self.found["cells"].append(self.text.strip())
                if tag == "title": self.found["title"] = self.text.strip()
                if tag == "script": self.found["data"] = json.loads(self.text)
                if self.stack: self.stack.pop()
            def handle_data(self, data): self.text += data
        reader = Reader(); reader.feed(open(sys.argv[1], encoding="utf-8").read()); print(json.dumps(reader.found))
        """

    /// Python that decodes a PNG (8-bit RGB or RGBA, any filter) with zlib alone and prints
    /// its size and how many pixels have each of the colours asked for.
    static let pixels = """
        import json, struct, sys, zlib
        data = open(sys.argv[1], "rb").read(); assert data[:8] == b"\\x89PNG\\r\\n\\x1a\\n"
        pos, idat = 8, b""
        while pos < len(data):
            length, kind = struct.unpack(">I4s", data[pos:pos + 8]); body = data[pos + 8:pos + 8 + length]; pos += 12 + length
            if kind == b"IHDR": width, height, depth, colour = struct.unpack(">IIBB", body[:10])
            if kind == b"IDAT": idat += body
        assert depth == 8 and colour in (2, 6); bpp = 3 if colour == 2 else 4
        raw = zlib.decompress(idat); stride = width * bpp; rows, previous, pos = [], bytearray(stride), 0
        for _ in range(height):
            f = raw[pos]; line = bytearray(raw[pos + 1:pos + 1 + stride]); pos += 1 + stride
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0; b = previous[i]; c = previous[i - bpp] if i >= bpp else 0
                if f == 1: line[i] = (line[i] + a) & 255
                elif f == 2: line[i] = (line[i] + b) & 255
                elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
                elif f == 4:
                    p = a + b - c; pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
            rows.append(line); previous = line
        wanted = {c: tuple(int(c[i:i + 2], 16) for i in (0, 2, 4)) for c in sys.argv[2:]}
        counts = {c: 0 for c in wanted}
        for line in rows:
            for i in range(0, stride, bpp):
                pixel = tuple(line[i:i + 3])
                for c, rgb in wanted.items():
                    if all(abs(p - q) <= 24 for p, q in zip(pixel, rgb)): counts[c] += 1
        print(json.dumps({"width": width, "height": height, "counts": counts}))
        """

    @Test func theReportHoldsEveryChartTheFailuresAndTheDataAndNothingAPeerSentRunsInIt() async throws {
        guard let python = await peerPython(importing: []) else { return }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-report-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // A server whose refusal carries markup: it must reach the report as text.
        let sink = try await startSink {
            $0.faults.replies = [ReplyRule(domain: "x.test", rate: .everyNth(4),
                                           reply: SMTPReply(.mailboxUnavailable, nil, "<script>alert(1)</script> no"))]
        }
        let report = directory + "/report.html"
        guard let run = try await BenchCommandTests.bench([
            "--target", "127.0.0.1:\(sink.localAddress.port)", "--security", "none", "--to", "u{n}@x.test",
            "--rate", "400", "--max-lateness", "600", "--messages", "800", "--connections", "2", "--report", report, "--json"])
        else { return }
        // Late arrivals are never dropped here (the sanitizers slow the machine several times
        // over), so every count below is exact.
        #expect(run.status == 1, "a quarter were refused: \(run.error)")
        let html = try String(contentsOfFile: report, encoding: .utf8)
        #expect(!html.contains("<script>alert"), "a peer's text is escaped")
        #expect(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"))
        #expect(!html.contains("http://") || !html.contains("src=\"http"), "nothing is fetched from the network")

        let read = try await runInBackground(python, ["-c", Self.reader, report])
        #expect(read.status == 0, "\(read.error)")
        let found = try #require(try JSONSerialization.jsonObject(with: Data(read.output.utf8)) as? [String: Any])
        #expect((found["title"] as? String)?.hasPrefix("sluice bench → 127.0.0.1:") == true)
        let charts = try #require(found["svg"] as? [[String: Any]])
        #expect(charts.compactMap { $0["label"] as? String } == ["Throughput", "Latency by second", "Latency by percentile"])
        let data = try #require(found["data"] as? [String: Any])
        let seconds = try #require(data["seconds"] as? [[String: Any]])
        #expect(seconds.count >= 2, "800 at 400 a second")
        #expect(seconds.reduce(0) { $0 + ($1["messages"] as? Int ?? 0) } == 800)
        let throughput = try #require(charts[0]["series"] as? [String: Int])
        #expect(throughput == ["accepted": seconds.count, "not accepted": seconds.count], "a point a second: \(throughput)")
        #expect((charts[1]["series"] as? [String: Int]).map { Set($0.keys) } == ["p50", "p90", "p99", "max"])
        #expect((charts[2]["series"] as? [String: Int])?["latency"] == 52, "51 percentiles and the maximum")
        #expect(((data["result"] as? [String: Any])?["failures"] as? [String: Int]) == ["RCPT 550": 200])
        let cells = try #require(found["cells"] as? [String])
        #expect(cells.contains("RCPT 550") && cells.contains("200") && cells.contains("25.00%"), "\(cells.prefix(12))")
        #expect(found["scripts"] as? Int == 1 && found["scriptType"] as? String == "application/json", "no script runs")
        await sink.shutdown()
    }

    @Test(.needsPeers(executables: ["chromium"]))
    func headlessChromiumShowsTheCharts() async throws {
        guard let python = await peerPython(importing: []) else { return }
        guard let chromium = requirePeer("chromium", install: "apt-get install chromium") else { return }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-report-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let report = directory + "/report.html"
        guard let run = try await BenchCommandTests.bench(["--messages", "4000", "--rate", "1000", "--connections", "2",
                                                           "--report", report])
        else { return }
        #expect(run.status == 0, "\(run.error)")
        let screenshot = directory + "/report.png"
        let shot = try await withDeadline(.seconds(120), "chromium's screenshot") {
            try await runInBackground(chromium, ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                                                 "--user-data-dir=\(directory)/profile", "--screenshot=\(screenshot)",
                                                 "--window-size=1200,1400", "file://\(report)"])
        }
        #expect(FileManager.default.fileExists(atPath: screenshot), "chromium: \(shot.error.suffix(2000))")
        // The throughput's and p50's blue and the spectrum's purple, drawn (a p90 or p99 line
        // can lie under the max line), and the text (#222 and #333).
        let decoded = try await runInBackground(python, ["-c", Self.pixels, screenshot, "2a7ab0", "8e44ad", "2a2a2a"])
        #expect(decoded.status == 0, "\(decoded.error)")
        let image = try #require(try JSONSerialization.jsonObject(with: Data(decoded.output.utf8)) as? [String: Any])
        #expect(image["width"] as? Int == 1200)
        let counts = try #require(image["counts"] as? [String: Int])
        #expect((counts["2a7ab0"] ?? 0) > 200 && (counts["8e44ad"] ?? 0) > 200, "the charts' lines are on the page: \(counts)")
        #expect((counts["2a2a2a"] ?? 0) > 2_000, "and their words: \(counts)")
    }
}
