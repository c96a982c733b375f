import ArgumentParser
import Foundation
import Histogram
import Sluice

/// `sluice bench merge`: one result from the `--hdr-out` logs of several bench runs, typically
/// on several hosts started together with `--start-at`. HdrHistogram histograms add exactly,
/// so the merged percentiles are those of every message of every run, not an average of
/// percentiles.
struct BenchMergeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge",
        abstract: "Merge the --hdr-out logs of several sluice bench runs into one result (and report).",
        discussion: """
            Run sluice bench on each host with the same --start-at TIME and its own --hdr-out FILE, then \
            merge the files: counts, failures and bytes add, latencies are the histograms added \
            (exact percentiles over every message), and seconds line up on the wall clock. \
            Each file must come from a run that finished (its result is its last comment). \
            sluice bench's --json, --report FILE and --hdr-out FILE print the merged result as JSON, \
            write its report, and write the merged log.
            """
    )

    @Argument(help: "The --hdr-out logs to merge.")
    var files: [String]
    /// `--json`, `--report` and `--hdr-out` are the bench command's own (a subcommand's option
    /// of the same name would be taken by its parent).
    @ParentCommand var bench: BenchCommand
    var json: Bool { bench.json }
    var report: String? { bench.report }
    var hdrOut: String? { bench.hdrOut }

    func validate() throws {
        if files.isEmpty { throw ValidationError("name at least one --hdr-out log to merge") }
    }

    func run() throws {
        let runs = try settingUp("bench merge") { try files.map(BenchRun.init(path:)) }
        let merged = BenchRun.merge(runs)
        print(json ? merged.result.json : merged.result.text)
        do {
            if let report { try BenchReport.write(merged.result, seconds: merged.seconds, to: report) }
            if let hdrOut {
                let log = try HistogramLogWriter(path: hdrOut, startTime: merged.startTime)
                for (second, histogram) in merged.histograms.enumerated() {
                    log.interval(start: Double(second), length: 1, histogram: histogram)
                }
                log.comment(merged.record.comment)
                log.close()
            }
        } catch {
            FileHandle.standardError.write(Data("sluice bench merge: \(error)\n".utf8))
            throw ExitCode(1)
        }
        try merged.result.tally.failUnlessAllAccepted("sluice bench merge")
    }
}

/// What `sluice bench merge` needs of a run besides its latencies, written as the last comment
/// of its `--hdr-out` log (`#[Sluice-Result: {…}]`): readers of the log pass over it.
struct BenchRecord: Codable {
    var target: String
    var security: String
    var connections: Int
    var seed: UInt64
    var sizes: String
    var recipients: String
    var checksum: Bool
    var pipelining: Bool
    var chunking: Bool
    /// `open` or `closed`, and the figures of each.
    var model: String
    var inFlight: Int?
    var rate: Double?
    var stages: String?
    var dropped: Int?
    var maximumLateness: Double?
    var outcomes: [String: Int]
    var failures: [String: Int]
    var acceptedBytes: Int
    var firstError: String?
    var elapsedSeconds: Double
    var clientCPUSeconds: Double
    var sinkCPUSeconds: Double?
    /// Messages accepted in each second of the run (the log's intervals, in order).
    var acceptedBySecond: [Int]
    /// Each phase of opening a session or of a transaction, and its latencies in
    /// HdrHistogram's encoding.
    var phases: [Phase]?

    struct Phase: Codable {
        var phase: String
        var histogram: String
    }

    static let commentPrefix = "[Sluice-Result: "

    init(_ result: BenchResult, acceptedBySecond: [Int]) {
        target = result.target
        security = result.security
        connections = result.connections
        seed = result.seed
        sizes = result.sizes
        recipients = result.recipients
        checksum = result.checksum
        pipelining = result.pipelining
        chunking = result.chunking
        switch result.model {
        case .closed(let inFlight, let stages):
            model = "closed"
            self.inFlight = inFlight
            self.stages = stages
        case .open(let rate, let stages, let dropped, let maximumLateness):
            model = "open"
            self.rate = rate
            self.stages = stages
            self.dropped = dropped
            self.maximumLateness = maximumLateness
        }
        outcomes = result.tally.byOutcome
        failures = result.tally.failures
        acceptedBytes = result.tally.acceptedBytes
        firstError = result.tally.firstError
        elapsedSeconds = result.elapsed.seconds
        clientCPUSeconds = result.clientCPU
        sinkCPUSeconds = result.sinkCPU
        self.acceptedBySecond = acceptedBySecond
        phases = result.phases.map { Phase(phase: $0.phase, histogram: HistogramCodec.encode($0.latency)) }
    }

    var loadModel: LoadModel {
        model == "open"
            ? .open(rate: rate, stages: stages, dropped: dropped ?? 0, maximumLateness: maximumLateness ?? 0)
            : .closed(inFlight: inFlight ?? 0, stages: stages)
    }

    /// The log's comment that carries it (without the `#`).
    var comment: String { Self.commentPrefix + encoded + "]" }

    /// One line of JSON.
    var encoded: String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        return String(decoding: (try? encoder.encode(self)) ?? Data("{}".utf8), as: UTF8.self)
    }
}

/// One run read back from its `--hdr-out` log, or several merged.
struct BenchRun {
    /// Seconds since the epoch.
    let startTime: Double
    let record: BenchRecord
    /// Its intervals' histograms and starts (seconds since the epoch).
    let intervals: [HistogramLog.Interval]
    /// Its phases of opening sessions and of transactions, decoded.
    let phases: [(phase: String, latency: Histogram<UInt64>)]

    init(path: String) throws {
        let log = try HistogramLog(path: path)
        guard let line = log.comments.last(where: { $0.hasPrefix(BenchRecord.commentPrefix) }), line.hasSuffix("]") else {
            throw ValidationError("\(path) has no sluice bench result: was it written by sluice bench --hdr-out, and did that run finish?")
        }
        do {
            record = try JSONDecoder().decode(BenchRecord.self, from: Data(line.dropFirst(BenchRecord.commentPrefix.count).dropLast().utf8))
            var phases: [(phase: String, latency: Histogram<UInt64>)] = []
            for phase in record.phases ?? [] {
                var histogram = Histogram<UInt64>.latencies()
                try HistogramCodec.decode(phase.histogram[...], into: &histogram)
                phases.append((phase.phase, histogram))
            }
            self.phases = phases
        } catch {
            throw ValidationError("\(path): its sluice bench result cannot be read: \(error)")
        }
        startTime = log.startTime
        intervals = log.intervals
    }

    /// Several runs as one: seconds on the wall clock from the earliest start.
    struct Merged {
        let startTime: Double
        let histograms: [Histogram<UInt64>]
        let seconds: [TimeSeries.Second]
        let result: BenchResult
        let record: BenchRecord
    }

    /// Every run's phases added, in the order they first appear.
    static func mergedPhases(_ runs: [BenchRun]) -> [(phase: String, latency: Histogram<UInt64>)] {
        var merged: [(phase: String, latency: Histogram<UInt64>)] = []
        for (phase, latency) in runs.flatMap(\.phases) {
            if let index = merged.firstIndex(where: { $0.phase == phase }) {
                merged[index].latency.add(latency)
            } else {
                merged.append((phase, latency))
            }
        }
        return merged
    }

    static func merge(_ runs: [BenchRun]) -> Merged {
        let startTime = runs.map(\.startTime).min() ?? 0
        var histograms: [Histogram<UInt64>] = []
        var accepted: [Int] = []
        var total = Histogram<UInt64>.latencies()
        for run in runs {
            for (index, interval) in run.intervals.enumerated() {
                // Each interval goes to the second of the merged run its start is nearest.
                let second = max(0, Int((interval.start - startTime).rounded()))
                while histograms.count <= second {
                    histograms.append(.latencies())
                    accepted.append(0)
                }
                histograms[second].add(interval.histogram)
                total.add(interval.histogram)
                accepted[second] += index < run.record.acceptedBySecond.count ? run.record.acceptedBySecond[index] : 0
            }
        }
        let seconds = histograms.indices.map {
            TimeSeries.Second(second: $0, messages: Int(histograms[$0].totalCount), accepted: accepted[$0],
                              latency: histograms[$0].millisecondsSummary)
        }

        var tally = Tally()
        tally.latency = total
        for run in runs {
            tally.add(outcomes: run.record.outcomes, failures: run.record.failures, acceptedBytes: run.record.acceptedBytes)
            if tally.firstError == nil { tally.firstError = run.record.firstError }
        }
        let records = runs.map(\.record)
        let targets = Array(Set(records.map(\.target))).sorted()
        let end = runs.map { $0.startTime + $0.record.elapsedSeconds }.max() ?? startTime
        let first = records[0]
        let model: LoadModel =
            records.allSatisfy({ $0.model == "open" })
            ? .open(rate: records.allSatisfy({ $0.rate != nil }) ? records.reduce(0) { $0 + ($1.rate ?? 0) } : nil,
                    stages: records.count == 1 ? first.stages : first.stages.map { "\($0) on each of \(records.count) runs" },
                    dropped: records.reduce(0) { $0 + ($1.dropped ?? 0) }, maximumLateness: first.maximumLateness ?? 0)
            : .closed(inFlight: records.reduce(0) { $0 + ($1.inFlight ?? 0) },
                      stages: records.count == 1 ? first.stages : first.stages.map { "\($0) on each of \(records.count) runs" })
        let sinkCPUs = records.compactMap(\.sinkCPUSeconds)
        let result = BenchResult(
            target: targets.joined(separator: ", ") + (records.count > 1 ? " (\(records.count) runs merged)" : ""),
            security: Array(Set(records.map(\.security))).sorted().joined(separator: "; "),
            connections: records.reduce(0) { $0 + $1.connections }, seed: first.seed,
            sizes: Set(records.map(\.sizes)).count == 1 ? first.sizes : "mixed",
            recipients: Set(records.map(\.recipients)).count == 1 ? first.recipients : "mixed",
            checksum: records.allSatisfy(\.checksum), pipelining: records.allSatisfy(\.pipelining),
            chunking: records.allSatisfy(\.chunking), model: model, tally: tally,
            elapsed: .milliseconds(Int64(((end - startTime) * 1000).rounded())),
            clientCPU: records.reduce(0) { $0 + $1.clientCPUSeconds },
            sinkCPU: sinkCPUs.isEmpty ? nil : sinkCPUs.reduce(0, +), sinkTLSSessions: nil, sinkChecksums: nil,
            phases: mergedPhases(runs))
        return Merged(startTime: startTime, histograms: histograms, seconds: seconds, result: result,
                      record: BenchRecord(result, acceptedBySecond: accepted))
    }
}
