import FuzzSupport
import SluiceCore
import SluiceSink

/// Arbitrary client bytes through the sink's server state machine (AUTH users, small limits):
/// it never traps, answers with replies that end in CRLF, never delivers content that exceeds
/// the size limit or (unless declared BINARYMIME) holds a bare CR or LF, and does nothing at
/// all once it has closed, whatever arrives after.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    var configuration = ServerStateMachine.Configuration()
    configuration.users = ["ada": "secret"]
    configuration.authenticationRequiresTLS = false
    configuration.maximumMessageSize = 4_096
    configuration.maximumRecipients = 5
    configuration.maximumCommandLength = 512
    var machine = ServerStateMachine(configuration: configuration)
    check(machine.connected(secure: false), limit: configuration.maximumMessageSize)
    let split = bytes.first.map { Int($0) % 31 + 1 } ?? 1
    var index = 0
    var closed = false
    while index < bytes.count {
        let end = min(bytes.count, index + split)
        // What the driver does in answer (store a message, end a hold after a failed AUTH) can
        // bring more actions, which are checked in turn.
        // Every read is fed, after a close too: a closed machine must do nothing more.
        var actions = machine.bytesReceived(bytes[index..<end])
        require(!closed || actions.isEmpty, "actions after the close: \(actions.count)")
        while !actions.isEmpty {
            if check(actions, limit: configuration.maximumMessageSize) { closed = true }
            var next: [ServerStateMachine.Action] = []
            for action in actions {
                switch action {
                case .deliver: next += machine.deliveryFinished(.stored(id: "1"))
                case .authenticationFailed, .hold: next += machine.holdEnded()
                case .write, .close, .startTLS: break
                }
            }
            actions = next
        }
        index = end
    }
    return 0
}

/// Checks the actions; true when the machine closed.
@discardableResult
func check(_ actions: [ServerStateMachine.Action], limit: Int) -> Bool {
    var closed = false
    for action in actions {
        switch action {
        case .write(let reply):
            require(reply.count >= 5 && reply.suffix(2) == [13, 10], "a reply ends with CRLF: \(reply)")
        case .deliver(let message):
            require(message.content.count <= limit, "content over the size limit was delivered")
            if message.parameters.body == .binaryMIME { break }  // binary content is taken as sent
            var previous: UInt8 = 0
            for (offset, byte) in message.content.enumerated() {
                if byte == 10 { require(previous == 13, "a bare LF was delivered") }
                if previous == 13 { require(byte == 10, "a bare CR was delivered at \(offset)") }
                previous = byte
            }
            // The loop checks a CR against the byte after it; the last byte has none.
            require(previous != 13, "a bare CR was delivered as the content's last byte")
        case .close:
            closed = true
        case .startTLS, .authenticationFailed, .hold:
            break
        }
    }
    return closed
}

@_cdecl("FuzzServerCommands_main")
func main(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runFuzzer(argc, argv) { data, size in data.map { fuzz($0, size) } ?? 0 }
}
