import ArgumentParser
import Foundation
import SluiceSink

/// A count `sluice bench` draws for each message (its size, its number of recipients): one
/// value, a uniform range (`1k-100k`), or a weighted mix (`1k:80,10k:15,1m:5`).
///
/// Draws are a pure function of the run's seed and the message's number, so a run can be
/// repeated exactly (`--seed`) and a message's size is known again from its number.
struct BenchDistribution: Hashable, Sendable, CustomStringConvertible {
    enum Shape: Hashable, Sendable {
        case fixed(Int)
        case uniform(ClosedRange<Int>)
        /// Values with their weights, and the weights' sum.
        case mix([Weighted], total: Int)
    }

    struct Weighted: Hashable, Sendable {
        let value: Int
        let weight: Int
    }

    let shape: Shape
    /// Mixed into the seed, so that two distributions of one run draw independently.
    let salt: UInt64

    init(_ shape: Shape, salt: UInt64) {
        self.shape = shape
        self.salt = salt
    }

    /// Parses `N`, `LO-HI` or `V:W,V:W,…` for `option`, each number read by `value` (which
    /// may allow suffixes such as `k`), each at least `minimum`.
    init(parsing text: String, option: String, minimum: Int, salt: UInt64, value: (Substring) -> Int?) throws {
        func number(_ part: Substring) throws -> Int {
            guard let parsed = value(part.trimmingPrefix(while: \.isWhitespace)), parsed >= minimum else {
                throw ValidationError("\(option) \(text): '\(part)' is not a number of at least \(minimum)")
            }
            return parsed
        }
        if text.contains(":") {
            var entries: [Weighted] = []
            for entry in text.split(separator: ",", omittingEmptySubsequences: false) {
                let parts = entry.split(separator: ":", omittingEmptySubsequences: false)
                guard parts.count == 2, let weight = Int(parts[1]), weight > 0 else {
                    throw ValidationError("\(option) \(text): '\(entry)' is not VALUE:WEIGHT with a positive whole weight")
                }
                entries.append(Weighted(value: try number(parts[0]), weight: weight))
            }
            let (total, overflow) = entries.reduce((0, false)) { sum, entry in
                let added = sum.0.addingReportingOverflow(entry.weight)
                return (added.partialValue, sum.1 || added.overflow)
            }
            guard !overflow else { throw ValidationError("\(option) \(text): the weights are too large") }
            shape = entries.count == 1 ? .fixed(entries[0].value) : .mix(entries, total: total)
        } else if let dash = text.firstIndex(of: "-") {
            let low = try number(text[..<dash])
            let high = try number(text[text.index(after: dash)...])
            guard low <= high else { throw ValidationError("\(option) \(text): the range runs backwards") }
            shape = low == high ? .fixed(low) : .uniform(low...high)
        } else {
            shape = .fixed(try number(Substring(text)))
        }
        self.salt = salt
    }

    /// The value for message `number` of a run seeded with `seed`.
    func value(for number: Int, seed: UInt64) -> Int {
        switch shape {
        case .fixed(let value):
            return value
        case .uniform(let range):
            let span = UInt64(range.upperBound - range.lowerBound) + 1
            return range.lowerBound + Int(draw(number, seed) % span)
        case .mix(let entries, let total):
            var point = Int(draw(number, seed) % UInt64(total))
            for entry in entries {
                if point < entry.weight { return entry.value }
                point -= entry.weight
            }
            return entries[entries.count - 1].value  // unreachable: the weights sum to total
        }
    }

    /// A 64-bit draw for `number`: SplitMix64 seeded from the run's seed, the number and the
    /// salt (its output function mixes well enough for modulo reduction here).
    private func draw(_ number: Int, _ seed: UInt64) -> UInt64 {
        var generator = SplitMix64(seed: seed ^ salt ^ (UInt64(truncatingIfNeeded: number) &* 0xD605_BBB5_8C8A_BBD3))
        return generator.next()
    }

    var minimum: Int {
        switch shape {
        case .fixed(let value): value
        case .uniform(let range): range.lowerBound
        case .mix(let entries, _): entries.map(\.value).min() ?? 0
        }
    }

    var maximum: Int {
        switch shape {
        case .fixed(let value): value
        case .uniform(let range): range.upperBound
        case .mix(let entries, _): entries.map(\.value).max() ?? 0
        }
    }

    /// The expected value.
    var mean: Double {
        switch shape {
        case .fixed(let value): Double(value)
        case .uniform(let range): (Double(range.lowerBound) + Double(range.upperBound)) / 2
        case .mix(let entries, let total):
            entries.reduce(0) { $0 + Double($1.value) * Double($1.weight) } / Double(total)
        }
    }

    var isFixed: Bool {
        if case .fixed = shape { return true }
        return false
    }

    var description: String {
        switch shape {
        case .fixed(let value): String(value)
        case .uniform(let range): "\(range.lowerBound)-\(range.upperBound)"
        case .mix(let entries, _): entries.map { "\($0.value):\($0.weight)" }.joined(separator: ",")
        }
    }

    /// A size in octets: digits with an optional `k` (1,024) or `m` (1,048,576), either case.
    static func octets(_ text: Substring) -> Int? {
        let trimmed = text.trimmingCharacters(in: .whitespaces).lowercased()
        let (digits, unit): (Substring, Int) =
            switch trimmed.last {
            case "k": (trimmed.dropLast(), 1_024)
            case "m": (trimmed.dropLast(), 1_048_576)
            default: (Substring(trimmed), 1)
            }
        guard let count = Int(digits), count >= 0 else { return nil }
        let (total, overflow) = count.multipliedReportingOverflow(by: unit)
        return overflow ? nil : total
    }
}
