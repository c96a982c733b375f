import Benchmark
import SluiceCore
import SluiceSink
import SluiceTransport

/// Protocol-core benchmarks: instructions and allocations per reply parsed, per command
/// encoded, per message dot-stuffed, and per pipelined transaction through the client and
/// server state machines (no sockets).
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .cpuTotal, .instructions, .mallocCountTotal, .throughput],
        timeUnits: .nanoseconds,
        maxDuration: .seconds(3)
    )

    let replies = Array("250 2.1.0 Ok\r\n250 2.1.5 Ok\r\n354 End data with <CR><LF>.<CR><LF>\r\n250 2.0.0 Ok: queued as 4Bx\r\n".utf8)
    Benchmark("parse 4 pipelined replies", configuration: .init(scalingFactor: .kilo)) { benchmark in
        for _ in benchmark.scaledIterations {
            var parser = ReplyParser()
            parser.append(replies)
            var count = 0
            while let reply = try parser.nextReply() { count += reply.lines.count }
            blackHole(count)
        }
    }

    let ehlo = Array("250-mx.example.com\r\n250-PIPELINING\r\n250-SIZE 10240000\r\n250-STARTTLS\r\n250-AUTH PLAIN LOGIN\r\n250-ENHANCEDSTATUSCODES\r\n250-8BITMIME\r\n250-CHUNKING\r\n250 SMTPUTF8\r\n".utf8)
    Benchmark("parse EHLO reply and capabilities", configuration: .init(scalingFactor: .kilo)) { benchmark in
        for _ in benchmark.scaledIterations {
            var parser = ReplyParser()
            parser.append(ehlo)
            if let reply = try parser.nextReply() { blackHole(SMTPCapabilities(ehloReply: reply).pipelining) }
        }
    }

    let from = try! EnvelopeAddress("notifications@example.com")
    let to = try! EnvelopeAddress("someone.person@example.org")
    Benchmark("encode MAIL, RCPT, DATA", configuration: .init(scalingFactor: .kilo)) { benchmark in
        for _ in benchmark.scaledIterations {
            var bytes: [UInt8] = []
            bytes.reserveCapacity(128)
            SMTPCommand.mail(from: from, MailParameters(size: 1024)).encode(into: &bytes)
            SMTPCommand.recipient(to, RecipientParameters()).encode(into: &bytes)
            SMTPCommand.data.encode(into: &bytes)
            blackHole(bytes)
        }
    }

    Benchmark("validate an address", configuration: .init(scalingFactor: .kilo)) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try EnvelopeAddress("someone.person+tag@mail.example.org"))
        }
    }

    let message = Array((0..<16).map { "Line \($0) of a 1 KB message, with some text to fill it up to size....\r\n" }.joined().utf8)
    Benchmark("dot-stuff a 1 KB message", configuration: .init(scalingFactor: .kilo)) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try DataEncoder.dotStuffed(message))
        }
    }

    // One pipelined transaction through both machines in memory: the core's cost per message.
    Benchmark("client+server machines, 1 KB message", configuration: .init(scalingFactor: .kilo)) { benchmark in
        var server = ServerStateMachine(configuration: .init())
        var client = ClientStateMachine(
            configuration: .init(ehloName: try! SMTPDomain("client.example"), tls: .none), cryptography: NoCrypto())
        var toClient: [UInt8] = []
        for case .write(let bytes) in server.connected(secure: false) { toClient += bytes }
        _ = client.connected()
        var toServer = client.bytesReceived(toClient).bytes(data: [], chunk: [])
        toClient = respond(&server, toServer)
        _ = client.bytesReceived(toClient)
        let data = try! DataEncoder.dotStuffed(message)
        let chunk = try! DataEncoder.normalized(message)
        let content = SMTPContentInfo(dataLength: data.count, chunkLength: chunk.count, requires8BitMIME: false)
        benchmark.startMeasurement()
        for id in benchmark.scaledIterations {
            toServer = client.transactionEnqueued(SMTPTransaction(id: id, from: from, recipients: [.init(to)], content: content))
                .bytes(data: data, chunk: chunk)
            while !toServer.isEmpty {
                toClient = respond(&server, toServer)
                toServer = client.bytesReceived(toClient).bytes(data: data, chunk: chunk)
            }
        }
        benchmark.stopMeasurement()
    }
}

struct NoCrypto: SASLCryptography {
    func hash(_ algorithm: SASLHashAlgorithm, _ data: [UInt8]) -> [UInt8] { [] }
    func hmac(_ algorithm: SASLHashAlgorithm, key: [UInt8], data: [UInt8]) -> [UInt8] { [] }
    func pbkdf2(_ algorithm: SASLHashAlgorithm, password: [UInt8], salt: [UInt8], iterations: Int, length: Int) -> [UInt8] { [] }
    func randomBytes(_ count: Int) -> [UInt8] { [] }
}

extension Array where Element == ClientStateMachine.Action {
    /// The bytes the client's actions write, with the one message's two forms.
    func bytes(data: [UInt8], chunk: [UInt8]) -> [UInt8] {
        var out: [UInt8] = []
        for case .write(let pieces) in self {
            for piece in pieces {
                switch piece {
                case .bytes(let b): out += b
                case .data: out += data
                case .chunk: out += chunk
                }
            }
        }
        return out
    }
}

/// Feeds the server and returns what it writes, storing each message at once (as the
/// discard store does).
func respond(_ server: inout ServerStateMachine, _ input: [UInt8]) -> [UInt8] {
    var out: [UInt8] = []
    var actions = server.bytesReceived(input)
    while !actions.isEmpty {
        var next: [ServerStateMachine.Action] = []
        for action in actions {
            switch action {
            case .write(let bytes): out += bytes
            case .deliver: next += server.deliveryFinished(.stored(id: "x"))
            case .startTLS, .close, .authenticationFailed, .hold: break
            }
        }
        actions = next
    }
    return out
}
