import ArgumentParser
import Foundation
import SluiceCore
import SluiceOutbox

/// `sluice bounces`: reports that come back after a relay took a message.
struct BouncesCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bounces",
        abstract: "Read the bounces and complaints that come back later into the outbox.",
        subcommands: [Ingest.self]
    )

    struct Ingest: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Record delivery status notifications (RFC 3464) and complaints (RFC 5965).",
            discussion: """
                Each message is read as a report: a recipient reported failed becomes bounced, \
                with the report's status and diagnostic, and joins the suppression list when the \
                failure is permanent and its class is in --suppress-on; a complaint (feedback type \
                abuse) adds the complainer with the reason complaint. A report is matched to its \
                message by the ENVID workers send, authenticated with the outbox's secret, else by \
                the returned Message-ID. One that is not a report, is malformed, forged, or about \
                no message of this outbox is refused with its reason and changes nothing.

                Reading the same report again changes nothing more. Prints one line a message \
                (one JSON object with --json). Exit status: 0 when every message was read, 65 \
                when some were refused (the rest were recorded), 64 and 69 as `sluice outbox`.
                """)
        @OptionGroup var options: OutboxOptions
        @Option(help: "A Maildir: the messages in its new/ and cur/ (or, if it has neither, the files in it).")
        var maildir: String?
        @Option(help: "An mbox file.")
        var mbox: String?
        @Argument(help: "Message files.")
        var files: [String] = []
        @Option(name: .customLong("suppress-on"),
                help: "Bounce classes whose permanent failures add the address to the suppression list, comma-separated, or none.",
                transform: parseBounceClasses)
        var suppressOn: Set<BounceClass> = BounceClassifier.hardClasses
        @Flag(help: "One JSON object a message.")
        var json = false

        func validate() throws {
            guard maildir != nil || mbox != nil || !files.isEmpty else {
                throw ValidationError("give --maildir DIR, --mbox FILE or message files")
            }
        }

        func run() async throws {
            let messages = try settingUp("bounces ingest") { try readMessages() }
            var refused = 0
            try await options.with("bounces ingest") { outbox in
                for (name, bytes) in messages {
                    do {
                        let result = try await outbox.ingestReport(bytes, suppressOn: suppressOn)
                        print(json ? compactJSON(Line(name: name, result: result)) : "\(name): \(result)".controlCharactersEscaped)
                    } catch let error as OutboxError where error.kind == .invalidInput {
                        refused += 1
                        print(json ? compactJSON(Line(name: name, refused: error.message)) : "\(name): refused: \(error.message)".controlCharactersEscaped)
                    }
                }
            }
            if refused > 0 { throw ExitCode(65) }
        }

        /// Every message, named by where it came from.
        private func readMessages() throws -> [(String, [UInt8])] {
            var messages: [(String, [UInt8])] = []
            let manager = FileManager.default
            if let maildir {
                var directories = ["new", "cur"].map { "\(maildir)/\($0)" }.filter { manager.fileExists(atPath: $0) }
                if directories.isEmpty { directories = [maildir] }
                for directory in directories {
                    guard let names = try? manager.contentsOfDirectory(atPath: directory) else {
                        throw ValidationError("--maildir: cannot read \(directory)")
                    }
                    for name in names.sorted() where !name.hasPrefix(".") {
                        let path = "\(directory)/\(name)"
                        var isDirectory: ObjCBool = false
                        guard manager.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue else { continue }
                        messages.append((path, try readFile(path, flag: "--maildir")))
                    }
                }
            }
            if let mbox {
                let bytes = try readFile(mbox, flag: "--mbox")
                for (index, message) in Self.splitMbox(bytes).enumerated() { messages.append(("\(mbox)#\(index + 1)", message)) }
            }
            for file in files { messages.append((file, try readFile(file, flag: "message file"))) }
            return messages
        }

        private func readFile(_ path: String, flag: String) throws -> [UInt8] {
            guard let data = FileManager.default.contents(atPath: path) else { throw ValidationError("\(flag): cannot read \(path)") }
            return Array(data)
        }

        /// The messages of an mbox: split at lines starting `From `, with `>From ` unquoted.
        static func splitMbox(_ bytes: [UInt8]) -> [[UInt8]] {
            var messages: [[UInt8]] = []
            var current: [UInt8]?
            var start = 0
            while start < bytes.count {
                var end = start
                while end < bytes.count, bytes[end] != 10 { end += 1 }
                let line = bytes[start..<min(end + 1, bytes.count)]
                if line.starts(with: Array("From ".utf8)) {
                    if let message = current { messages.append(message) }
                    current = []
                } else if current != nil {
                    var unquoted = line
                    if unquoted.starts(with: Array(">From ".utf8)) || (unquoted.first == UInt8(ascii: ">")
                        && unquoted.drop(while: { $0 == UInt8(ascii: ">") }).starts(with: Array("From ".utf8))) {
                        unquoted = unquoted.dropFirst()
                    }
                    current?.append(contentsOf: unquoted)
                }
                start = end + 1
            }
            if let message = current { messages.append(message) }
            return messages
        }
    }
}

/// `bounces ingest --json`: one line a message.
private struct Line: Encodable {
    struct Bounce: Encodable {
        var message: Int64
        var address: String
        var status: String
        var bounceClass: String
        var suppressed: Bool
    }
    var source: String
    var kind: String?
    var bounced: [Bounce]?
    var complaints: [String]?
    var unchanged: [String]?
    var refused: String?

    init(name: String, result: ReportIngestion) {
        source = name
        kind = result.kind
        bounced = result.bounced.map {
            Bounce(message: $0.messageID, address: $0.address, status: $0.status, bounceClass: $0.bounceClass.rawValue,
                   suppressed: $0.suppressed)
        }
        complaints = result.complaints
        unchanged = result.unchanged
    }

    init(name: String, refused: String) {
        source = name
        self.refused = refused
    }
}
