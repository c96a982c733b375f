import ArgumentParser
import CZlib
import Foundation
import Histogram

/// HdrHistogram's own encoding of one histogram, as its interval logs carry it: the V2
/// encoding (a 40-octet header, then the counts as ZigZag LEB128 words with runs of zeros
/// folded into one negative word), compressed with zlib behind an 8-octet header, in Base64
/// (`HISTF…`). Java's, C's, Go's and Python's HdrHistogram read and write the same octets, so
/// a log `sluice bench --hdr-out` writes opens in their tools, and `sluice bench merge` adds
/// theirs.
///
/// The counts array's layout is HdrHistogram's everywhere: it follows from the lowest
/// discernible value, the highest trackable value and the significant digits alone, which the
/// header carries.
enum HistogramCodec {
    static let encodingCookie: UInt32 = 0x1C84_9303 | 0x10
    static let compressedCookie: UInt32 = 0x1C84_9304 | 0x10
    /// The cookie's low nibble of its second octet is the word size in older versions; V2 and
    /// later always use 9-octet LEB128 words, and readers compare the cookie without it.
    static let cookieMask: UInt32 = ~0xF0
    static let headerSize = 40

    /// A histogram the codec cannot read, and why.
    struct DecodingError: Error, CustomStringConvertible {
        let description: String
    }

    /// Base64 of the compressed V2 encoding of `histogram`.
    static func encode(_ histogram: Histogram<UInt64>) -> String {
        let layout = Layout(histogram)
        // Counts from index 0 to the one that holds the largest value recorded.
        var counts = [UInt64](repeating: 0, count: histogram.totalCount == 0 ? 1 : layout.index(of: histogram.max) + 1)
        for value in histogram.recordedValues() {
            counts[layout.index(of: value.value)] += value.count
        }
        var payload: [UInt8] = []
        payload.reserveCapacity(counts.count)
        var index = 0
        while index < counts.count {
            let count = counts[index]
            index += 1
            if count == 0 {
                var zeros: Int64 = 1
                while index < counts.count, counts[index] == 0 {
                    zeros += 1
                    index += 1
                }
                putZigZag(zeros > 1 ? -zeros : 0, into: &payload)
            } else {
                putZigZag(Int64(clamping: count), into: &payload)
            }
        }
        var plain = header(length: payload.count, digits: Int(histogram.numberOfSignificantValueDigits.rawValue),
                           lowest: histogram.lowestDiscernibleValue, highest: histogram.highestTrackableValue)
        plain += payload
        return wrap(plain)
    }

    /// The V2 header for a histogram of these parameters, its payload `length` octets.
    static func header(length: Int, digits: Int, lowest: UInt64, highest: UInt64) -> [UInt8] {
        var plain: [UInt8] = []
        put32(encodingCookie, into: &plain)
        put32(UInt32(length), into: &plain)
        put32(0, into: &plain)  // normalizing index offset
        put32(UInt32(digits), into: &plain)
        put64(lowest, into: &plain)
        put64(highest, into: &plain)
        put64((1.0 as Double).bitPattern, into: &plain)  // integer-to-double conversion ratio
        return plain
    }

    /// An uncompressed encoding compressed and in Base64, as a log carries it.
    static func wrap(_ plain: [UInt8]) -> String {
        var compressed = [UInt8](repeating: 0, count: Int(compressBound(uLong(plain.count))))
        var length = uLong(compressed.count)
        let status = compressed.withUnsafeMutableBufferPointer { out in
            plain.withUnsafeBufferPointer { compress2(out.baseAddress, &length, $0.baseAddress, uLong($0.count), Z_DEFAULT_COMPRESSION) }
        }
        precondition(status == Z_OK, "compress2 into compressBound's size cannot fail")
        var encoded: [UInt8] = []
        encoded.reserveCapacity(8 + Int(length))
        put32(compressedCookie, into: &encoded)
        put32(UInt32(length), into: &encoded)
        encoded += compressed.prefix(Int(length))
        return Data(encoded).base64EncodedString()
    }

    /// The most octets a decoded histogram may inflate to (a histogram of 2^63 at five digits
    /// is far smaller): a hostile log cannot make the reader allocate without bound.
    static let largestEncoding = 64 << 20

    /// Adds the histogram `text` encodes to `histogram` (whose own range must hold its values).
    static func decode(_ text: Substring, into histogram: inout Histogram<UInt64>) throws {
        guard let data = Data(base64Encoded: String(text)), data.count >= 8 else {
            throw DecodingError(description: "not a Base64 HdrHistogram encoding")
        }
        let bytes = [UInt8](data)
        let cookie = get32(bytes, at: 0)
        guard cookie & cookieMask == compressedCookie & cookieMask else {
            throw DecodingError(description: String(format: "not a compressed V2 histogram (cookie %08x)", cookie))
        }
        let length = Int(get32(bytes, at: 4))
        guard length <= bytes.count - 8 else { throw DecodingError(description: "its compressed length exceeds the data") }
        let plain = try inflate(bytes[8..<(8 + length)])
        guard plain.count >= headerSize, get32(plain, at: 0) & cookieMask == encodingCookie & cookieMask else {
            throw DecodingError(description: "its inflated contents are not a V2 histogram")
        }
        let payloadLength = Int(get32(plain, at: 4))
        let offset = get32(plain, at: 8)
        guard offset == 0 else { throw DecodingError(description: "a normalizing index offset (\(offset)) is not supported") }
        guard let digits = SignificantDigits(rawValue: Int8(clamping: get32(plain, at: 12))) else {
            throw DecodingError(description: "\(get32(plain, at: 12)) significant digits")
        }
        let lowest = get64(plain, at: 16)
        let highest = get64(plain, at: 24)
        guard lowest >= 1, highest >= 2 * lowest, payloadLength <= plain.count - headerSize else {
            throw DecodingError(description: "a header out of range (lowest \(lowest), highest \(highest))")
        }
        let layout = Layout(lowest: lowest, digits: digits)
        // HdrHistogram's own bound: a layout past it cannot index a 64-bit value.
        guard layout.unitMagnitude + layout.subBucketHalfCountMagnitude <= 61 else {
            throw DecodingError(description: "a header out of range (lowest \(lowest), \(digits.rawValue) digits)")
        }
        // The last index whose values the merged histogram can hold.
        let lastIndex = layout.index(of: histogram.highestTrackableValue)
        var position = headerSize
        let end = headerSize + payloadLength
        var index = 0
        while position < end {
            let word = try getZigZag(plain, at: &position, end: end)
            if word < 0 {
                // A run of zeros; one past the last index could only precede a count too far.
                guard word >= -Int64(lastIndex) - 1 else { throw DecodingError(description: "a run of zeros past the range") }
                index += Int(-word)
                continue
            }
            if word > 0 {
                guard index <= lastIndex else {
                    throw DecodingError(description: "a count at index \(index), beyond the merged histogram's range")
                }
                // The bucket's highest value, as HdrHistogram reports a bucket (Swift's
                // percentiles are clamped to the largest value recorded).
                let value = layout.highestValue(at: index)
                guard value <= histogram.highestTrackableValue, histogram.record(value, count: UInt64(word)) else {
                    throw DecodingError(description: "a value (\(value)) beyond the merged histogram's range")
                }
            }
            index += 1
        }
    }

    /// HdrHistogram's counts-array layout for a lowest discernible value and a precision.
    struct Layout {
        let unitMagnitude: Int
        let subBucketHalfCountMagnitude: Int
        var subBucketHalfCount: Int { 1 << subBucketHalfCountMagnitude }

        init(lowest: UInt64, digits: SignificantDigits) {
            unitMagnitude = 63 - lowest.leadingZeroBitCount  // floor(log2(lowest))
            var largestWithUnitResolution = 2
            for _ in 0..<Int(digits.rawValue) { largestWithUnitResolution *= 10 }
            let subBucketCountMagnitude = Int(Double.log2(Double(largestWithUnitResolution)).rounded(.up))
            subBucketHalfCountMagnitude = max(subBucketCountMagnitude, 1) - 1
        }

        init(_ histogram: Histogram<UInt64>) {
            self.init(lowest: histogram.lowestDiscernibleValue, digits: histogram.numberOfSignificantValueDigits)
        }

        func index(of value: UInt64) -> Int {
            let mask = UInt64((1 << (subBucketHalfCountMagnitude + 1)) - 1) << unitMagnitude
            let leadingZeroCountBase = 64 - unitMagnitude - subBucketHalfCountMagnitude - 1
            let bucket = leadingZeroCountBase - (value | mask).leadingZeroBitCount
            let subBucket = Int(value >> UInt64(bucket + unitMagnitude))
            return ((bucket + 1) << subBucketHalfCountMagnitude) + subBucket - subBucketHalfCount
        }

        /// The highest value counted at `index`.
        func highestValue(at index: Int) -> UInt64 {
            let (subBucket, shift) = position(of: index)
            return (UInt64(subBucket + 1) << shift) - 1
        }

        /// The sub-bucket of `index` and the shift that scales it to a value.
        private func position(of index: Int) -> (subBucket: Int, shift: UInt64) {
            let bucket = (index >> subBucketHalfCountMagnitude) - 1
            let subBucket = (index & (subBucketHalfCount - 1)) + subBucketHalfCount
            return bucket < 0 ? (subBucket - subBucketHalfCount, UInt64(unitMagnitude)) : (subBucket, UInt64(bucket + unitMagnitude))
        }
    }

    // MARK: Words

    /// HdrHistogram's ZigZag LEB128: seven bits an octet for eight octets, then all eight bits
    /// of the ninth (so a word is at most 9 octets).
    static func putZigZag(_ value: Int64, into out: inout [UInt8]) {
        var bits = UInt64(bitPattern: (value << 1) ^ (value >> 63))
        for _ in 0..<8 {
            if bits >> 7 == 0 {
                out.append(UInt8(bits))
                return
            }
            out.append(UInt8(bits & 0x7F) | 0x80)
            bits >>= 7
        }
        out.append(UInt8(truncatingIfNeeded: bits))
    }

    static func getZigZag(_ bytes: [UInt8], at position: inout Int, end: Int) throws -> Int64 {
        var bits: UInt64 = 0
        for octet in 0..<9 {
            guard position < end else { throw DecodingError(description: "a count cut short") }
            let byte = bytes[position]
            position += 1
            if octet == 8 {
                bits |= UInt64(byte) << 56
                break
            }
            bits |= UInt64(byte & 0x7F) << UInt64(7 * octet)
            if byte & 0x80 == 0 { break }
        }
        return Int64(bitPattern: bits >> 1) ^ -Int64(bitPattern: bits & 1)
    }

    private static func put32(_ value: UInt32, into out: inout [UInt8]) {
        withUnsafeBytes(of: value.bigEndian) { out += $0 }
    }

    private static func put64(_ value: UInt64, into out: inout [UInt8]) {
        withUnsafeBytes(of: value.bigEndian) { out += $0 }
    }

    private static func get32(_ bytes: [UInt8], at offset: Int) -> UInt32 {
        bytes[offset..<(offset + 4)].reduce(0) { $0 << 8 | UInt32($1) }
    }

    private static func get64(_ bytes: [UInt8], at offset: Int) -> UInt64 {
        bytes[offset..<(offset + 8)].reduce(0) { $0 << 8 | UInt64($1) }
    }

    /// The zlib stream `compressed` inflated, at most `largestEncoding` octets.
    private static func inflate(_ compressed: ArraySlice<UInt8>) throws -> [UInt8] {
        var capacity = max(4_096, compressed.count * 8)
        while true {
            var out = [UInt8](repeating: 0, count: capacity)
            var length = uLong(capacity)
            let status = out.withUnsafeMutableBufferPointer { buffer in
                compressed.withUnsafeBufferPointer { uncompress(buffer.baseAddress, &length, $0.baseAddress, uLong($0.count)) }
            }
            switch status {
            case Z_OK:
                return Array(out.prefix(Int(length)))
            case Z_BUF_ERROR where capacity < largestEncoding:
                capacity = min(capacity * 4, largestEncoding)
            default:
                throw DecodingError(description: status == Z_BUF_ERROR ? "it inflates past \(largestEncoding >> 20) MiB" : "its zlib stream is damaged (\(status))")
            }
        }
    }
}

/// Writes HdrHistogram's interval log (format 1.3), one interval at a time: a header naming
/// the start time, then a line an interval, `START,LENGTH,MAX,HISTOGRAM`, with START in
/// seconds from the start (the `BaseTime`) and MAX in milliseconds (values are microseconds).
/// `HistogramLogProcessor`, HdrHistogram's plotter and `hdrh`'s reader take it as it is.
struct HistogramLogWriter {
    private let file: FileHandle
    private let path: String
    /// The start, in seconds since the epoch.
    let startTime: Double

    init(path: String, startTime: Double) throws {
        guard FileManager.default.createFile(atPath: path, contents: nil), let file = FileHandle(forWritingAtPath: path) else {
            throw ValidationError("--hdr-out: cannot write \(path)")
        }
        self.file = file
        self.path = path
        self.startTime = startTime
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        let stamp = formatter.string(from: Date(timeIntervalSince1970: startTime))
        write("""
            #[Histogram log format version 1.3]
            #[StartTime: \(String(format: "%.3f", startTime)) (seconds since epoch), \(stamp)]
            #[BaseTime: \(String(format: "%.3f", startTime)) (seconds since epoch)]
            #[Written by sluice bench: latencies in microseconds, Interval_Max in milliseconds]
            "StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"

            """)
    }

    /// One interval: `histogram` holds what was recorded from `start` seconds after the start
    /// time, for `length` seconds.
    func interval(start: Double, length: Double, histogram: Histogram<UInt64>) {
        let max = histogram.totalCount == 0 ? 0 : Double(histogram.max) / 1000
        write(String(format: "%.3f,%.3f,%.3f,", start, length, max) + HistogramCodec.encode(histogram) + "\n")
    }

    /// A comment line, `#TEXT` (readers pass over them).
    func comment(_ text: String) {
        write("#" + text + "\n")
    }

    func close() {
        try? file.close()
    }

    private func write(_ text: String) {
        file.write(Data(text.utf8))
    }
}

/// An interval log read back: every untagged interval, on the epoch's clock, and the comment
/// lines. Tagged intervals (`Tag=…,`) are other series and are passed over.
struct HistogramLog {
    struct Interval {
        /// Seconds since the epoch.
        let start: Double
        let length: Double
        let histogram: Histogram<UInt64>
    }

    /// Seconds since the epoch: the log's `StartTime`, or its first interval's.
    private(set) var startTime: Double = 0
    private(set) var intervals: [Interval] = []
    /// Comment lines, without their `#`.
    private(set) var comments: [String] = []

    /// Reads `path`; a line it cannot read is named with its number.
    init(path: String) throws {
        guard let data = FileManager.default.contents(atPath: path) else { throw ValidationError("cannot read \(path)") }
        var startTime: Double?
        var baseTime: Double?
        for (number, line) in String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = line.hasSuffix("\r") ? line.dropLast() : line
            func failure(_ why: String) -> ValidationError { ValidationError("\(path):\(number + 1): \(why)") }
            if line.hasPrefix("#") {
                if let time = Self.time(after: "#[StartTime: ", in: line) { startTime = time }
                if let time = Self.time(after: "#[BaseTime: ", in: line) { baseTime = time }
                comments.append(String(line.dropFirst()))
                continue
            }
            if line.isEmpty || line.hasPrefix("\"") || line.hasPrefix("Tag=") { continue }
            let fields = line.split(separator: ",", maxSplits: 3, omittingEmptySubsequences: false)
            guard fields.count == 4, let start = Double(fields[0]), let length = Double(fields[1]), Double(fields[2]) != nil else {
                throw failure("not an interval line (START,LENGTH,MAX,HISTOGRAM)")
            }
            // Timestamps are relative to the base time; without one, those more than a year
            // before the start time are taken as relative (HdrHistogram's own reading).
            let base = startTime ?? start
            if startTime == nil { startTime = start }
            if baseTime == nil { baseTime = start < base - 365 * 86_400 ? base : 0 }
            var histogram = Histogram<UInt64>.latencies()
            do {
                try HistogramCodec.decode(fields[3], into: &histogram)
            } catch {
                throw failure("\(error)")
            }
            intervals.append(Interval(start: start + (baseTime ?? 0), length: length, histogram: histogram))
        }
        guard let startTime else { throw ValidationError("\(path): no StartTime and no interval: not an HdrHistogram interval log") }
        self.startTime = startTime
    }

    /// The number after `prefix` in a `#[StartTime: 1796…  (…` comment.
    private static func time(after prefix: String, in line: Substring) -> Double? {
        guard line.hasPrefix(prefix) else { return nil }
        return Double(line.dropFirst(prefix.count).prefix { $0.isNumber || $0 == "." })
    }
}

extension Histogram where Count == UInt64 {
    /// The latency histograms of a run: microseconds from 1 to ten minutes, three digits.
    static func latencies() -> Self {
        Self(highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .three)
    }
}
