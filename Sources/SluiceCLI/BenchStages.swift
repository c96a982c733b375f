import ArgumentParser
import Foundation

/// `--stages "30s:0-2000,2m:2000,30s:2000-0"`: a load profile, as k6's stages are. Each stage
/// lasts its duration and moves its value linearly: `D:FROM-TO` from FROM to TO, `D:V` from
/// where the stage before ended to V (the first such stage holds V). In the open model the
/// value is the arrival rate (messages a second); in the closed model it is the number of
/// messages in flight (k6's virtual users).
struct BenchStages: Hashable, Sendable, CustomStringConvertible {
    struct Stage: Hashable, Sendable {
        /// Seconds.
        let duration: Double
        let from: Double
        let to: Double
    }

    let stages: [Stage]
    /// Arrivals (in the open model) due by the start of each stage, and by the end of the last.
    private let cumulative: [Double]

    init(_ stages: [Stage]) {
        self.stages = stages
        var cumulative = [0.0]
        for stage in stages { cumulative.append(cumulative.last! + (stage.from + stage.to) / 2 * stage.duration) }
        self.cumulative = cumulative
    }

    /// Parses `D:V` and `D:FROM-TO` stages separated by commas; a duration is a number with
    /// `ms`, `s`, `m` or `h` (seconds without one).
    init(parsing text: String) throws {
        var stages: [Stage] = []
        for entry in text.split(separator: ",", omittingEmptySubsequences: false) {
            let parts = entry.split(separator: ":", omittingEmptySubsequences: false)
            guard parts.count == 2, let duration = Self.seconds(parts[0]), duration > 0 else {
                throw ValidationError("--stages \(text): '\(entry)' is not DURATION:VALUE or DURATION:FROM-TO with a positive duration (30s, 2m)")
            }
            let values = parts[1].split(separator: "-", omittingEmptySubsequences: false).map { Double($0.trimmingCharacters(in: .whitespaces)) }
            guard (1...2).contains(values.count), values.allSatisfy({ $0.map { $0 >= 0 && $0.isFinite } ?? false }) else {
                throw ValidationError("--stages \(text): '\(parts[1])' is not a value or FROM-TO of values at least 0")
            }
            let to = values.last!!
            let from = values.count == 2 ? values[0]! : (stages.last?.to ?? to)
            stages.append(Stage(duration: duration, from: from, to: to))
        }
        guard stages.contains(where: { $0.from > 0 || $0.to > 0 }) else {
            throw ValidationError("--stages \(text): every value is 0, so nothing would be sent")
        }
        self.init(stages)
    }

    /// A duration: `500ms`, `30s`, `2m`, `1h`, or seconds without a unit.
    static func seconds(_ text: Substring) -> Double? {
        let text = text.trimmingCharacters(in: .whitespaces)
        for (unit, scale) in [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3_600)] where text.hasSuffix(unit) {
            return Double(text.dropLast(unit.count)).map { $0 * scale }
        }
        return Double(text)
    }

    /// Seconds from the first stage's start to the last one's end.
    var totalDuration: Double { stages.reduce(0) { $0 + $1.duration } }

    /// The largest value any stage reaches.
    var peak: Double { stages.map { max($0.from, $0.to) }.max() ?? 0 }

    /// The value `elapsed` seconds in; 0 after the end.
    func value(at elapsed: Double) -> Double {
        var start = 0.0
        for stage in stages {
            if elapsed < start + stage.duration {
                return stage.from + (stage.to - stage.from) * max(0, elapsed - start) / stage.duration
            }
            start += stage.duration
        }
        return 0
    }

    /// With the value as a rate: the arrivals due in the first `elapsed` seconds (the
    /// integral of the rate), all of them after the end.
    func arrivals(by elapsed: Double) -> Double {
        var start = 0.0
        for (index, stage) in stages.enumerated() {
            if elapsed < start + stage.duration {
                let into = max(0, elapsed - start)
                let rate = stage.from + (stage.to - stage.from) * into / stage.duration
                return cumulative[index] + (stage.from + rate) / 2 * into
            }
            start += stage.duration
        }
        return cumulative.last!
    }

    /// Every arrival of the whole profile: arrival n (from 1) is due when `n - 1` have been.
    var totalArrivals: Int {
        let total = cumulative.last!
        // n is due while n - 1 < total (an arrival falling exactly on the end is not).
        return Int(total.rounded(.up))
    }

    /// With the value as a rate: seconds from the start at which arrival `number` (from 1)
    /// is due, nil past the end.
    func due(_ number: Int) -> Double? {
        let target = Double(number - 1)
        guard number >= 1, target < cumulative.last! else { return nil }
        var start = 0.0
        for (index, stage) in stages.enumerated() {
            if target < cumulative[index + 1] {
                // Within this stage the arrivals grow as a·τ²/2 + from·τ, with a the slope
                // of the rate; solve for τ (the form below is stable as a tends to 0).
                let wanted = target - cumulative[index]
                let slope = (stage.to - stage.from) / stage.duration
                let root = max(0, stage.from * stage.from + 2 * slope * wanted).squareRoot()
                let into = wanted == 0 ? 0 : 2 * wanted / (stage.from + root)
                return start + min(stage.duration, into)
            }
            start += stage.duration
        }
        return nil
    }

    var description: String {
        stages.map { stage in
            let duration = stage.duration.truncatingRemainder(dividingBy: 1) == 0 ? "\(Int(stage.duration))s" : "\(stage.duration)s"
            func number(_ value: Double) -> String { value.truncatingRemainder(dividingBy: 1) == 0 ? String(Int(value)) : String(value) }
            return stage.from == stage.to ? "\(duration):\(number(stage.to))" : "\(duration):\(number(stage.from))-\(number(stage.to))"
        }.joined(separator: ",")
    }
}
