import Testing
@testable import SluiceCore

/// Drives the transaction pipeline on its own: no opening, parser, timer or transport.
struct PipelineDriver {
    var pipeline: PipelineStateMachine
    var effects = ClientEffects()
    var bodies: [Int: TestTransaction] = [:]

    init(extensions: [String], maximumTransactionsInFlight: Int = 8) {
        let configuration = ClientStateMachine.Configuration(
            ehloName: try! SMTPDomain("client.example"), tls: .none, maximumTransactionsInFlight: maximumTransactionsInFlight)
        pipeline = PipelineStateMachine(configuration: configuration)
        let lines = ["mx.example"] + extensions
        let text = lines.enumerated().map { "250\($0.offset == lines.count - 1 ? " " : "-")\($0.element)\r\n" }.joined()
        pipeline.features = .init(SMTPCapabilities(ehloReply: OpeningStateMachineTests.reply(text)), configuration)
    }

    mutating func enqueue(_ test: TestTransaction) {
        bodies[test.transaction.id] = test
        pipeline.enqueue(test.transaction)
    }

    /// Pumps, and returns what it wrote (handed to the connection).
    mutating func pump(quitting: Bool = false) -> String {
        pipeline.pump(quitting: quitting, into: &effects)
        return written()
    }

    /// The output so far, rendered (content as `<data N>` or `<chunk N>`), now handed over.
    mutating func written() -> String {
        defer { pipeline.outputWritten() }
        return (effects.output.take() ?? []).map { piece in
            switch piece {
            case .bytes(let bytes): String(decoding: bytes, as: UTF8.self)
            case .data(let id): "<data \(id)>"
            case .chunk(let id): "<chunk \(id)>"
            }
        }.joined()
    }

    mutating func server(_ text: String) -> PipelineStateMachine.ReplyVerdict {
        pipeline.replyReceived(OpeningStateMachineTests.reply(text), into: &effects)
    }

    var outcomes: [TransactionOutcome] {
        effects.actions.compactMap { if case .transactionFinished(let outcome) = $0 { outcome } else { nil } }
    }

    var notAttempted: [Int] {
        effects.actions.compactMap { if case .transactionNotAttempted(let transaction) = $0 { transaction.id } else { nil } }
    }
}

extension PipelineStateMachine.ReplyVerdict {
    var isNext: Bool { if case .next = self { true } else { false } }
    var failure: SMTPSessionError?? { if case .fail(let error) = self { .some(error) } else { .none } }
}

@Suite("Client pipeline state machine")
struct PipelineStateMachineTests {
    @Test func thePipelinedEnvelopeGoesInOneWriteAndEachRecipientKeepsItsReply() {
        var driver = PipelineDriver(extensions: ["PIPELINING"])
        driver.enqueue(transaction(1, to: ["a@example.com", "b@example.com"]))
        #expect(driver.pump() == "MAIL FROM:<sender@example.com>\r\nRCPT TO:<a@example.com>\r\nRCPT TO:<b@example.com>\r\nDATA\r\n")
        #expect(driver.pipeline.awaited == .mail(1))
        #expect(driver.server("250 ok\r\n").isNext && driver.server("250 ok\r\n").isNext)
        #expect(driver.server("550 5.1.1 no such user\r\n").isNext)
        #expect(driver.written().isEmpty, "nothing goes before the 354")
        #expect(driver.server("354 go\r\n").isNext)
        #expect(driver.written() == "<data 1>")
        #expect(driver.pipeline.awaited == .content(1))
        #expect(driver.server("250 2.0.0 queued\r\n").isNext)
        #expect(driver.outcomes.map(\.status) == [.accepted])
        #expect(driver.outcomes.first?.recipients.map(\.status) == [.accepted, .rejected])
        #expect(driver.pipeline.isIdle)
    }

    @Test func withoutPipeliningEachCommandWaitsForTheReplyBeforeIt() {
        var driver = PipelineDriver(extensions: [])
        driver.enqueue(transaction(1, to: ["a@example.com", "b@example.com"]))
        #expect(driver.pump() == "MAIL FROM:<sender@example.com>\r\n")
        #expect(driver.pump().isEmpty, "one command, one reply")
        #expect(driver.server("250 ok\r\n").isNext)
        #expect(driver.pump() == "RCPT TO:<a@example.com>\r\n")
        #expect(driver.server("550 no\r\n").isNext)
        #expect(driver.pump() == "RCPT TO:<b@example.com>\r\n")
        #expect(driver.server("550 no\r\n").isNext)
        #expect(driver.pump().isEmpty, "no recipient accepted: DATA is never sent")
        #expect(driver.outcomes.map(\.status) == [.rejected])
    }

    @Test func chunkingKeepsNoMoreThanTheLimitInFlight() {
        var driver = PipelineDriver(extensions: ["PIPELINING", "CHUNKING"], maximumTransactionsInFlight: 2)
        for id in 1...3 { driver.enqueue(transaction(id, to: ["a@example.com"])) }
        let first = driver.pump()
        #expect(first.components(separatedBy: "MAIL FROM").count - 1 == 2, "\(first)")
        #expect(first.contains("<chunk 1>") && first.contains("<chunk 2>") && !first.contains("<chunk 3>"))
        #expect(first.contains("BDAT "), "\(first)")
        #expect(driver.pipeline.load == 3)
        for _ in 0..<3 { #expect(driver.server("250 ok\r\n").isNext) }  // MAIL, RCPT, BDAT of the first
        let next = driver.pump()
        #expect(next.contains("<chunk 3>"), "a place opened: \(next)")
        #expect(driver.outcomes.map(\.id) == [1])
    }

    @Test func aReplyToACommandNotYetHandedOverBreaksThePairing() {
        var driver = PipelineDriver(extensions: ["PIPELINING"])
        driver.enqueue(transaction(1, to: ["a@example.com"]))
        driver.pipeline.pump(quitting: false, into: &driver.effects)  // written to the output, not handed over
        #expect(driver.server("250 ok\r\n").failure??.kind == .protocolViolation)
    }

    @Test func aLostSessionSettlesContentSentAsUnknownAndTheQueueAsNotAttempted() {
        var driver = PipelineDriver(extensions: ["PIPELINING"])
        driver.enqueue(transaction(1, to: ["a@example.com"]))
        driver.enqueue(transaction(2, to: ["b@example.com"]))
        _ = driver.pump()
        for reply in ["250 ok\r\n", "250 ok\r\n", "354 go\r\n"] { #expect(driver.server(reply).isNext) }
        let written = driver.pump()
        #expect(written.hasPrefix("<data 1>") && written.contains("MAIL FROM"), "the next envelope rides with the content")
        driver.pipeline.settle(after: SMTPSessionError(.connectionLost, "gone"), closingReply: nil, into: &driver.effects)
        #expect(driver.outcomes.map(\.id) == [1, 2])
        #expect(driver.outcomes.map(\.status) == [.unknown, .deferred], "only the first's content was sent")
        #expect(driver.pipeline.isIdle && driver.pipeline.load == 0)

        var queued = PipelineDriver(extensions: ["PIPELINING"])
        queued.enqueue(transaction(7, to: ["a@example.com"]))
        queued.pipeline.settle(after: nil, closingReply: nil, into: &queued.effects)
        #expect(queued.notAttempted == [7] && queued.outcomes.isEmpty)
    }

    @Test func aProbeGoesAloneAndTheTransactionWaitsForItsAnswer() {
        var driver = PipelineDriver(extensions: ["PIPELINING", "CHUNKING"])
        driver.enqueue(transaction(1, to: ["a@example.com"]))
        _ = driver.pump()
        for _ in 0..<3 { #expect(driver.server("250 ok\r\n").isNext) }
        #expect(driver.outcomes.map(\.status) == [.accepted])
        driver.pipeline.probeBeforeNextTransaction()
        driver.enqueue(transaction(2, to: ["a@example.com"]))
        #expect(driver.pump() == "RSET\r\n")
        #expect(driver.pipeline.awaited == .probe)
        #expect(driver.server("250 ok\r\n").isNext)
        let next = driver.pump()
        #expect(next.hasPrefix("MAIL FROM:<sender@example.com>\r\n"), "the probe's RSET already reset the session: \(next)")
    }

    @Test func quittingSendsQUITOnceNothingIsInFlight() {
        var driver = PipelineDriver(extensions: ["PIPELINING"])
        driver.enqueue(transaction(1, to: ["a@example.com"]))
        _ = driver.pump()
        #expect(driver.pump(quitting: true).isEmpty, "the transaction in flight finishes first")
        for reply in ["250 ok\r\n", "250 ok\r\n", "354 go\r\n"] { #expect(driver.server(reply).isNext) }
        _ = driver.written()
        #expect(driver.server("250 queued\r\n").isNext)
        #expect(driver.pump(quitting: true) == "QUIT\r\n")
        #expect(driver.pipeline.awaitsOnlyQuit)
        guard case .quitAnswered = driver.server("221 bye\r\n") else {
            Issue.record("the 221 answers QUIT")
            return
        }
    }
}
