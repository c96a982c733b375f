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
final class InputLines: Sendable {
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
        try await forEach(in: whole, body)
    }

    /// The whole input.
    var whole: Part { Part(start: start, end: nil, firstLine: 1) }

    /// A run of whole lines: from `start` to `end` (the input's end when nil), the first of
    /// them numbered `firstLine`.
    struct Part: Sendable {
        var start: off_t
        var end: off_t?
        var firstLine: Int
    }

    /// The input in two parts, split at the start of a line near its middle, or nil when it is
    /// under `minimum` bytes or one line: for two threads to check at once.
    func halves(minimum: Int = 4 << 20) throws -> (Part, Part)? {
        var information = stat()
        guard fstat(descriptor, &information) == 0 else { throw ValidationError("cannot read standard input: \(errnoText())") }
        let size = information.st_size - start
        guard size >= minimum else { return nil }
        // The second part starts after the first LF from the middle on; the first part's
        // lines are counted to number the second's.
        var block = [UInt8](repeating: 0, count: Self.blockSize)
        var split: off_t?
        var offset = start + size / 2
        while split == nil {
            let count = try readBlock(into: &block, at: offset)
            if count == 0 { return nil }
            if let end = Self.firstNewline(in: block, from: 0, to: count) { split = offset + off_t(end) + 1 }
            offset += off_t(count)
        }
        guard let split, split < start + size else { return nil }
        var lines = 0
        offset = start
        while offset < split {
            let count = try readBlock(into: &block, at: offset)
            if count == 0 { break }
            let counted = min(count, Int(split - offset))
            var from = 0
            while let newline = Self.firstNewline(in: block, from: from, to: counted) {
                lines += 1
                from = newline + 1
            }
            offset += off_t(counted)
        }
        return (Part(start: start, end: split, firstLine: 1), Part(start: split, end: nil, firstLine: lines + 1))
    }

    /// Calls `body` with each line of `part` (without its LF) and its number, in order. A last
    /// line without an LF counts too, and so does an empty one after the input's last LF; a
    /// part that ends inside the input ends after an LF, and has no such line.
    func forEach(in part: Part, _ body: (_ number: Int, _ line: ArraySlice<UInt8>) async throws -> Void) async throws {
        var block = [UInt8](repeating: 0, count: Self.blockSize)
        var partial: [UInt8] = []  // a line begun in an earlier block
        var offset = part.start
        var number = part.firstLine - 1
        while part.end.map({ offset < $0 }) ?? true {
            var count = try readBlock(into: &block, at: offset)
            if let end = part.end { count = min(count, Int(end - offset)) }
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
        if part.end == nil || !partial.isEmpty { try await body(number + 1, partial[...]) }
    }

    /// Reads what there is from `offset` on into `block`, up to its size; 0 at the end.
    private func readBlock(into block: inout [UInt8], at offset: off_t) throws -> Int {
        while true {
            let count = block.withUnsafeMutableBytes { pread(descriptor, $0.baseAddress, $0.count, offset) }
            if count >= 0 { return count }
            if errno != EINTR { throw ValidationError("cannot read standard input: \(errnoText())") }
        }
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
