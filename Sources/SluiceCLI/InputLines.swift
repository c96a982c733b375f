import ArgumentParser
import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Standard input's lines, readable more than once, one block at a time.
///
/// `sluice outbox enqueue` reads its input twice: once to check every line, so that one bad
/// line enqueues nothing, and once to write. Held in memory, a million lines of 1 KB took
/// 3.5 GB; this way a run holds one block and the batch being written. A regular file given
/// as standard input is read where it is; anything else (a pipe, a terminal) is first copied
/// to a temporary file that is unlinked at once, so nothing is left behind.
final class InputLines {
    private let descriptor: Int32
    private let start: off_t
    private let ownsDescriptor: Bool
    /// How much is read at a time.
    static let blockSize = 1 << 20

    /// Takes standard input as it is now, copying it to a temporary file unless it is a
    /// regular file; a usage error says what failed.
    init() throws {
        var information = stat()
        let position = lseek(STDIN_FILENO, 0, SEEK_CUR)
        if fstat(STDIN_FILENO, &information) == 0, (information.st_mode & S_IFMT) == S_IFREG, position >= 0 {
            descriptor = STDIN_FILENO
            start = position
            ownsDescriptor = false
            return
        }
        var template = Array((NSTemporaryDirectory() + "/sluice-input-XXXXXX").utf8CString)
        let copy = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard copy >= 0 else { throw ValidationError("cannot make a temporary copy of standard input: \(errnoText())") }
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        do {
            try Self.copy(from: STDIN_FILENO, to: copy)
        } catch {
            close(copy)
            throw error
        }
        descriptor = copy
        start = 0
        ownsDescriptor = true
    }

    deinit {
        if ownsDescriptor { close(descriptor) }
    }

    /// Calls `body` with each line (without its LF) and its number from 1, in order; a last
    /// line without an LF counts too.
    func forEach(_ body: (_ number: Int, _ line: ArraySlice<UInt8>) async throws -> Void) async throws {
        var block = [UInt8](repeating: 0, count: Self.blockSize)
        var partial: [UInt8] = []  // a line begun in an earlier block
        var offset = start
        var number = 0
        while true {
            let count = block.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, $0.count, offset) }
            if count < 0 {
                if errno == EINTR { continue }
                throw ValidationError("cannot read standard input: \(errnoText())")
            }
            if count == 0 { break }
            offset += off_t(count)
            var lineStart = 0
            while let end = Self.firstNewline(in: block, from: lineStart, to: count) {
                number += 1
                if partial.isEmpty {
                    try await body(number, block[lineStart..<end])
                } else {
                    partial += block[lineStart..<end]
                    try await body(number, partial[...])
                    partial.removeAll(keepingCapacity: true)
                }
                lineStart = end + 1
            }
            partial += block[lineStart..<count]
        }
        // What follows the last LF is a line too (empty after a final LF, as split gives).
        try await body(number + 1, partial[...])
    }

    private static func firstNewline(in block: [UInt8], from start: Int, to end: Int) -> Int? {
        guard start < end else { return nil }
        return block.withUnsafeBytes { bytes in
            memchr(bytes.baseAddress! + start, 10, end - start).map { UnsafeRawPointer($0) - bytes.baseAddress! }
        }
    }

    private static func copy(from source: Int32, to destination: Int32) throws {
        var buffer = [UInt8](repeating: 0, count: blockSize)
        while true {
            let count = buffer.withUnsafeMutableBytes { read(source, $0.baseAddress, $0.count) }
            if count < 0 {
                if errno == EINTR { continue }
                throw ValidationError("cannot read standard input: \(errnoText())")
            }
            if count == 0 { return }
            var written = 0
            while written < count {
                let step = buffer.withUnsafeBytes { write(destination, $0.baseAddress! + written, count - written) }
                if step < 0 {
                    if errno == EINTR { continue }
                    throw ValidationError("cannot make a temporary copy of standard input: \(errnoText())")
                }
                written += step
            }
        }
    }
}

private func errnoText() -> String { String(cString: strerror(errno)) }
