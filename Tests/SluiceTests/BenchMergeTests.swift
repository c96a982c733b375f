import Foundation
import Histogram
@testable import SluiceCLI
import SluiceCore
import SluiceSink
import SluiceTestSupport
import Testing

/// `sluice bench --hdr-out`, `--start-at` and `sluice bench merge`, read back by Python's
/// `hdrhistogram` (an HdrHistogram of its own, in C and Python) as the standard tools would.
@Suite struct BenchMergeTests {
    /// Decodes the histogram in argv[1], and encodes one of its own: both as JSON.
    static let codecScript = """
        import json, sys
        from hdrh.histogram import HdrHistogram
        ours = HdrHistogram.decode(sys.argv[1])
        theirs = HdrHistogram(1, 600000000, 3)
        for value, count in [(1, 5), (999, 3), (2047, 7), (123456, 11), (59999999, 2)]:
            theirs.record_value(value, count)
        print(json.dumps({
            "count": ours.get_total_count(),
            "buckets": [[item.value_iterated_to, item.count_added_in_this_iter_step] for item in ours.get_recorded_iterator()],
            "percentiles": [ours.get_value_at_percentile(p) for p in (50, 90, 99, 99.9)],
            "max": ours.get_max_value(), "min": ours.get_min_value(),
            "theirs": theirs.encode().decode()}))
        """

    @Test func histogramsEncodeAsHdrHistogramItselfReadsThemAndTheOtherWayRound() async throws {
        guard let python = await peerPython(importing: ["hdrh"]) else { return }
        var histogram = Histogram<UInt64>.latencies()
        for i in 1...19_997 {
            _ = histogram.record(UInt64(i * i % 5_000_000 + 1))  // values across many buckets, with gaps
        }
        _ = histogram.record(590_000_000, count: 3)
        let run = try await runInBackground(python, ["-c", Self.codecScript, HistogramCodec.encode(histogram)])
        #expect(run.status == 0, "\(run.error)")
        let read = try BenchCommandTests.object(run.output)
        #expect(read["count"] as? Int == 20_000)
        // Every bucket Python found, with its count, is one of ours (the same value: both
        // name a bucket by the highest value it holds).
        let buckets = try #require(read["buckets"] as? [[Int]])
        #expect(buckets.map { [$0[0], $0[1]] } == histogram.recordedValues().map { [Int($0.value), Int($0.count)] })
        #expect(buckets.count > 1_000)
        // Percentiles whose rank is a whole count, where the two libraries' rounding agrees.
        #expect(read["percentiles"] as? [Int] == [50, 90, 99, 99.9].map { Int(histogram.valueAtPercentile($0)) })
        #expect(read["max"] as? Int == Int(histogram.max))
        #expect(read["min"] as? Int == Int(histogram.min))

        var theirs = Histogram<UInt64>.latencies()
        try HistogramCodec.decode(try #require(read["theirs"] as? String)[...], into: &theirs)
        #expect(theirs.totalCount == 28)
        let recorded = theirs.recordedValues().map { ($0.value, $0.count) }
        let recordedByPython: [(value: UInt64, count: UInt64)] = [(1, 5), (999, 3), (2047, 7), (123_456, 11), (59_999_999, 2)]
        #expect(recorded.count == recordedByPython.count)
        for (found, wanted) in zip(recorded, recordedByPython) {
            #expect(theirs.valuesAreEquivalent(found.0, wanted.value) && found.1 == wanted.count, "\(found) for \(wanted)")
        }
    }

    @Test func anEmptyHistogramAndDamagedOnesAreToldApart() throws {
        var empty = Histogram<UInt64>.latencies()
        try HistogramCodec.decode(HistogramCodec.encode(Histogram<UInt64>.latencies())[...], into: &empty)
        #expect(empty.totalCount == 0)
        var histogram = Histogram<UInt64>.latencies()
        #expect(throws: HistogramCodec.DecodingError.self) { try HistogramCodec.decode("not base64!"[...], into: &histogram) }
        var encoded = [UInt8](Data(base64Encoded: HistogramCodec.encode(histogram))!)
        encoded[9] ^= 0xFF  // inside the zlib stream
        #expect(throws: HistogramCodec.DecodingError.self) {
            try HistogramCodec.decode(Data(encoded).base64EncodedString()[...], into: &histogram)
        }
    }

    @Test func aHostileEncodingIsRefusedNotTrappedOn() throws {
        func encoding(lowest: UInt64 = 1, digits: Int = 3, words: [Int64]) -> Substring {
            var payload: [UInt8] = []
            for word in words { HistogramCodec.putZigZag(word, into: &payload) }
            return HistogramCodec.wrap(HistogramCodec.header(length: payload.count, digits: digits, lowest: lowest,
                                                             highest: 1 << 40) + payload)[...]
        }
        let hostile: [(Substring, String)] = [
            (encoding(words: [.min, 1]), "a run of zeros past the range"),
            (encoding(words: [-1_000_000_000, 5]), "a run of zeros past the range"),
            (encoding(words: [-10_000, -10_000, -10_000, 1]), "beyond the merged histogram's range"),
            (encoding(lowest: 1 << 62, words: [1]), "a header out of range"),
            (encoding(digits: 9, words: [1]), "significant digits"),
        ]
        for (text, said) in hostile {
            var histogram = Histogram<UInt64>.latencies()
            #expect { try HistogramCodec.decode(text, into: &histogram) } throws: { "\($0)".contains(said) }
            #expect(histogram.totalCount == 0)
        }
    }

    @Test func twoBenchesStartedTogetherMergeIntoOneResultThatHdrHistogramAgreesWith() async throws {
        guard let python = await peerPython(importing: ["hdrh"]), let sluice = sluiceCommand() else { return }
        let directory = try makeTemporaryDirectory("sluice-merge")
        defer { removeDirectory(directory) }
        let sink = try await startSink {
            $0.faults.replies = [ReplyRule(domain: "refused.test", rate: .everyNth(4), reply: SMTPReply(.mailboxUnavailable, nil, "no"))]
        }
        try await shuttingDown(sink) {
        // Far enough ahead for both processes to start and set up, even under a sanitizer with
        // the whole suite running (a start 6 s ahead had passed when one began under ASan, and
        // once without a sanitizer as every suite started at once).
        let startAt = String(Int(Date().timeIntervalSince1970 + 15 * testTimeScale))
        let logs = ["a", "b"].map { "\(directory)/\($0).hlog" }
        // Two processes, as two hosts would run them: the second refuses a quarter (a recipient
        // domain the sink refuses), so the merge has failures to add.
        let firstRun = Task { try await runInBackground(sluice, [
            "bench", "--target", "127.0.0.1:\(sink.localAddress.port)", "--security", "none", "--messages", "3000",
            "--connections", "2", "--start-at", startAt, "--hdr-out", logs[0], "--json"]) }
        let secondRun = Task { try await runInBackground(sluice, [
            "bench", "--target", "127.0.0.1:\(sink.localAddress.port)", "--security", "none", "--messages", "2000",
            "--connections", "3", "--to", "a@sink.test,b@sink.test,c@sink.test,d@refused.test", "--recipients", "4",
            "--start-at", startAt, "--hdr-out", logs[1], "--json"]) }
        let runs = try await withDeadline(scaled(.seconds(120)), "two benches") { [try await firstRun.value, try await secondRun.value] }
        #expect(runs[0].status == 0, "\(runs[0].error)")
        let started = try BenchCommandTests.object(runs[0].output)
        #expect(started["messages"] as? Int == 3000)

        // Neither started before the time asked for; both at it unless setting up took longer.
        let startTimes = try logs.map { try HistogramLog(path: $0).startTime }
        for startTime in startTimes {
            #expect(startTime >= Double(startAt)! - 0.05, "started at \(startTime), asked for \(startAt)")
        }
        let together = startTimes.allSatisfy { $0 - Double(startAt)! < 0.25 }

        let merge = try await runInBackground(sluice, ["bench", "--json", "--hdr-out", "\(directory)/merged.hlog",
                                                       "--report", "\(directory)/merged.html", "merge"] + logs)
        let merged = try BenchCommandTests.object(merge.output)
        // The report's seconds hold every message and every acceptance of both runs.
        let html = try String(contentsOfFile: "\(directory)/merged.html", encoding: .utf8)
        let data = try #require(html.split(separator: "id=\"sluice-bench-data\">").last?.split(separator: "</script>").first)
        let seconds = try #require(try BenchCommandTests.object(String(data))["seconds"] as? [[String: Any]])
        #expect(seconds.reduce(0) { $0 + ($1["messages"] as? Int ?? 0) } == 5000)
        #expect(seconds.reduce(0) { $0 + ($1["accepted"] as? Int ?? 0) } == merged["accepted"] as? Int)
        #expect(merged["messages"] as? Int == 5000)
        #expect(merged["connections"] as? Int == 5)
        #expect(merged["target"] as? String == "127.0.0.1:\(sink.localAddress.port) (2 runs merged)")
        let second = try BenchCommandTests.object(runs[1].output)
        #expect(merged["accepted"] as? Int == 3000 + (second["accepted"] as? Int ?? -1))
        #expect(merged["failures"] as? [String: Int] == second["failures"] as? [String: Int])
        #expect(merge.status == (second["accepted"] as? Int == 2000 ? 0 : 1), "a merge with failures says so: \(merge.error)")

        // HdrHistogram's own reader adds the two logs' intervals; its percentiles are the merge's.
        let script = """
            import json, sys
            from hdrh.histogram import HdrHistogram
            from hdrh.log import HistogramLogReader
            def read(path):
                total, intervals = HdrHistogram(1, 600000000, 3), 0
                reader = HistogramLogReader(path, HdrHistogram(1, 600000000, 3))
                while True:
                    h = reader.get_next_interval_histogram()
                    if h is None: return total, intervals
                    total.add(h); intervals += 1
            total = HdrHistogram(1, 600000000, 3)
            for path in sys.argv[1:3]: total.add(read(path)[0])
            merged, intervals = read(sys.argv[3])
            print(json.dumps({"count": total.get_total_count(), "mergedCount": merged.get_total_count(), "intervals": intervals,
                              "ms": [total.get_value_at_percentile(p) / 1000 for p in (50, 90, 99)] + [total.get_max_value() / 1000]}))
            """
        let read = try await runInBackground(python, ["-c", script] + logs + ["\(directory)/merged.hlog"])
        #expect(read.status == 0, "\(read.error)")
        let hdr = try BenchCommandTests.object(read.output)
        #expect(hdr["count"] as? Int == 5000)
        #expect(hdr["mergedCount"] as? Int == 5000, "the merged log holds every message once")
        let latency = try #require(merged["latencyMilliseconds"] as? [String: Double])
        #expect(hdr["ms"] as? [Double] == [latency["p50"], latency["p90"], latency["p99"], latency["max"]].compactMap { $0 })
        // Both started on the same second: the merged run lasts as long as the longer one.
        let elapsed = [started, second].compactMap { $0["elapsedSeconds"] as? Double }.max() ?? 0
        if together {
            #expect(abs((merged["elapsedSeconds"] as? Double ?? 0) - elapsed) < 0.5, "\(merged["elapsedSeconds"] ?? "") against \(elapsed)")
        }
        #expect(sink.statistics.messages == 5000, "a message refused one recipient of four is still delivered")
        }
    }

    @Test func aLogWithoutAResultADamagedLineAndAStartInThePastAreRefusedClearly() async throws {
        guard let sluice = sluiceCommand() else { return }
        let directory = try makeTemporaryDirectory("sluice-merge")
        defer { removeDirectory(directory) }
        let cut = "\(directory)/cut.hlog"
        try """
            #[StartTime: 1796480000.000 (seconds since epoch), x]
            "StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"
            0.000,1.000,0.001,\(HistogramCodec.encode(.latencies()))

            """.write(toFile: cut, atomically: true, encoding: .utf8)
        let noResult = try await runInBackground(sluice, ["bench", "merge", cut])
        #expect(noResult.status == 64)
        #expect(noResult.error.contains("\(cut) has no sluice bench result"), "\(noResult.error)")

        let damaged = "\(directory)/damaged.hlog"
        try "#[StartTime: 1796480000.000 (seconds since epoch), x]\n0.000,1.000,0.001,HISTFAAAAB\n".write(toFile: damaged, atomically: true, encoding: .utf8)
        let bad = try await runInBackground(sluice, ["bench", "merge", damaged])
        #expect(bad.status == 64)
        #expect(bad.error.contains("\(damaged):2: "), "the line is named: \(bad.error)")

        let late = try await runInBackground(sluice, ["bench", "--start-at", "2020-01-01T00:00:00Z", "--messages", "1"])
        #expect(late.status != 0)
        #expect(late.error.contains("--start-at 2020-01-01T00:00:00Z passed"), "\(late.error)")
    }
}
