import FuzzSupport
import SluiceCore

/// A scripted greeting and EHLO, then arbitrary server bytes (after a first byte that sets the
/// extensions offered and the size of each read), into the client state machine
/// with AUTH and two transactions queued: it never traps, never sends a command after closing,
/// and reports every transaction exactly once (finished or not attempted) when it closes.
///
/// And it never reports a transaction accepted without the reply being able to answer its
/// content: the content must have gone out in an earlier event than the one that accepts it
/// (a reply that came with the 354, before the content was written, answers nothing), and
/// no event that ends the session with a protocol error (an extra reply, a reply before its
/// command, a 250 to DATA) reports anything accepted.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    // The first byte is not server bytes but the run's shape: bits 0-1 the extensions
    // offered (no PIPELINING, no CHUNKING), bit 2 AUTH PLAIN rather than the strongest
    // mechanism (SCRAM, which needs challenges), bits 3-7 how many bytes each read brings
    // (1 to 32).
    let control = size > 0 ? data[0] : 0
    let bytes = size > 1 ? Array(UnsafeBufferPointer(start: data + 1, count: size - 1)) : []
    let configuration = ClientStateMachine.Configuration(
        ehloName: try! SMTPDomain("client.example"), tls: .none,
        credentials: try! SASLCredentials.password(username: "ada", password: "secret"),
        forcedMechanism: control & 4 == 0 ? nil : .plain, allowPlaintextAuthentication: true)
    var machine = ClientStateMachine(configuration: configuration, cryptography: FakeCryptography())
    var tally = Tally()
    tally.apply(machine.connected())
    tally.apply(machine.bytesReceived(Array("220 mx.example ESMTP\r\n".utf8)))
    // DATA, with and without PIPELINING, is fuzzed as well as CHUNKING (a 354 exists only
    // without CHUNKING).
    var ehlo = "250-mx.example\r\n"
    if control & 1 == 0 { ehlo += "250-PIPELINING\r\n" }
    if control & 2 == 0 { ehlo += "250-CHUNKING\r\n" }
    ehlo += "250-AUTH PLAIN LOGIN CRAM-MD5 SCRAM-SHA-256\r\n250 8BITMIME\r\n"
    tally.apply(machine.bytesReceived(Array(ehlo.utf8)))
    let from = try! EnvelopeAddress("a@example.com")
    for id in 1...2 {
        let transaction = SMTPTransaction(id: id, from: from, recipients: [.init(try! EnvelopeAddress("r\(id)@example.org"))],
                                          content: SMTPContentInfo(dataLength: 10, chunkLength: 7, requires8BitMIME: false))
        tally.apply(machine.transactionEnqueued(transaction))
    }
    let split = Int(control >> 3) + 1
    var index = 0
    while index < bytes.count, !tally.closed {
        let end = min(bytes.count, index + split)
        tally.apply(machine.bytesReceived(bytes[index..<end]))
        index = end
    }
    if !tally.closed { tally.apply(machine.connectionClosed(error: nil)) }
    require(tally.reported.sorted() == [1, 2], "each transaction reported once: \(tally.reported)")
    return 0
}

struct Tally {
    var closed = false
    var reported: [Int] = []
    /// The event in which each transaction's content (DATA content or BDAT chunk) went out.
    var contentEvent: [Int: Int] = [:]
    var event = 0

    // Written as small functions: Swift 6.3.1's optimizer crashed (CopyPropagation, "Found
    // ownership error") on the same logic in one switch with nested loops, in release mode.
    mutating func apply(_ actions: [ClientStateMachine.Action]) {
        event += 1
        var accepted: [Int] = []
        var protocolError = false
        for action in actions {
            switch action {
            case .write(let pieces):
                require(!closed, "a write after close")
                noteContent(in: pieces)
            case .transactionFinished(let outcome):
                reported.append(outcome.id)
                if Self.acceptsAnything(outcome) { accepted.append(outcome.id) }
            case .transactionNotAttempted(let transaction):
                reported.append(transaction.id)
            case .close(let error):
                closed = true
                protocolError = Self.isProtocolViolation(error)
            default:
                break
            }
        }
        for id in accepted {
            require(contentEvent[id].map { $0 < event } == true,
                    "transaction \(id) accepted without its content having gone out before this event")
            require(!protocolError, "transaction \(id) accepted in an event that ended in a protocol error")
        }
    }
}

/// Deterministic stand-ins: the fuzzer is after the parsing, not the cryptography.
extension Tally {
    /// Records the event in which each transaction's content went out.
    mutating func noteContent(in pieces: [ClientOutput]) {
        for piece in pieces {
            if case .data(let id) = piece { contentEvent[id] = event }
            if case .chunk(let id) = piece { contentEvent[id] = event }
        }
    }

    static func acceptsAnything(_ outcome: TransactionOutcome) -> Bool {
        outcome.status == .accepted || outcome.recipients.contains { $0.status == .accepted }
    }

    static func isProtocolViolation(_ error: SMTPSessionError?) -> Bool {
        error?.kind == .protocolViolation
    }
}

/// Deterministic stand-ins: the fuzzer is after the parsing, not the cryptography.
struct FakeCryptography: SASLCryptography {
    func hash(_ algorithm: SASLHashAlgorithm, _ data: [UInt8]) -> [UInt8] { Array(repeating: 1, count: 32) }
    func hmac(_ algorithm: SASLHashAlgorithm, key: [UInt8], data: [UInt8]) -> [UInt8] { Array(repeating: 2, count: 32) }
    func pbkdf2(_ algorithm: SASLHashAlgorithm, password: [UInt8], salt: [UInt8], iterations: Int, length: Int) -> [UInt8] {
        Array(repeating: 3, count: length)
    }
    func randomBytes(_ count: Int) -> [UInt8] { Array(repeating: 4, count: count) }
}

@_cdecl("FuzzClientStateMachine_main")
func main(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runFuzzer(argc, argv) { data, size in data.map { fuzz($0, size) } ?? 0 }
}
