import Testing
@testable import SluiceCore
import SluiceSink
import SluiceTestSupport

@Suite("Client and server machines together")
struct ClientServerTests {
    /// Runs `count` messages from a client machine to a server machine in memory.
    private func exchange(extensions configure: (inout Server.Configuration) -> Void, count: Int,
                          recipients: Int = 2) -> (outcomes: [TransactionOutcome], stored: [ReceivedMessage], writes: Int) {
        var configuration = Server.Configuration()
        configure(&configuration)
        var server = ServerHarness(configuration)
        var client = Harness()
        var toServer: [[UInt8]] = []
        var toClient: [[UInt8]] = [Array(server.connect().utf8)]
        client.apply(client.machine.connected())
        for id in 1...count {
            let body = "Subject: message \(id)\r\n\r\n.line starting with a dot\r\nbody \(id)\r\n"
            client.enqueue(transaction(id, from: "s@example.com", to: (1...recipients).map { "r\($0)@example.com" }, body: body))
        }
        var rounds = 0
        var writes = client.writes.count
        while rounds < 1000 {
            rounds += 1
            toServer += client.writes[writes...].map { Array($0.utf8) }
            writes = client.writes.count
            if toServer.isEmpty && toClient.isEmpty { break }
            for chunk in toServer { toClient.append(Array(server.client(chunk).utf8)) }
            toServer = []
            for chunk in toClient { client.apply(client.machine.bytesReceived(chunk)) }
            toClient = []
            if client.outcomes.count == count, client.writes.count == writes {
                client.apply(client.machine.quitRequested())
            }
        }
        return (client.outcomes, server.stored, client.writes.count)
    }

    @Test(arguments: ["pipelining", "chunking", "neither"])
    func everyMessageArrivesIntactAndIsReportedAccepted(_ mode: String) {
        let result = exchange(extensions: { configuration in
            configuration.pipelining = mode != "neither"
            configuration.chunking = mode == "chunking"
        }, count: 10)
        #expect(result.outcomes.count == 10)
        #expect(result.outcomes.allSatisfy { $0.status == .accepted && $0.acceptedRecipients.count == 2 })
        #expect(result.stored.count == 10)
        for (index, message) in result.stored.enumerated() {
            let text = String(decoding: message.content, as: UTF8.self)
            #expect(text == "Subject: message \(index + 1)\r\n\r\n.line starting with a dot\r\nbody \(index + 1)\r\n")
        }
        if mode == "pipelining" {
            // EHLO, one group, then one write per message (content with the next envelope), QUIT.
            #expect(result.writes <= 10 + 3, "one write per message: \(result.writes)")
        }
    }
}

@Suite("Server state machine: a policy's tarpit")
struct ServerTarpitTests {
    @Test func aDelayedRecipientHoldsItsReplyAndTheReadingUntilTheHoldEnds() {
        var faults = ScriptedFaults()
        faults.onRecipient["slow@example.com"] = .delay(.seconds(3))
        var machine = Server(configuration: .init(), policy: faults)
        _ = machine.connected(secure: false)
        let actions = machine.bytesReceived(Array(
            "EHLO c\r\nMAIL FROM:<s@example.com>\r\nRCPT TO:<slow@example.com>\r\nRCPT TO:<b@example.com>\r\n".utf8))
        func text(_ action: Server.Action) -> String? {
            if case .write(let bytes) = action { return String(decoding: bytes, as: UTF8.self) }
            return nil
        }
        // The replies before the held one go out first; then the hold; then the held reply;
        // and the second RCPT is not read yet.
        guard actions.count == 3, let before = text(actions[0]), case .hold(let duration) = actions[1], let held = text(actions[2])
        else {
            Issue.record("expected a write, a hold and a write: \(actions)")
            return
        }
        #expect(duration == .seconds(3))
        #expect(ServerHarness.codes(before) == ["250", "250"], "EHLO and MAIL: \(before)")
        #expect(ServerHarness.codes(held) == ["250"], "the held RCPT's own reply: \(held)")
        #expect(machine.bytesReceived(Array("NOOP\r\n".utf8)).isEmpty, "nothing is read while held")
        let after = machine.holdEnded().compactMap(text).joined()
        #expect(ServerHarness.codes(after) == ["250", "250"], "the second RCPT and the NOOP, once the hold ends: \(after)")
    }

    @Test func aDelayAnywhereButARecipientAnswersAtOnce() {
        var faults = ScriptedFaults()
        faults.onCommand["MAIL"] = .delay(.seconds(3))
        var h = ServerHarness(faults: faults)
        _ = h.connect()
        #expect(ServerHarness.codes(h.client("EHLO c\r\nMAIL FROM:<s@example.com>\r\n")) == ["250", "250"])
    }
}
