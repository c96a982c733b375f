import FuzzSupport
import SluiceCore

/// Arbitrary server bytes, in pieces of arbitrary size, through the reply parser: every
/// reply it returns has a valid code and lines within the limits; it throws rather than grow;
/// and the replies are the same as when the bytes come in one piece.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    var parser = ReplyParser()
    let split = bytes.first.map { Int($0) % 17 + 1 } ?? 1
    var index = 0
    var replies: [SMTPReply] = []
    do {
        while index < bytes.count {
            let end = min(bytes.count, index + split)
            parser.append(bytes[index..<end])
            index = end
            while let reply = try parser.nextReply() {
                require((100...599).contains(reply.code.rawValue), "reply code \(reply.code.rawValue)")
                require(reply.lines.allSatisfy { $0.utf8.count <= parser.limits.maximumLineLength }, "a reply line over the limit")
                replies.append(reply)
            }
            // What it holds after each read is bounded by the limits (plus the read itself):
            // past them it throws, it never grows.
            let bound = parser.limits.maximumReplyLength + parser.limits.maximumLineLength + split
            require(parser.bufferedByteCount <= bound, "the parser holds \(parser.bufferedByteCount) bytes, over \(bound)")
        }
    } catch {
        // A malformed reply is an error, which is the point.
    }
    // The same bytes in one piece. Where a limit is crossed can depend on the pieces, so
    // the replies of one reading are the start of the other's; they never differ.
    var whole = ReplyParser()
    whole.append(bytes)
    var wholeReplies: [SMTPReply] = []
    while let reply = try? whole.nextReply() { wholeReplies.append(reply) }
    let shorter = min(replies.count, wholeReplies.count)
    require(replies.prefix(shorter) == wholeReplies.prefix(shorter),
            "the replies differ with the bytes in pieces of \(split) and in one piece")
    return 0
}

@_cdecl("FuzzReplyParser_main")
func main(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runFuzzer(argc, argv) { data, size in data.map { fuzz($0, size) } ?? 0 }
}
