import SluiceCore

/// Arbitrary server bytes, in pieces of arbitrary size, through the reply parser: every
/// reply it returns has a valid code and lines within the limits; it throws rather than grow.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    var parser = ReplyParser()
    let split = bytes.first.map { Int($0) % 17 + 1 } ?? 1
    var index = 0
    do {
        while index < bytes.count {
            let end = min(bytes.count, index + split)
            parser.append(bytes[index..<end])
            index = end
            while let reply = try parser.nextReply() {
                precondition((200...599).contains(reply.code.rawValue) || (100...199).contains(reply.code.rawValue))
                precondition(reply.lines.allSatisfy { $0.utf8.count <= parser.limits.maximumLineLength })
            }
        }
    } catch {
        // A malformed reply is an error, which is the point.
    }
    return 0
}
