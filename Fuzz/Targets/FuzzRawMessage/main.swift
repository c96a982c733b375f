import FuzzSupport
import SluiceMIME

/// Arbitrary bytes as an existing message: what RawMessage accepts has only CRLF line
/// endings, no NUL, no line over 998 octets, and a header section that ends where it says.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    guard let message = try? RawMessage(UnsafeBufferPointer(start: data, count: size)) else { return 0 }
    let bytes = message.bytes
    require(bytes.count >= 2 && bytes.suffix(2) == [13, 10], "the message does not end in CRLF")
    require(message.headerLength <= bytes.count, "header length \(message.headerLength) beyond \(bytes.count) bytes")
    // The header section ends where it says: at the first empty line, which it includes, or
    // at the end of a message with no empty line (no body).
    let blank: [UInt8] = [13, 10, 13, 10]
    let firstBlank = bytes.count >= 4
        ? (0...(bytes.count - 4)).first { bytes[$0..<$0 + 4].elementsEqual(blank) } : nil
    let startsBlank = bytes.starts(with: [13, 10])
    if startsBlank {
        require(message.headerLength == 2, "an empty header section is the first CRLF: \(message.headerLength)")
    } else if let firstBlank {
        require(message.headerLength == firstBlank + 4, "header section \(message.headerLength), first blank line at \(firstBlank)")
    } else {
        require(message.headerLength == bytes.count, "no blank line, yet a header section of \(message.headerLength)")
    }
    var lineLength = 0
    var index = 0
    while index < bytes.count {
        switch bytes[index] {
        case 13:
            require(index + 1 < bytes.count && bytes[index + 1] == 10, "a bare CR")
            require(lineLength <= 998, "a line of \(lineLength) octets")
            lineLength = 0
            index += 2
            continue
        case 10: preconditionFailure("a bare LF")
        case 0: preconditionFailure("a NUL")
        default: lineLength += 1
        }
        index += 1
    }
    _ = message.headerValues("From")
    _ = message.messageID
    return 0
}

@_cdecl("FuzzRawMessage_main")
func main(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runFuzzer(argc, argv) { data, size in data.map { fuzz($0, size) } ?? 0 }
}
