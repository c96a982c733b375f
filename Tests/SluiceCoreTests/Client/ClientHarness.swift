import Testing
@testable import SluiceCore
import SluiceTransport  // OpenSSLCryptography, as the client wires it

/// A transaction with its body, which the harness keeps to render what the machine writes.
struct TestTransaction {
    let transaction: SMTPTransaction
    let body: String
    var data: [UInt8] { try! DataEncoder.dotStuffed(Array(body.utf8)) }
    var chunk: [UInt8] { try! DataEncoder.normalized(Array(body.utf8)) }
}

typealias Machine = ClientStateMachine
typealias Action = Machine.Action

/// Drives a client machine through a transcript: server text in, rendered writes out.
struct Harness {
    var machine: Machine
    /// Each write, rendered to text, in order.
    var writes: [String] = []
    var outcomes: [TransactionOutcome] = []
    var notAttempted: [Int] = []
    var closed: SMTPSessionError?? = .none
    var timers: [Duration] = []
    var startedTLS = false
    var ready: SMTPCapabilities?
    /// The bodies of enqueued transactions, by id.
    var bodies: [Int: TestTransaction] = [:]

    init(_ configuration: Machine.Configuration = .init(ehloName: try! SMTPDomain("client.example"), tls: .none)) {
        machine = Machine(configuration: configuration, cryptography: OpenSSLCryptography())
    }

    func render(_ pieces: [ClientOutput]) -> String {
        var bytes: [UInt8] = []
        for piece in pieces {
            switch piece {
            case .bytes(let b): bytes += b
            case .data(let id): bytes += bodies[id]!.data
            case .chunk(let id): bytes += bodies[id]!.chunk
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Records what the actions say, and returns the text written by them (joined).
    @discardableResult
    mutating func apply(_ actions: [Action]) -> String {
        var written = ""
        for action in actions {
            switch action {
            case .write(let pieces):
                let text = render(pieces)
                writes.append(text)
                written += text
            case .startTLS: startedTLS = true
            case .sessionReady(let capabilities): ready = capabilities
            case .transactionFinished(let outcome): outcomes.append(outcome)
            case .transactionNotAttempted(let transaction): notAttempted.append(transaction.id)
            case .armTimer(let duration): timers.append(duration)
            case .cancelTimer: break
            case .close(let error): closed = .some(error)
            }
        }
        return written
    }

    /// The server says `text`; returns what the client wrote in response.
    @discardableResult
    mutating func server(_ text: String) -> String {
        apply(machine.bytesReceived(Array(text.utf8)))
    }

    mutating func connect() -> String { apply(machine.connected()) }

    @discardableResult
    mutating func enqueue(_ test: TestTransaction) -> String {
        bodies[test.transaction.id] = test
        return apply(machine.transactionEnqueued(test.transaction))
    }

    /// Connects and answers greeting and EHLO with `extensions`.
    mutating func establish(extensions: [String] = ["PIPELINING", "8BITMIME"]) {
        _ = connect()
        let ehlo = server("220 mx.example ESMTP\r\n")
        #expect(ehlo == "EHLO client.example\r\n")
        let lines = ["mx.example"] + extensions
        var reply = ""
        for (index, line) in lines.enumerated() { reply += "250\(index == lines.count - 1 ? " " : "-")\(line)\r\n" }
        server(reply)
        #expect(ready != nil, "the session is ready")
    }

    var closeError: SMTPSessionError? { closed.flatMap { $0 } }
    var isClosed: Bool { closed != nil }
}

func address(_ text: String) -> EnvelopeAddress { try! EnvelopeAddress(text) }

func transaction(_ id: Int, from: String = "sender@example.com", to recipients: [String], body: String = "Subject: hi\r\n\r\nHello\r\n")
    -> TestTransaction {
    let data = try! DataEncoder.dotStuffed(Array(body.utf8))
    let chunk = try! DataEncoder.normalized(Array(body.utf8))
    let info = SMTPContentInfo(dataLength: data.count, chunkLength: chunk.count,
                               requires8BitMIME: body.utf8.contains { $0 >= 0x80 })
    return TestTransaction(
        transaction: SMTPTransaction(id: id, from: address(from), recipients: recipients.map { .init(address($0)) }, content: info),
        body: body)
}
