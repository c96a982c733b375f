#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif

/// A reading of the continuous clock, the one `ContinuousClock` reads (`CLOCK_BOOTTIME`, which
/// goes on while the machine sleeps), as nanoseconds since the clock's origin.
///
/// The client keeps its times in this rather than in `ContinuousClock.Instant`, which is not
/// `@frozen`: outside the standard library its size is known only at run time, so every
/// struct, enum and collection that holds one (the pool's connection entries, its actions and
/// the pool itself, a job) is copied, compared and destroyed through runtime metadata and
/// value witnesses. Against smtp-sink that was 230 metadata lookups per message. A plain
/// integer has a layout the compiler knows.
struct Moment: Comparable, Hashable, Sendable {
    /// Nanoseconds since the clock's origin.
    let nanoseconds: Int64

    /// Now.
    static var now: Moment {
        var time = timespec()
        clock_gettime(CLOCK_BOOTTIME, &time)
        return Moment(nanoseconds: Int64(time.tv_sec) &* 1_000_000_000 &+ Int64(time.tv_nsec))
    }

    static func < (lhs: Moment, rhs: Moment) -> Bool { lhs.nanoseconds < rhs.nanoseconds }

    /// The time from `rhs` to `lhs`.
    static func - (lhs: Moment, rhs: Moment) -> Duration { .nanoseconds(lhs.nanoseconds &- rhs.nanoseconds) }

    /// `duration` after `moment`; the end of time for a duration too long to count.
    static func + (moment: Moment, duration: Duration) -> Moment {
        let (sum, overflow) = moment.nanoseconds.addingReportingOverflow(duration.wholeNanoseconds)
        return Moment(nanoseconds: overflow ? (duration < .zero ? .min : .max) : sum)
    }
}

extension Duration {
    /// The duration in seconds, as a floating-point number (for the command line, too).
    package var seconds: Double { Double(components.seconds) + Double(components.attoseconds) / 1e18 }

    /// The duration in whole nanoseconds (rounded toward zero), saturated to `Int64`'s range.
    package var wholeNanoseconds: Int64 {
        let (seconds, attoseconds) = components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        guard !overflow else { return seconds < 0 ? .min : .max }
        let (sum, overflowed) = scaled.addingReportingOverflow(attoseconds / 1_000_000_000)
        return overflowed ? (seconds < 0 ? .min : .max) : sum
    }
}
