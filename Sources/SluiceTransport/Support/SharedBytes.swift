/// An immutable run of bytes in memory that does not move, shared by reference.
///
/// Writes hand libuv a pointer into the bytes and keep the object alive until libuv's write
/// callback, so one encoded message can be written on many connections without a copy per
/// write. Build one once, from an array or by filling it, then share it freely.
public final class SharedBytes: @unchecked Sendable {
    // Safe to share: the memory at `base` is allocated and filled in the initialiser and never
    // written again; it is freed only in deinit, when no reader can hold the object.
    private let base: UnsafeMutableRawPointer

    /// The number of bytes.
    public let count: Int

    /// Allocates `count` bytes and lets `fill` write every one of them, once.
    public init(count: Int, fill: (UnsafeMutableRawBufferPointer) throws -> Void) rethrows {
        precondition(count >= 0, "negative byte count")
        base = .allocate(byteCount: Swift.max(count, 1), alignment: 16)
        self.count = count
        do {
            try fill(UnsafeMutableRawBufferPointer(start: base, count: count))
        } catch {
            base.deallocate()
            throw error
        }
    }

    /// Copies `bytes` into new storage: one `memcpy` when they are contiguous (an array, a
    /// slice of one), else element by element.
    public convenience init(_ bytes: some Collection<UInt8>) {
        // Called from another module the generic body runs unspecialised: copying element by
        // element through the iterator cost about 70 µs for 1 KB (measured: `sluice bench`
        // building each message with `EncodedMessage(bytes:)`). Contiguous storage is copied
        // at once.
        self.init(count: bytes.count) { buffer in
            let copied: Void? = bytes.withContiguousStorageIfAvailable { source in
                buffer.copyMemory(from: UnsafeRawBufferPointer(source))
            }
            if copied == nil { _ = buffer.initializeMemory(as: UInt8.self, from: bytes) }
        }
    }

    /// Copies the bytes `pointer` views into new storage.
    public convenience init(copying pointer: UnsafeRawBufferPointer) {
        self.init(count: pointer.count) { buffer in
            buffer.copyMemory(from: pointer)
        }
    }

    deinit { base.deallocate() }

    /// A read-only view of the bytes, valid while this object is alive.
    public var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }

    /// The bytes as an array (a copy).
    public var array: [UInt8] { Array(bytes) }
}
