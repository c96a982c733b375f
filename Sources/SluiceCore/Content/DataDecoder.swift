/// Reads `DATA` content as a server: undoes dot-stuffing and finds the terminator
/// `<CRLF>.<CRLF>`, incrementally, whatever the split of the bytes (RFC 5321 §4.5.2).
///
/// Only CRLF ends a line. A bare CR or bare LF is refused (as Postfix's
/// `smtpd_forbid_bare_newline` does), because a server that took `<LF>.<LF>` or `<CR>.<CR>`
/// for the terminator would let one message smuggle a second (CVE-2023-51764/51765/51766).
/// Content beyond ``maximumSize`` is counted but not kept, so an endless DATA does not grow
/// memory; the caller answers 552 at the terminator.
public struct DataDecoder: Sendable {
    /// What a call to ``decode(_:into:)`` found.
    public enum Progress: Equatable, Sendable {
        /// All bytes were consumed; the terminator has not arrived.
        case needsMoreData
        /// The terminator ended the content after `consumed` bytes of this input; the rest
        /// belongs to whatever follows (pipelined commands).
        case complete(consumed: Int)
        /// A bare CR or LF arrived after `consumed` bytes of this input. The content must be
        /// refused and the connection closed: its end can no longer be told safely.
        case bareLineEnding(consumed: Int)
    }

    private enum State: Sendable {
        case lineStart, middle, carriageReturn, dotAtLineStart, dotCarriageReturn
    }

    /// The most content bytes kept.
    public let maximumSize: Int
    private var state = State.lineStart
    /// Content bytes seen so far (after unstuffing), including any not kept.
    public private(set) var size = 0

    /// Whether the content was larger than ``maximumSize`` (and so was cut).
    public var exceededMaximumSize: Bool { size > maximumSize }

    /// A decoder that keeps at most `maximumSize` content bytes.
    public init(maximumSize: Int) {
        self.maximumSize = maximumSize
    }

    /// Consumes bytes, appending unstuffed content (with its CRLFs) to `output`.
    public mutating func decode(_ input: some Collection<UInt8>, into output: inout [UInt8]) -> Progress {
        if let progress = input.withContiguousStorageIfAvailable({ decodeContiguous($0, into: &output) }) {
            return progress
        }
        return Array(input).withUnsafeBufferPointer { decodeContiguous($0, into: &output) }
    }

    private mutating func decodeContiguous(_ input: UnsafeBufferPointer<UInt8>, into output: inout [UInt8]) -> Progress {
        var index = 0
        let count = input.count
        while index < count {
            let byte = input[index]
            index += 1
            switch (state, byte) {
            case (.lineStart, UInt8(ascii: ".")):
                state = .dotAtLineStart
            case (.lineStart, 13), (.middle, 13):
                state = .carriageReturn
            case (.carriageReturn, 10):
                emit(13, into: &output)
                emit(10, into: &output)
                state = .lineStart
            case (.dotAtLineStart, 13):
                state = .dotCarriageReturn
            case (.dotCarriageReturn, 10):
                state = .lineStart
                return .complete(consumed: index)
            case (_, 10), (.carriageReturn, _), (.dotCarriageReturn, _):
                return .bareLineEnding(consumed: index)
            case (.dotAtLineStart, _), (.lineStart, _), (.middle, _):
                // The first dot of a line is transparency ("..x" is ".x"; a client that did
                // not stuff loses the dot, as RFC 5321 §4.5.2 says). Then copy the run up to
                // the next CR or LF in one go.
                let end = Self.lineEnding(in: input, from: index)
                emit(run: UnsafeBufferPointer(rebasing: input[(index - 1)..<end]), into: &output)
                index = end
                state = .middle
            }
        }
        return .needsMoreData
    }

    /// The index of the first CR or LF at or after `start`, or the end: eight bytes a step,
    /// since a line's run is most of what DATA carries. A byte at a time, this loop was the
    /// sink's largest cost for 100 KB messages sent with DATA.
    private static func lineEnding(in input: UnsafeBufferPointer<UInt8>, from start: Int) -> Int {
        var index = start
        let count = input.count
        if let base = input.baseAddress {
            let raw = UnsafeRawPointer(base)
            while index + 8 <= count {
                let word = UInt64(littleEndian: raw.loadUnaligned(fromByteOffset: index, as: UInt64.self))
                let found = marks(of: 13, in: word) | marks(of: 10, in: word)
                // Little-endian: the lowest marked byte comes first.
                if found != 0 { return index + found.trailingZeroBitCount / 8 }
                index += 8
            }
        }
        while index < count, input[index] != 13, input[index] != 10 { index += 1 }
        return index
    }

    /// 0x80 in each byte of `word` that is `byte`, and 0 in every other: exact, with no false
    /// mark from a borrow (each byte's low seven bits are added on their own).
    @inline(__always)
    private static func marks(of byte: UInt8, in word: UInt64) -> UInt64 {
        let lows: UInt64 = 0x7F7F_7F7F_7F7F_7F7F
        let x = word ^ (0x0101_0101_0101_0101 &* UInt64(byte))
        return ~(((x & lows) &+ lows) | x) & ~lows
    }

    @inline(__always)
    private mutating func emit(run: UnsafeBufferPointer<UInt8>, into output: inout [UInt8]) {
        let room = max(0, maximumSize - size)
        size += run.count
        if room >= run.count {
            output.append(contentsOf: run)
        } else if room > 0 {
            output.append(contentsOf: UnsafeBufferPointer(rebasing: run[..<room]))
        }
    }

    @inline(__always)
    private mutating func emit(_ byte: UInt8, into output: inout [UInt8]) {
        size += 1
        if size <= maximumSize { output.append(byte) }
    }
}
