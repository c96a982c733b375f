#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// A value guarded by a pthread mutex, with `Synchronization.Mutex`'s `withLock` shape.
///
/// Sluice uses this rather than `Mutex` because on Linux `Mutex` locks with futex calls inside
/// the uninstrumented Swift runtime, so ThreadSanitizer cannot see the lock and reports every
/// guarded access as a race; it understands pthread mutexes. Uncontended, both cost one atomic
/// compare-and-swap.
///
/// `withLock` is inlinable, so callers in other modules (the client's pool takes a lock twice
/// per message) get it specialised, with no generic call or closure context; and the value
/// lives behind a pointer, which the mutex already makes exclusive, so its access is not
/// checked again at run time as a class's stored property would be.
package final class Locked<Value>: @unchecked Sendable {
    // `value` is only touched with `mutex` held.
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>
    @usableFromInline let value: UnsafeMutablePointer<Value>

    /// A lock guarding `value`.
    package init(_ value: Value) {
        // One allocation holds both, the value after the mutex at its own alignment: a lock
        // made per call (a single send makes one) costs one `malloc` beside the object.
        let block = UnsafeMutableRawPointer.allocate(
            byteCount: Self.valueOffset + MemoryLayout<Value>.size,
            alignment: max(MemoryLayout<pthread_mutex_t>.alignment, MemoryLayout<Value>.alignment))
        mutex = block.bindMemory(to: pthread_mutex_t.self, capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        let status = pthread_mutex_init(mutex, nil)
        precondition(status == 0, "pthread_mutex_init failed: \(status)")
        self.value = (block + Self.valueOffset).bindMemory(to: Value.self, capacity: 1)
        self.value.initialize(to: value)
    }

    deinit {
        value.deinitialize(count: 1)
        pthread_mutex_destroy(mutex)
        mutex.deinitialize(count: 1)
        UnsafeMutableRawPointer(mutex).deallocate()
    }

    /// Where the value starts in the block: the first multiple of its alignment after the mutex.
    private static var valueOffset: Int {
        let alignment = MemoryLayout<Value>.alignment
        return (MemoryLayout<pthread_mutex_t>.stride + alignment - 1) / alignment * alignment
    }

    /// Runs `body` with the value, the lock held.
    @inlinable
    package func withLock<Result, Failure: Error>(_ body: (inout Value) throws(Failure) -> Result) throws(Failure) -> Result {
        lock()
        defer { unlock() }
        return try body(&value.pointee)
    }

    @usableFromInline func lock() { pthread_mutex_lock(mutex) }
    @usableFromInline func unlock() { pthread_mutex_unlock(mutex) }
}
