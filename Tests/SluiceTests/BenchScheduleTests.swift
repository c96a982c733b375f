@testable import SluiceCLI
import Testing

/// The bench's load profiles and per-message draws, as pure functions.
@Suite("sluice bench: stages and draws")
struct BenchScheduleTests {
    @Test func stagesParseInK6sFormAndARampStartsWhereTheStageBeforeEnded() throws {
        let stages = try BenchStages(parsing: "30s:0-2000,2m:2000,500ms:0,1h:10")
        #expect(stages.stages == [.init(duration: 30, from: 0, to: 2000), .init(duration: 120, from: 2000, to: 2000),
                                  .init(duration: 0.5, from: 2000, to: 0), .init(duration: 3_600, from: 0, to: 10)])
        #expect(stages.totalDuration == 3_750.5)
        #expect(stages.peak == 2000)
        #expect(stages.value(at: 15) == 1000)
        #expect(stages.value(at: 100) == 2000)
        #expect(stages.value(at: 4_000) == 0, "nothing after the end")
        #expect(try BenchStages(parsing: "10:5").stages == [.init(duration: 10, from: 5, to: 5)], "a first D:V holds V")
        for bad in ["", "30s", "0s:10", "30s:-5", "30s:1-2-3", "x:10", "10s:0,5s:0", "10s:nan"] {
            #expect(throws: (any Error).self, "\(bad)") { try BenchStages(parsing: bad) }
        }
    }

    @Test func anArrivalIsDueWhenTheIntegratedRateReachesItsNumber() throws {
        // 0 → 200 a second over 1 s, 200 for 1 s, 200 → 0 over 1 s: 100 + 200 + 100 arrivals.
        let stages = try BenchStages(parsing: "1s:0-200,1s:200,1s:200-0")
        #expect(stages.totalArrivals == 400)
        #expect(stages.due(1) == 0)
        #expect(stages.due(401) == nil)
        for number in [2, 50, 100, 101, 250, 301, 350, 400] {
            let due = try #require(stages.due(number))
            // The inverse of arrivals(by:): n - 1 arrivals came before n's due time.
            #expect(abs(stages.arrivals(by: due) - Double(number - 1)) < 1e-6, "arrival \(number) at \(due)")
        }
        // On the ramp up arrivals thin out at first: the 51st is due at √0.5 s.
        #expect(abs(stages.due(51)! - 0.5.squareRoot()) < 1e-9)
        // The hold is exact: the 201st is due 1.5 s in.
        #expect(abs(stages.due(201)! - 1.5) < 1e-9)
        let dues = (1...400).map { stages.due($0)! }
        #expect(zip(dues, dues.dropFirst()).allSatisfy { $0 <= $1 }, "due times never go back")
        #expect(dues.last! < 3)
    }

    @Test func aConstantRateIsOneStage() {
        let stages = BenchStages([.init(duration: 10, from: 50, to: 50)])
        #expect(stages.totalArrivals == 500)
        #expect(stages.due(11) == 0.2)
        #expect(stages.arrivals(by: 1) == 50)
    }

    @Test func drawsAreAFunctionOfSeedAndNumberAndSizesParseWithUnits() throws {
        let mix = try BenchDistribution(parsing: "1k:80,10k:15,1m:5", option: "--size", minimum: 256, salt: 1,
                                        value: BenchDistribution.octets)
        #expect(mix.shape == .mix([.init(value: 1_024, weight: 80), .init(value: 10_240, weight: 15),
                                   .init(value: 1_048_576, weight: 5)], total: 100))
        #expect(mix.minimum == 1_024 && mix.maximum == 1_048_576)
        #expect(abs(mix.mean - (1_024 * 0.8 + 10_240 * 0.15 + 1_048_576 * 0.05)) < 1e-6)
        let draws = (1...100_000).map { mix.value(for: $0, seed: 7) }
        #expect(draws == (1...100_000).map { mix.value(for: $0, seed: 7) }, "the same seed, the same draws")
        #expect(draws != (1...100_000).map { mix.value(for: $0, seed: 8) })
        // Each share within five standard deviations of its weight.
        for (value, share) in [(1_024, 0.8), (10_240, 0.15), (1_048_576, 0.05)] {
            let count = Double(draws.filter { $0 == value }.count)
            let deviation = (100_000 * share * (1 - share)).squareRoot()
            #expect(abs(count - 100_000 * share) < 5 * deviation, "\(value): \(count)")
        }
        let other = BenchDistribution(mix.shape, salt: 2)
        #expect(draws != (1...100_000).map { other.value(for: $0, seed: 7) }, "another salt draws independently")
        #expect(BenchDistribution.octets("2K") == 2_048 && BenchDistribution.octets("3m") == 3_145_728)
        #expect(BenchDistribution.octets("k") == nil && BenchDistribution.octets("-1") == nil)
        #expect(BenchDistribution.octets("99999999999999999m") == nil, "an overflow is refused")
    }
}
