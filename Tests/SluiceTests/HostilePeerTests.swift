import Foundation
import SluiceTestSupport
import Testing

/// `sluice send` against scripted servers that break the protocol the way a broken or hostile
/// relay does: nothing is reported accepted without a 2xx to the end of the content, and
/// nothing the server says reaches the terminal raw.
@Suite("sluice send against hostile peers")
struct HostilePeerTests {
    /// A server script from a table: the reply to each command verb (its first word, upper
    /// case), and `"<end of data>"` for the end of the content; QUIT gets 221.
    static func script(_ table: [String: String]) -> ScriptedSMTPServer.Script {
        { line in
            if line == "<end of data>" { return table["<end of data>"] }
            let verb = line.split(separator: " ").first.map { String($0).uppercased() } ?? ""
            if verb == "QUIT" { return "221 bye\r\n" }
            return table[verb] ?? "502 5.5.2 not in the script\r\n"
        }
    }

    static let ehloWithPipelining = "250-scripted.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n"
    static let ehloPlain = "250-scripted.test\r\n250 8BITMIME\r\n"

    /// Runs `sluice send --json` for one recipient against a server following `table`.
    static func send(_ table: [String: String], _ extra: [String] = []) async throws
        -> (status: Int32, report: SendCommandTests.Report?, output: String, error: String)? {
        let server = try await ScriptedSMTPServer.start(script: script(table))
        defer { Task { await server.shutdown() } }
        guard let run = try await SendCommandTests.send(
            nil, ["--from", "a@example.com", "--to", "b@example.org", "--text", "hello"] + extra, port: server.port)
        else { return nil }
        let report = extra.contains("--json") ? try? SendCommandTests.report(run.output) : nil
        return (run.status, report, run.output, run.error)
    }

    @Test func aFinalReplySentWithThe354IsNotAnAcceptance() async throws {
        guard let run = try await Self.send([
            "EHLO": Self.ehloWithPipelining, "MAIL": "250 ok\r\n", "RCPT": "250 ok\r\n",
            "DATA": "354 go ahead\r\n250 2.0.0 queued before the content\r\n",
            "<end of data>": "554 5.7.1 the real answer\r\n",
        ], ["--json"]) else { return }
        #expect(run.status != 0, "\(run.output)")
        #expect(run.report?.outcome == "deferred", "\(run.output)")
        #expect(run.report?.recipients.map(\.status) == ["deferred"])
        #expect(run.report?.error?.kind == "protocolViolation")
    }

    @Test(arguments: [true, false])
    func dataAnsweredWith250IsNotAnAcceptance(pipelining: Bool) async throws {
        guard let run = try await Self.send([
            "EHLO": pipelining ? Self.ehloWithPipelining : Self.ehloPlain, "MAIL": "250 ok\r\n", "RCPT": "250 ok\r\n",
            "DATA": "250 2.0.0 taken without content\r\n",
        ], ["--json"]) else { return }
        #expect(run.status != 0, "\(run.output)")
        #expect(run.report?.outcome == "deferred", "\(run.output)")
        #expect(run.report?.recipients.allSatisfy { $0.status != "accepted" } == true)
    }

    @Test(arguments: [true, false])
    func anExtraReplyIsNeverPairedWithTheNextCommand(pipelining: Bool) async throws {
        guard let run = try await Self.send([
            "EHLO": pipelining ? Self.ehloWithPipelining : Self.ehloPlain, "MAIL": "250 ok\r\n250 2.1.0 extra\r\n",
            "RCPT": "550 5.1.1 no such user\r\n", "DATA": "554 5.5.1 no valid recipients\r\n",
        ], ["--json"]) else { return }
        #expect(run.status != 0 && run.status != 2, "\(run.output)")
        #expect(run.report?.recipients.allSatisfy { $0.status != "accepted" } == true, "\(run.output)")
        #expect(run.report?.outcome != "accepted" && run.report?.outcome != "partiallyAccepted")
        #expect(run.report?.error?.kind == "protocolViolation")
    }

    /// ESC with a colour and a screen clear, an OSC window title ended by BEL, a backspace, DEL
    /// and a C1 CSI (U+009B).
    static let hostileText = "no \u{1b}[31mred\u{1b}[2J \u{1b}]0;pwned\u{07} back\u{08} del\u{7f} csi\u{9b}0m end"

    @Test func serverTextReachesTheTerminalWithItsControlCharactersVisible() async throws {
        let table = ["EHLO": Self.ehloPlain, "MAIL": "250 ok\r\n", "RCPT": "550 5.1.1 \(Self.hostileText)\r\n"]
        for extra in [["--transcript"], ["--json", "--transcript"]] {
            guard let run = try await Self.send(table, extra) else { return }
            #expect(run.status == 3, "every recipient refused: \(run.output)")
            for (name, text) in [("stdout", run.output), ("stderr", run.error)] {
                let raw = text.unicodeScalars.filter { $0.value < 0x20 && $0 != "\n" && $0 != "\t" || (0x7F...0x9F).contains($0.value) }
                #expect(raw.isEmpty, "\(extra) \(name) carries raw controls: \(raw.map { String($0.value, radix: 16) })")
            }
            #expect(run.error.contains("\\x1b]0;pwned\\x07"), "the transcript shows them escaped: \(run.error)")
            if extra.contains("--json") {
                // JSON keeps the text exactly, escaped: a parser gets the server's characters back.
                #expect(run.report?.recipients.first?.text == Self.hostileText, "\(run.output)")
                #expect(run.output.contains("\\u009b"))
            } else {
                #expect(run.output.contains("csi\\u009b0m"), "\(run.output)")
            }
        }
    }

    @Test func aMessageTheServersSIZERulesOutIsARefusalNotBadInput() async throws {
        guard let run = try await Self.send(["EHLO": "250-scripted.test\r\n250-8BITMIME\r\n250 SIZE 100\r\n"],
                                            ["--json", "--subject", String(repeating: "long ", count: 40)])
        else { return }
        #expect(run.status == 3, "exit 3: the server's limit refuses the message: \(run.output) \(run.error)")
        #expect(run.report?.outcome == "rejected")
        #expect(run.report?.error?.message.contains("takes at most 100") == true, "\(run.output)")
        #expect(run.report?.error?.enhancedCode == "5.3.4", "the code that says why, with no reply: \(run.output)")
        #expect(run.report?.error?.code == nil)
        #expect(run.report?.recipients.map(\.bounceClass) == ["message-too-large"], "\(run.output)")
    }

    @Test func eightBitContentForAServerWithout8BITMIMEIsARefusalNotBadInput() async throws {
        let file = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-8bit-\(UUID().uuidString).eml").path
        try Data("From: a@example.com\r\nTo: b@example.org\r\nSubject: x\r\n\r\nGrüße\r\n".utf8).write(to: URL(fileURLWithPath: file))
        defer { try? FileManager.default.removeItem(atPath: file) }
        let server = try await ScriptedSMTPServer.start(script: Self.script(["EHLO": "250 scripted.test\r\n"]))
        defer { Task { await server.shutdown() } }
        guard let run = try await SendCommandTests.send(
            nil, ["--from", "a@example.com", "--to", "b@example.org", "--eml", file, "--json"], port: server.port)
        else { return }
        #expect(run.status == 3, "\(run.output) \(run.error)")
        let report = try SendCommandTests.report(run.output)
        #expect(report.outcome == "rejected")
        #expect(report.recipients.map(\.bounceClass) == ["content"], "5.6.3, conversion required: \(run.output)")
        #expect(report.error?.message.contains("8BITMIME") == true)
    }
}
