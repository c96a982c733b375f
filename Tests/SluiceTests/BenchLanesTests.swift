import Foundation
@testable import SluiceCLI
import SluiceSink
import SluiceTestSupport
import Testing

/// Several `--target`s with weights, and `--tls-share`: the lanes a run is split into.
@Suite struct BenchLanesTests {
    @Test func aLaneShareOwnsItsBlockOfEveryCycleAndCountsItExactly() {
        let shares = [LaneShare(offset: 0, width: 3, cycle: 7), LaneShare(offset: 3, width: 1, cycle: 7),
                      LaneShare(offset: 4, width: 3, cycle: 7)]
        for number in 1...60 {
            let owners = shares.filter { $0.first(atOrAfter: number) == number }
            #expect(owners.count == 1, "number \(number) belongs to one lane")
        }
        for share in shares {
            let owned = (1...200).filter { share.first(atOrAfter: $0) == $0 }
            for start in stride(from: 1, to: 100, by: 7) {
                for end in [start, start + 1, start + 5, start + 33, start + 98] {
                    #expect(share.count(in: start..<end) == owned.filter { (start..<end).contains($0) }.count)
                }
                #expect(share.first(atOrAfter: start) == owned.first { $0 >= start })
            }
        }
    }

    @Test func connectionsSplitByWeightAndTLSShare() throws {
        #expect(BenchLane.apportion(16, by: [3, 1]) == [12, 4])
        #expect(BenchLane.apportion(10, by: [1, 1, 1]) == [4, 3, 3])
        #expect(BenchLane.apportion(3, by: [100, 1, 1]) == [1, 1, 1], "each target at least one")
        let lanes = try BenchLane.plan(targets: [try BenchTarget(parsing: "a.test:25=3"), try BenchTarget(parsing: "[::1]:2525")],
                                       connections: 16, security: .startTLS, tlsPercent: 25)
        #expect(lanes.map(\.target) == ["a.test:25", "a.test:25", "[::1]:2525", "[::1]:2525"])
        #expect(lanes.map(\.connections) == [3, 9, 1, 3])
        #expect(lanes.map(\.security) == [.startTLS, .none, .startTLS, .none])
        #expect(lanes.map(\.share.offset) == [0, 3, 12, 13])
        #expect(throws: (any Error).self) { try BenchTarget(parsing: "a.test:25=0") }
        #expect(throws: (any Error).self) { try BenchLane.plan(targets: [try BenchTarget(parsing: "a.test")], connections: 2,
                                                               security: .startTLS, tlsPercent: 10) }
    }

    @Test func theOpenModelSplitsArrivalsByWeightAcrossTwoSinks() async throws {
        let first = try await startSink { _ in }
        let second = try await startSink { _ in }
        try await shuttingDown(first, second) {
        guard let run = try await BenchCommandTests.bench([
            "--target", "127.0.0.1:\(first.localAddress.port)=3", "--target", "127.0.0.1:\(second.localAddress.port)",
            "--security", "none", "--rate", "2000", "--max-lateness", "600", "--messages", "2000", "--connections", "4", "--json"])
        else { return }
        #expect(run.status == 0, "\(run.error)")
        let result = try BenchCommandTests.object(run.output)
        #expect(result["messages"] as? Int == 2000)
        #expect(first.statistics.messages == 1500)
        #expect(second.statistics.messages == 500)
        let lanes = try #require(result["lanes"] as? [[String: Any]])
        #expect(lanes.map { $0["messages"] as? Int } == [1500, 500])
        #expect(lanes.map { $0["connections"] as? Int } == [3, 1])
        }
    }

    @Test func aTLSShareRunsTLSOnThatShareOfTheConnections() async throws {
        guard let run = try await BenchCommandTests.bench(["--tls-share", "25", "--connections", "8", "--messages", "3000", "--json"])
        else { return }
        #expect(run.status == 0, "\(run.error)")
        let result = try BenchCommandTests.object(run.output)
        // Two of eight connections are TLS (a pool opens connections as work waits: under a
        // sanitizer's slowness the second may not be needed).
        #expect((1...2).contains(result["sinkTLSSessions"] as? Int ?? 0), "\(result["sinkTLSSessions"] ?? "none")")
        let lanes = try #require(result["lanes"] as? [[String: Any]])
        #expect(lanes.map { $0["connections"] as? Int } == [2, 6])
        #expect(lanes.compactMap { $0["messages"] as? Int }.reduce(0, +) == 3000)
        #expect((lanes.first?["messages"] as? Int ?? 0) > 0, "the TLS lane sent")
        #expect((result["security"] as? String)?.contains("on 2 of 8 connections") == true, "\(result["security"] ?? "")")
    }

    @Test func aTLSShareThatCannotBeKeptIsRefusedBeforeAnythingIsSent() async throws {
        for (arguments, wanted) in [
            (["--tls-share", "50", "--security", "tls"], "--tls-share splits connections between STARTTLS and plaintext"),
            (["--tls-share", "150"], "--tls-share is a percentage"),
            (["--tls-share", "5", "--connections", "4"], "less than one"),
            (["--tls-share", "50", "--user", "u", "--password-env", "PATH"], "AUTH needs --allow-plaintext-auth"),
            (["--target", "127.0.0.1:1=x"], "the weight after '='"),
        ] {
            guard let run = try await BenchCommandTests.bench(arguments + ["--messages", "10"]) else { return }
            #expect(run.status != 0)
            #expect(run.error.contains(wanted), "\(arguments): \(run.error)")
        }
    }
}

/// `sluice bench --attach`: the files arrive whole, as Python's `email` reads them.
@Suite struct BenchAttachmentTests {
    @Test func attachedFilesArriveWholeInEveryCopy() async throws {
        guard let python = await peerPython(importing: ["mailbox"]) else { return }
        let directory = try makeTemporaryDirectory("sluice-attach")
        defer { removeDirectory(directory) }
        var generator = SystemRandomNumberGenerator()
        let binary = (0..<50_000).map { _ in UInt8.random(in: 0...255, using: &generator) }
        try Data(binary).write(to: URL(fileURLWithPath: directory + "/report.bin"))
        try Data("name,count\nada,1\n".utf8).write(to: URL(fileURLWithPath: directory + "/list.csv"))
        try FileManager.default.createDirectory(atPath: directory + "/maildir", withIntermediateDirectories: true)
        let sink = try await startSink { $0.store = .maildir(directory + "/maildir") }
        let sent = try await shuttingDown(sink) {
            try await BenchCommandTests.bench([
                "--target", "127.0.0.1:\(sink.localAddress.port)", "--security", "none", "--messages", "5", "--connections", "1",
                "--attach", directory + "/report.bin", "--attach", directory + "/list.csv", "--json"])
        }
        guard let run = sent else { return }
        #expect(run.status == 0, "\(run.error)")
        let script = """
            import hashlib, json, mailbox, sys
            found = []
            for message in mailbox.Maildir(sys.argv[1], factory=None, create=False):
                parts = [(p.get_filename(), hashlib.sha256(p.get_payload(decode=True)).hexdigest())
                         for p in message.walk() if p.get_filename()]
                found.append({"type": message.get_content_type(), "id": message["Message-ID"], "parts": parts})
            files = [[path.rsplit("/", 1)[1], hashlib.sha256(open(path, "rb").read()).hexdigest()] for path in sys.argv[2:]]
            print(json.dumps({"messages": found, "files": files}))
            """
        let read = try await runInBackground(python, ["-c", script, directory + "/maildir", directory + "/report.bin", directory + "/list.csv"])
        #expect(read.status == 0, "\(read.error)")
        let found = try BenchCommandTests.object(read.output)
        let messages = try #require(found["messages"] as? [[String: Any]])
        #expect(messages.count == 5)
        #expect(Set(messages.compactMap { $0["id"] as? String }).count == 5, "each copy has its own Message-ID")
        let wanted = try #require(found["files"] as? [[String]])
        for message in messages {
            #expect(message["type"] as? String == "multipart/mixed")
            #expect(message["parts"] as? [[String]] == wanted)
        }

        for (arguments, said) in [(["--attach", directory + "/missing.pdf"], "--attach: cannot read \(directory)/missing.pdf"),
                                  (["--attach", directory + "/list.csv", "--size", "2k"], "cannot be combined with --size")] {
            guard let refused = try await BenchCommandTests.bench(arguments + ["--messages", "1"]) else { return }
            #expect(refused.status == 64 && refused.error.contains(said), "\(refused.error)")
        }
    }
}

/// The generated body, copied from a block of whole lines, is the one built line by line.
@Suite struct BenchBodyTests {
    /// The body as it was first built: 76-octet lines, CRLF included, and never a last line
    /// too short for its CRLF.
    static func lineByLine(_ length: Int) -> [UInt8] {
        let line = Array("0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz01".utf8)
        var body: [UInt8] = []
        var remaining = length
        while remaining > 0 {
            var size = min(76, remaining)
            if remaining - size == 1 { size -= 1 }
            body += line.prefix(size - 2) + [13, 10]
            remaining -= size
        }
        return body
    }

    @Test func everyLengthMatchesTheLineByLineBody() {
        for length in Array(2...400) + [76 * 13_797 - 1, 76 * 13_797, 76 * 13_797 + 1, 76 * 13_797 + 2, 2_500_001] {
            let body = BenchMessages.generatedBody(length: length)
            #expect(body.count == length)
            #expect(body == Self.lineByLine(length), "length \(length)")
        }
    }
}
