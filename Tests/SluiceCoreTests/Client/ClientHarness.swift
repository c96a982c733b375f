import Testing
@testable import SluiceCore

/// Content for tests: the message text, in both wire forms.
struct TestContent: SMTPContent {
    let text: String
    var data: [UInt8] { try! DataEncoder.dotStuffed(Array(text.utf8)) }
    var chunk: [UInt8] { try! DataEncoder.normalized(Array(text.utf8)) }
    var dataLength: Int { data.count }
    var chunkLength: Int { chunk.count }
    var requires8BitMIME: Bool { text.utf8.contains { $0 >= 0x80 } }
}

typealias Machine = ClientStateMachine<TestContent>
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

    init(_ configuration: Machine.Configuration = .init(ehloName: try! SMTPDomain("client.example"), tls: .none)) {
        machine = Machine(configuration: configuration, cryptography: OpenSSLCryptography())
    }

    static func render(_ pieces: [ClientOutput<TestContent>]) -> String {
        var bytes: [UInt8] = []
        for piece in pieces {
            switch piece {
            case .bytes(let b): bytes += b
            case .data(let content): bytes += content.data
            case .chunk(let content): bytes += content.chunk
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
                let text = Self.render(pieces)
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
    mutating func enqueue(_ transaction: SMTPTransaction<TestContent>) -> String {
        apply(machine.transactionEnqueued(transaction))
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
    -> SMTPTransaction<TestContent> {
    SMTPTransaction(id: id, from: address(from), recipients: recipients.map { .init(address($0)) },
                    content: TestContent(text: body))
}
