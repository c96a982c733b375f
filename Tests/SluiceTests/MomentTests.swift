import Testing
@testable import Sluice

@Suite("Moment")
struct MomentTests {
    /// Moment reads the clock ContinuousClock reads: an interval timed by Moment lies within
    /// the intervals ContinuousClock gives when its readings bracket Moment's.
    @Test func measuresWhatContinuousClockMeasures() async throws {
        let clock = ContinuousClock()
        let (before0, start, after0) = (clock.now, Moment.now, clock.now)
        try await Task.sleep(for: .milliseconds(30))
        let (before1, end, after1) = (clock.now, Moment.now, clock.now)
        let measured = end - start
        #expect(measured >= .milliseconds(30), "\(measured)")
        #expect(measured >= before1 - after0 && measured <= after1 - before0,
                "\(measured) is not within \(before1 - after0)...\(after1 - before0)")
        #expect(start < end)
    }

    @Test func addingAndSubtractingAreExact() {
        let moment = Moment(nanoseconds: 1_000_000_000)
        #expect((moment + .milliseconds(1_500)).nanoseconds == 2_500_000_000)
        #expect((moment + .nanoseconds(-1)).nanoseconds == 999_999_999)
        #expect(moment + .zero == moment)
        #expect(Moment(nanoseconds: 7) - Moment(nanoseconds: 10) == .nanoseconds(-3))
        #expect(Duration.seconds(2).wholeNanoseconds == 2_000_000_000)
        #expect(Duration.nanoseconds(-2).wholeNanoseconds == -2)
        #expect(Duration(secondsComponent: 1, attosecondsComponent: 999_999_999).wholeNanoseconds == 1_000_000_000,
                "a part of a nanosecond is dropped, not rounded")
    }

    /// A duration too long to count in nanoseconds (a lifetime of `.seconds(Int64.max)`)
    /// is the end of time, not a trap or a wrap into the past.
    @Test func aDurationTooLongToCountSaturates() {
        #expect(Duration.seconds(Int64.max).wholeNanoseconds == .max)
        #expect(Duration.seconds(Int64.min).wholeNanoseconds == .min)
        #expect(Duration.seconds(9_223_372_036).wholeNanoseconds == 9_223_372_036_000_000_000)
        #expect(Duration(secondsComponent: 9_223_372_036, attosecondsComponent: 900_000_000_000_000_000).wholeNanoseconds == .max)
        let now = Moment.now
        #expect(now + .seconds(Int64.max) == Moment(nanoseconds: .max))
        #expect(now + .seconds(Int64.max) > now)
        #expect(Moment(nanoseconds: .max - 1) + .nanoseconds(5) == Moment(nanoseconds: .max))
        #expect(Moment(nanoseconds: .min + 1) + .nanoseconds(-5) == Moment(nanoseconds: .min))
    }
}
