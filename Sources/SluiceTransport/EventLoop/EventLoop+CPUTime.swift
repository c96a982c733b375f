#if canImport(Glibc)
import Glibc
#endif

extension EventLoop {
    /// The CPU time (user + system) the loop's thread has used so far, read on that thread.
    /// Benchmarks use it to tell one part of a process (a client) from another (a sink).
    ///
    /// - Returns: nil if the loop has shut down.
    public func threadCPUTime() async -> Duration? {
        await withCheckedContinuation { (continuation: CheckedContinuation<Duration?, Never>) in
            let accepted = execute {
                var time = timespec()
                clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time)
                continuation.resume(returning: .seconds(Int64(time.tv_sec)) + .nanoseconds(Int64(time.tv_nsec)))
            }
            if !accepted { continuation.resume(returning: nil) }
        }
    }
}

extension EventLoopGroup {
    /// The CPU time all the group's loop threads have used so far.
    public func threadCPUTime() async -> Duration {
        var total = Duration.zero
        for loop in loops { total += await loop.threadCPUTime() ?? .zero }
        return total
    }
}
