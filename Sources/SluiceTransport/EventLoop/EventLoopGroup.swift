import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A fixed set of ``EventLoop``s, each a libuv loop on its own thread.
///
/// Make one per process (or let the client make its own) and share it: connections and
/// listeners are spread across its loops. Call ``shutdown()`` when done; it closes every
/// handle and joins every thread.
public final class EventLoopGroup: Sendable {
    /// The loops, in order.
    public let loops: [EventLoop]
    private let nextIndex = Atomic<Int>(0)

    /// Starts `numberOfLoops` loops, one thread each; by default one per core.
    public init(numberOfLoops: Int = EventLoopGroup.coreCount) {
        precondition(numberOfLoops > 0, "an EventLoopGroup needs at least one loop")
        // A peer that closes while we write must give EPIPE, not kill the process.
        signal(SIGPIPE, SIG_IGN)
        loops = (0..<numberOfLoops).map { EventLoop(index: $0) }
    }

    /// The number of cores this process may run on.
    public static var coreCount: Int {
        max(1, sysconf(Int32(_SC_NPROCESSORS_ONLN)))
    }

    /// The next loop in round-robin order, for spreading new work.
    public func next() -> EventLoop {
        let index = nextIndex.add(1, ordering: .relaxed).oldValue
        return loops[index % loops.count]
    }

    /// The sum of every loop's ``EventLoop/liveHandleCount``.
    public var liveHandleCount: Int { loops.reduce(0) { $0 + $1.liveHandleCount } }

    /// Closes every handle on every loop (failing whatever waits on them with
    /// ``TransportError/Kind/eventLoopShutDown``), waits for their close callbacks, and joins
    /// the loop threads. Calling it again waits for the first call's work.
    public func shutdown() async {
        await withTaskGroup(of: Void.self) { group in
            for loop in loops { group.addTask { await loop.shutdown() } }
        }
    }
}
