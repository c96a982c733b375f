import Foundation
import SluiceMIME
import SluiceTestSupport
import Testing

/// What Python's standard `email` package (policy `default`) reads in a message: the
/// independent parser the MIME tests compare Sluice's output with.
struct PythonView: Decodable {
    struct Mailbox: Decodable, Equatable {
        let name: String
        let address: String
    }
    struct Attachment: Decodable {
        let fileName: String?
        let contentType: String
        let disposition: String?
        let contentID: String?
        let data: String
        var bytes: [UInt8] { Array(Data(base64Encoded: data) ?? Data()) }
    }
    let error: String?
    let headers: [[String]]?
    let defects: [String]?
    let subject: String?
    let from: [Mailbox]?
    let sender: [Mailbox]?
    let to: [Mailbox]?
    let cc: [Mailbox]?
    let replyTo: [Mailbox]?
    /// Display names by header, read through the legacy API (RFC 2047 §6.2 whitespace rules).
    let legacyNames: [String: [String]?]?
    let contentType: String?
    let text: String?
    let html: String?
    let attachments: [Attachment]?

    /// The header names, in order.
    var headerNames: [String] { (headers ?? []).map { $0[0] } }
}

enum PythonEmail {
    /// Parses every message with Python in one process; nil when Python is missing outside
    /// CI (under CI that is a recorded failure).
    static func read(_ messages: [RawMessage]) async throws -> [PythonView]? {
        guard let python = await peerPython(importing: ["email"]) else { return nil }
        let script = packageRoot() + "/Tests/SluiceMIMETests/Support/read_messages.py"
        // Through a file: a pipe both ways would deadlock once both pipe buffers are full.
        let input = messages.map { Data($0.bytes).base64EncodedString() }.joined(separator: "\n") + "\n"
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-mime-\(UUID().uuidString).txt")
        try Data(input.utf8).write(to: path)
        defer { try? FileManager.default.removeItem(at: path) }
        let result = try await runInBackground(python, [script, path.path])
        guard result.status == 0 else {
            Issue.record("read_messages.py failed: \(result.error)")
            return nil
        }
        let lines = result.output.split(separator: "\n")
        #expect(lines.count == messages.count, "one description per message")
        return try lines.map { try JSONDecoder().decode(PythonView.self, from: Data($0.utf8)) }
    }

    /// Parses one message.
    static func read(_ message: RawMessage) async throws -> PythonView? {
        try await read([message])?.first
    }
}

/// The text Python's `get_content()` returns for a body built from `text`: line endings as
/// LF, ending with one.
func expectedText(_ text: String) -> String {
    var normalized = text.replacingOccurrences(of: "\r\n", with: "\n").replacingOccurrences(of: "\r", with: "\n")
    if !normalized.hasSuffix("\n") { normalized += "\n" }
    return normalized
}

/// Checks the rules every encoded message keeps: it passes RawMessage's checks again (CRLF
/// only, no NUL, no line over 998 octets, a well-formed header section with From), header
/// lines are at most 78 characters unless one word is longer, and encoded body lines at
/// most 76.
func checkWireRules(_ message: RawMessage, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(throws: Never.self, sourceLocation: sourceLocation) { try RawMessage(message.bytes) }
    let bytes = message.bytes
    var start = 0
    var inHeader = true
    while start < bytes.count {
        var end = start
        while end + 1 < bytes.count, !(bytes[end] == 13 && bytes[end + 1] == 10) {
            #expect(bytes[end] != 13 && bytes[end] != 10, "a bare CR or LF at \(end)", sourceLocation: sourceLocation)
            end += 1
        }
        let length = end - start
        #expect(length <= 998, "line over 998 octets at \(start)", sourceLocation: sourceLocation)
        if inHeader {
            if length == 0 { inHeader = false }
            let line = bytes[start..<end]
            let longestWord = line.split(separator: 32).map(\.count).max() ?? 0
            #expect(length <= 78 || longestWord > 60, "header line of \(length): \(String(decoding: line, as: UTF8.self))",
                    sourceLocation: sourceLocation)
        }
        start = end + 2
    }
}
