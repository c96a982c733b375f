import ArgumentParser
import Foundation
import Sluice
import SluiceCore
import SluiceMIME
import SluiceOutbox

/// `sluice outbox`: the spool's operator commands.
struct OutboxCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "outbox",
        abstract: "Create, fill and inspect a durable outbox (SQLite or PostgreSQL).",
        discussion: """
            Every subcommand takes --outbox URL, or the environment variable SLUICE_OUTBOX, \
            else sqlite:sluice-outbox.db in the working directory. PostgreSQL is named as libpq \
            names it: postgresql://user@host/db or 'host=/run/postgresql dbname=mail', with the \
            password in PGPASSWORD or ~/.pgpass (never in the URL). `sluice worker` delivers it.

            Exit status: 0 done, 64 invalid input or URL (nothing was written), 69 the outbox \
            cannot be used (unreachable, not initialised, or a schema newer than this sluice).
            """,
        subcommands: [Init.self, Enqueue.self, Status.self, List.self, Show.self, Retry.self, Cancel.self, Purge.self]
    )

    struct Init: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Create the outbox's schema, or migrate an older one; a newer one is refused, untouched.")
        @OptionGroup var options: OutboxOptions

        func run() async throws {
            try await options.with("init") { outbox in
                let before = try await outbox.initialize()
                let now = type(of: outbox.store).schemaVersion
                let what = before == 0 ? "created at schema version \(now)"
                    : before == now ? "already at schema version \(now)" : "migrated from schema version \(before) to \(now)"
                print("outbox \(options.url): \(what)")
            }
        }
    }

    struct Enqueue: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add messages; prints one id a line.",
            discussion: """
                With --eml, each file is one message; its envelope comes from --from and --to, \
                or else from its headers (Sender or From; every To, Cc and Bcc). Bcc fields are \
                removed before it is stored.

                Without --eml, standard input holds one JSON object a line: \
                {"from": "a@example.com", "to": ["b@example.org"], "eml": "PATH"} or "raw": "the \
                message" instead of "eml", with optional "idempotencyKey" and "notBefore" \
                (RFC 3339). Every line is checked before anything is written: one bad line \
                enqueues nothing.
                """)
        @OptionGroup var options: OutboxOptions
        @Option(parsing: .upToNextOption, help: "RFC 5322 message files to enqueue.")
        var eml: [String] = []
        @Option(help: "The envelope sender for --eml (empty for <>).")
        var from: String?
        @Option(help: "An envelope recipient for --eml; repeatable, or comma-separated.")
        var to: [String] = []
        @Option(name: .customLong("idempotency-key"), help: "With one --eml file: enqueue it only once under this key.")
        var idempotencyKey: String?
        @Option(name: .customLong("not-before"), help: "Send no earlier than this time (RFC 3339).")
        var notBefore: String?
        @Option(name: .customLong("max-size"), help: "The largest message accepted, in octets.")
        var maxSize = 10_240_000

        func validate() throws {
            if eml.isEmpty, from != nil || !to.isEmpty || idempotencyKey != nil || notBefore != nil {
                throw ValidationError("--from, --to, --idempotency-key and --not-before go with --eml; on standard input each line says its own")
            }
            if idempotencyKey != nil, eml.count > 1 { throw ValidationError("--idempotency-key names one message; give one --eml file") }
            if let notBefore, parseRFC3339(notBefore) == nil {
                throw ValidationError("--not-before '\(notBefore)' is not an RFC 3339 time (2026-12-24T08:00:00Z)")
            }
        }

        func run() async throws {
            guard eml.isEmpty else {
                let messages = try settingUp("outbox enqueue", nothingWritten: true) {
                    try eml.map { ("--eml \($0)", try emlMessage($0)) }
                }
                try await options.with("outbox enqueue", maximumMessageSize: maxSize) { outbox in
                    try await Self.checkSchema(of: outbox)
                    let checked = try messages.map { (source, message) throws(OutboxError) in
                        try Self.check(message, from: source, in: outbox)
                    }
                    var writer = BatchWriter(outboxes: [outbox])
                    for message in checked { try await writer.add(message) }
                    try await writer.finish()
                }
                return
            }
            let input = try settingUp("outbox enqueue", nothingWritten: true) { try InputLines() }
            try await options.with("outbox enqueue", maximumMessageSize: maxSize) { outbox in
                try await Self.checkSchema(of: outbox)
                let decoder = JSONDecoder()
                // Every line is checked before the first is written; then they are read again
                // and written a thousand to a transaction.
                // A large input is checked in two halves at once, one a core: the check took a
                // fifth of the command's time, and no write can start before it ends.
                do {
                    if let (first, second) = try input.halves() {
                        async let later = Self.firstError(in: second, of: input, for: outbox)
                        if let error = await Self.firstError(in: first, of: input, for: outbox) { throw error }
                        if let error = await later { throw error }
                    } else if let error = await Self.firstError(in: input.whole, of: input, for: outbox) {
                        throw error
                    }
                } catch let error as ValidationError {
                    FileHandle.standardError.write(Data("sluice outbox enqueue: \(error.message); nothing was enqueued\n".utf8))
                    throw ExitCode(64)
                }
                // Over PostgreSQL a second connection writes every other batch: one backend,
                // writing while the command waited, was the limit. Without it (the server at its
                // connection limit, say), one connection does it all.
                let second = outbox.store is PostgresStore
                    ? try? await OutboxOptions.open(options.url, maximumMessageSize: maxSize) : nil
                var writer = BatchWriter(outboxes: [outbox] + (second.map { [$0] } ?? []))
                do {
                    try await input.forEach { number, line in
                        guard let message = try Self.message(fromLine: line, number: number, decoder: decoder) else { return }
                        try await writer.add(Self.check(message, from: "line \(number)", in: outbox, beforeWriting: false))
                    }
                    try await writer.finish()
                    await second?.close()
                } catch {
                    // Only what changed since the check can fail here (a file gone, the store).
                    await writer.abandon()
                    await second?.close()
                    let done = writer.written == 0 ? "; nothing was enqueued"
                        : "; the first \(writer.written) messages were enqueued (their ids are above), none after them"
                    if let error = error as? OutboxError { throw OutboxError(error.kind, error.message + done) }
                    FileHandle.standardError.write(Data("sluice outbox enqueue: \((error as? ValidationError)?.message ?? "\(error)")\(done)\n".utf8))
                    throw ExitCode(64)
                }
            }
        }

        /// Checks the lines of `part`: the first bad one's error, or nil when every line is good.
        private static func firstError(in part: InputLines.Part, of input: InputLines, for outbox: Outbox) async -> (any Error)? {
            let decoder = JSONDecoder()
            do {
                try await input.forEach(in: part) { number, line in
                    // The other half found a bad line before this one's: this one's is not needed.
                    try Task.checkCancellation()
                    guard let message = try Self.message(fromLine: line, number: number, decoder: decoder) else { return }
                    try Self.check(message, from: "line \(number)", in: outbox)
                }
                return nil
            } catch {
                return error
            }
        }

        /// A store without a schema, or with one too new, is refused before any input is read:
        /// reading a large input in full only to be told to run `outbox init` wastes the wait.
        private static func checkSchema(of outbox: Outbox) async throws(OutboxError) {
            do throws(OutboxError) {
                try await outbox.store.checkSchema()
            } catch {
                throw OutboxError(error.kind, "\(error.message); nothing was enqueued")
            }
        }

        /// Checks a message, naming `source` in the error. The first check of the input says that
        /// nothing was enqueued. The second, as each line is written (a file it names may have
        /// changed since), leaves that to the caller: earlier batches may have been written.
        @discardableResult
        private static func check(_ message: OutboxMessage, from source: String, in outbox: Outbox,
                                  beforeWriting: Bool = true) throws(OutboxError) -> PreparedMessage
        {
            do throws(OutboxError) {
                return try outbox.check(message)
            } catch {
                throw OutboxError(error.kind, "\(source): \(error.message)" + (beforeWriting ? "; nothing was enqueued" : ""))
            }
        }

        /// Writes messages a thousand to a transaction, printing each one's id as its batch is
        /// written.
        ///
        /// Messages come checked. A full batch is written in a task of its own while the next is
        /// read and checked, so that neither side waits for the other; with two outboxes (two
        /// connections to one PostgreSQL), two batches are written at once. A batch commits only
        /// after the one before it, and prints its ids then, so the ids come out in the input's
        /// order, and a batch that fails leaves every later one unwritten.
        private struct BatchWriter {
            /// Batch n goes to `outboxes[n % outboxes.count]`.
            let outboxes: [Outbox]
            private var batch: [PreparedMessage] = []
            /// The batches being written, oldest first; each task returns its count.
            private var writing: [Task<Int, any Error>] = []
            private var handedOver = 0
            /// Messages written so far.
            private(set) var written = 0

            init(outboxes: [Outbox]) { self.outboxes = outboxes }

            mutating func add(_ message: PreparedMessage) async throws {
                batch.append(message)
                if batch.count == 1_000 { try await handOver() }
            }

            /// Writes what is left and waits until every batch is written.
            mutating func finish() async throws {
                if !batch.isEmpty { try await handOver() }
                while !writing.isEmpty { try await settleOldest() }
            }

            /// After a failure: waits for the batches in hand, so that ``written`` counts those
            /// written. Their own errors are not the first and are dropped.
            mutating func abandon() async {
                while !writing.isEmpty { try? await settleOldest() }
            }

            private mutating func handOver() async throws {
                while writing.count >= outboxes.count { try await settleOldest() }
                let messages = batch
                batch = []
                batch.reserveCapacity(messages.count)
                let outbox = outboxes[handedOver % outboxes.count]
                handedOver += 1
                let gate = writing.last.map(Self.gate(after:))
                writing.append(Task {
                    var output = ""
                    for result in try await outbox.enqueue(checked: messages, committingAfter: gate) {
                        output += "\(result.id)\n"
                    }
                    FileHandle.standardOutput.write(Data(output.utf8))
                    return messages.count
                })
            }

            /// Returns once `previous` is written; throws if it failed.
            private static func gate(after previous: Task<Int, any Error>) -> @Sendable () async throws(OutboxError) -> Void {
                { () async throws(OutboxError) in
                    guard (try? await previous.value) != nil else {
                        throw OutboxError(.database, "not written: the batch before it failed")
                    }
                }
            }

            private mutating func settleOldest() async throws {
                written += try await writing.removeFirst().value
            }
        }

        private func emlMessage(_ path: String) throws -> OutboxMessage {
            let raw: RawMessage
            do {
                raw = try RawMessage(contentsOfFile: path)
            } catch {
                throw ValidationError("--eml \(path): \(error)")
            }
            let sender: String
            let recipients: [String]
            do {
                sender = try from ?? "\(raw.headerSender().address)"
                let listed = try to.flatMap { try Mailbox.list($0).map { "\($0.address)" } }
                recipients = listed.isEmpty ? try raw.headerRecipients().map { "\($0.address)" } : listed
            } catch {
                throw ValidationError("--eml \(path): \(error)")
            }
            guard !recipients.isEmpty else { throw ValidationError("--eml \(path): no recipient in --to or its headers") }
            return OutboxMessage(
                sender: sender, recipients: recipients, content: raw.removingHeaders(named: "Bcc").bytes,
                idempotencyKey: idempotencyKey, notBefore: notBefore.flatMap(parseRFC3339))
        }

        /// One line of `enqueue`'s standard input.
        struct Line: Decodable, Equatable {
            var from: String
            var to: [String]
            var eml: String?
            var raw: String?
            var idempotencyKey: String?
            var notBefore: String?
        }

        /// The message on one line of JSON-lines input (nil for a blank line); a usage error
        /// naming the line if it is bad.
        static func message(fromLine line: ArraySlice<UInt8>, number: Int, decoder: JSONDecoder) throws -> OutboxMessage? {
            guard !line.allSatisfy({ $0 == 32 || $0 == 9 || $0 == 13 }) else { return nil }
            let entry: Line
            if let simple = EnqueueLineParser.parse(line) {
                entry = simple
            } else {
                do {
                    entry = try decoder.decode(Line.self, from: Data(line))
                } catch {
                    throw ValidationError("line \(number): not a message object ({\"from\", \"to\": [...], \"eml\" or \"raw\"}): \(Self.reason(error))")
                }
            }
            let content: [UInt8]
            switch (entry.eml, entry.raw) {
            case (let path?, nil):
                do {
                    content = try readFile(path)
                } catch {
                    throw ValidationError("line \(number): cannot read \(error.detail ?? path)")
                }
            case (nil, let raw?):
                content = Array(raw.utf8)
            default:
                throw ValidationError("line \(number): give \"eml\" (a file) or \"raw\" (the message), one of them")
            }
            var notBefore: Date?
            if let text = entry.notBefore {
                guard let date = parseRFC3339(text) else {
                    throw ValidationError("line \(number): notBefore '\(text)' is not an RFC 3339 time")
                }
                notBefore = date
            }
            return OutboxMessage(sender: entry.from, recipients: entry.to, content: content,
                                 idempotencyKey: entry.idempotencyKey, notBefore: notBefore)
        }

        private static func reason(_ error: any Error) -> String {
            switch error as? DecodingError {
            case .keyNotFound(let key, _)?: "\"\(key.stringValue)\" is missing"
            case .typeMismatch(_, let context)?, .valueNotFound(_, let context)?:
                "\"\(context.codingPath.map(\.stringValue).joined(separator: "."))\" has the wrong type"
            default: "it is not JSON"
            }
        }
    }

    struct Status: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Counts by state, the oldest waiting message, and the last minute's deliveries.")
        @OptionGroup var options: OutboxOptions
        @Flag(help: "Print one JSON object.")
        var json = false

        func run() async throws {
            try await options.with("outbox status") { outbox in
                let status = try await outbox.status()
                let now = Date()
                let oldest = status.oldestWaitingSince.map { max(0, now.timeIntervalSince($0)) }
                if json {
                    print(compactJSON(StatusJSON(status, oldestAge: oldest)))
                    return
                }
                var text = "recipients: "
                text += RecipientState.allCases.map { "\($0) \(status.recipients[$0] ?? 0)" }.joined(separator: ", ")
                text += "\nmessages: waiting \(status.messagesWaiting), scheduled \(status.messagesScheduled), "
                text += "leased \(status.messagesLeased), finished \(status.messagesFinished)\n"
                text += "oldest waiting: " + (oldest.map { formatAge($0) } ?? "none") + "\n"
                text += "delivered in the last minute: \(status.deliveredLastMinute)"
                print(text)
            }
        }

        struct StatusJSON: Encodable {
            var recipients: [String: Int]
            var messages: [String: Int]
            var oldestWaitingSince: String?
            var oldestWaitingSeconds: Double?
            var deliveredLastMinute: Int

            init(_ status: OutboxStatus, oldestAge: Double?) {
                recipients = Dictionary(uniqueKeysWithValues: RecipientState.allCases.map { ($0.rawValue, status.recipients[$0] ?? 0) })
                messages = ["waiting": status.messagesWaiting, "scheduled": status.messagesScheduled,
                            "leased": status.messagesLeased, "finished": status.messagesFinished]
                oldestWaitingSince = status.oldestWaitingSince.map(formatRFC3339)
                oldestWaitingSeconds = oldestAge
                deliveredLastMinute = status.deliveredLastMinute
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Messages with a recipient in a state, oldest first.")
        @OptionGroup var options: OutboxOptions
        @Option(help: "queued, leased, delivered, deferred, failed, expired, unknown, cancelled or suppressed; all when left out.",
                transform: parseState)
        var state: RecipientState?
        @Option(help: "At most this many messages.")
        var limit = 100
        @Option(help: "Only messages with an id above this one (to page).")
        var after: Int64 = 0
        @Flag(help: "One JSON object a line.")
        var json = false

        func run() async throws {
            try await options.with("outbox list") { outbox in
                for record in try await outbox.list(state: state, after: after, limit: max(1, limit)) {
                    print(json ? compactJSON(RecordJSON(record, details: false)) : describe(record, details: false))
                }
            }
        }
    }

    struct Show: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "One message, every recipient and every attempt.")
        @OptionGroup var options: OutboxOptions
        @Argument(help: "The message's id.")
        var id: Int64
        @Flag(help: "One JSON object.")
        var json = false

        func run() async throws {
            try await options.with("outbox show") { outbox in
                guard let record = try await outbox.message(id) else { throw OutboxError(.notFound, "no message has id \(id)") }
                print(json ? compactJSON(RecordJSON(record, details: true)) : describe(record, details: true))
            }
        }
    }

    struct Retry: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Queue recipients again, due now: one message's (deferred, failed, expired, unknown, cancelled), or every one in --state.")
        @OptionGroup var options: OutboxOptions
        @Argument(help: "The message's id.")
        var id: Int64?
        @Option(help: "Every recipient in this state: deferred, failed, expired, unknown or cancelled.", transform: parseState)
        var state: RecipientState?

        func validate() throws {
            guard (id == nil) != (state == nil) else { throw ValidationError("give a message id or --state, one of them") }
        }

        func run() async throws {
            try await options.with("outbox retry") { outbox in
                let count = if let id { try await outbox.retry(id) } else { try await outbox.retry(state: state!) }
                print("\(count) recipient\(count == 1 ? "" : "s") queued again")
            }
        }
    }

    struct Cancel: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Cancel a message's recipients not yet delivered.")
        @OptionGroup var options: OutboxOptions
        @Argument(help: "The message's id.")
        var id: Int64

        func run() async throws {
            try await options.with("outbox cancel") { outbox in
                let count = try await outbox.cancel(id)
                print("\(count) recipient\(count == 1 ? "" : "s") cancelled")
            }
        }
    }

    struct Purge: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Delete messages that finished longer ago than --older-than.")
        @OptionGroup var options: OutboxOptions
        @Option(name: .customLong("older-than"), help: "An age: 30s, 15m, 12h, 7d.", transform: parseDurationFlag)
        var olderThan: Duration

        func run() async throws {
            try await options.with("outbox purge") { outbox in
                let count = try await outbox.purge(olderThan: olderThan)
                print("\(count) message\(count == 1 ? "" : "s") purged")
            }
        }
    }
}

/// A `--state` flag.
func parseState(_ text: String) throws -> RecipientState {
    guard let state = RecipientState(rawValue: text.lowercased()) else {
        throw ValidationError("'\(text)' is not a state: " + RecipientState.allCases.map(\.rawValue).joined(separator: ", "))
    }
    return state
}

/// `--outbox URL`, shared by `outbox` and `worker`.
struct OutboxOptions: ParsableArguments {
    @Option(name: .customLong("outbox"),
            help: "The outbox: sqlite:PATH or postgresql://… (default: $SLUICE_OUTBOX, else sqlite:sluice-outbox.db).")
    var explicitURL: String?

    var url: String { Self.url(explicitURL) }

    /// `explicit`, else `$SLUICE_OUTBOX`, else the default SQLite file.
    static func url(_ explicit: String?) -> String {
        explicit ?? ProcessInfo.processInfo.environment["SLUICE_OUTBOX"] ?? Outbox.defaultURL
    }

    /// Opens the outbox at `url`, refusing a URL that holds a password.
    static func open(_ url: String, maximumMessageSize: Int = 10_240_000) async throws(OutboxError) -> Outbox {
        if Outbox.urlHoldsPassword(url) {
            throw OutboxError(.invalidURL, "the outbox URL holds a password, which any user can read in the process list; "
                              + "put it in PGPASSWORD or a ~/.pgpass file instead")
        }
        return try await Outbox.open(url, maximumMessageSize: maximumMessageSize)
    }

    /// Opens the outbox, runs `body`, closes it; an outbox error ends the command with one line
    /// on stderr and its exit status.
    func with(_ command: String, maximumMessageSize: Int = 10_240_000,
              _ body: (Outbox) async throws -> Void) async throws {
        var opened: Outbox?
        do {
            let outbox = try await Self.open(url, maximumMessageSize: maximumMessageSize)
            opened = outbox
            try await body(outbox)
            await outbox.close()
        } catch let error as OutboxError {
            await opened?.close()
            FileHandle.standardError.write(Data("sluice \(command): \(error.message)\n".utf8))
            throw ExitCode(error.exitStatus)
        } catch {
            await opened?.close()
            throw error
        }
    }
}

extension OutboxError {
    /// 64 for what the user gave, 69 for a store that cannot be used.
    var exitStatus: Int32 {
        switch kind {
        case .invalidInput, .invalidURL, .notFound: 64
        default: 69
        }
    }
}

/// A message for `list` and `show`; every text from a server is escaped before it reaches a terminal.
private func describe(_ record: OutboxRecord, details: Bool) -> String {
    var text = "\(record.id)  \((record.messageID ?? "(no Message-ID)").controlCharactersEscaped)  \(formatRFC3339(record.createdAt))"
    if details {
        text += "\n  from: <\(record.sender)>  size: \(record.size)  attempts: \(record.attempts)"
        if let key = record.idempotencyKey { text += "  key: \(key.controlCharactersEscaped)" }
        if record.notBefore > record.createdAt { text += "\n  not before: \(formatRFC3339(record.notBefore))" }
        if let due = record.dueAt { text += "\n  due: \(formatRFC3339(due))" }
        if let owner = record.leaseOwner, let until = record.leaseExpiresAt {
            text += "\n  leased by \(owner) until \(formatRFC3339(until))"
        }
        if let error = record.lastError { text += "\n  last error: \(error.controlCharactersEscaped)" }
    }
    for recipient in record.recipients {
        text += "\n  \(recipient.address) \(recipient.state)"
        if let code = recipient.code { text += " \(code)" }
        if let enhanced = recipient.enhancedCode { text += " \(enhanced)" }
        if let reply = recipient.reply { text += " \(reply.controlCharactersEscaped)" }
        if let bounceClass = recipient.bounceClass { text += " [\(bounceClass)]" }
        if details {
            text += " (attempts \(recipient.attempts)"
            if recipient.unknownOutcomes > 0 { text += ", \(recipient.unknownOutcomes) unknown" }
            text += ")"
            for time in recipient.attemptTimes { text += "\n    tried \(formatRFC3339(time))" }
        }
    }
    return text
}

/// `list --json` and `show --json`: one object per message.
private struct RecordJSON: Encodable {
    struct Recipient: Encodable {
        var address: String
        var state: String
        var code: Int?
        var enhancedCode: String?
        var reply: String?
        var bounceClass: String?
        var attempts: Int
        var unknownOutcomes: Int
        var attemptTimes: [String]?
    }
    var id: Int64
    var messageID: String?
    var idempotencyKey: String?
    var sender: String
    var size: Int
    var createdAt: String
    var notBefore: String
    var dueAt: String?
    var attempts: Int
    var leaseOwner: String?
    var lastError: String?
    var recipients: [Recipient]

    init(_ record: OutboxRecord, details: Bool) {
        id = record.id
        messageID = record.messageID
        idempotencyKey = record.idempotencyKey
        sender = record.sender
        size = record.size
        createdAt = formatRFC3339(record.createdAt)
        notBefore = formatRFC3339(record.notBefore)
        dueAt = record.dueAt.map(formatRFC3339)
        attempts = record.attempts
        leaseOwner = record.leaseOwner
        lastError = record.lastError
        recipients = record.recipients.map {
            Recipient(address: $0.address, state: $0.state.rawValue, code: $0.code, enhancedCode: $0.enhancedCode,
                      reply: $0.reply, bounceClass: $0.bounceClass?.rawValue, attempts: $0.attempts,
                      unknownOutcomes: $0.unknownOutcomes,
                      attemptTimes: details ? $0.attemptTimes.map(formatRFC3339) : nil)
        }
    }
}

/// An RFC 3339 time, with or without fractional seconds; nil when it is not one.
func parseRFC3339(_ text: String) -> Date? {
    let formatter = ISO8601DateFormatter()
    if let date = formatter.date(from: text) { return date }
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    return formatter.date(from: text)
}

/// A time as RFC 3339 in UTC, to the millisecond.
func formatRFC3339(_ date: Date) -> String {
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    return formatter.string(from: date)
}

/// An age for people: 42s, 5m 3s, 2h 10m, 3d 4h.
func formatAge(_ seconds: Double) -> String {
    let whole = Int(seconds)
    switch whole {
    case ..<60: return "\(whole)s"
    case ..<3_600: return "\(whole / 60)m \(whole % 60)s"
    case ..<86_400: return "\(whole / 3_600)h \(whole % 3_600 / 60)m"
    default: return "\(whole / 86_400)d \(whole % 86_400 / 3_600)h"
    }
}

/// A duration flag: a number and a unit, `250ms`, `30s`, `5m`, `1h`, `5d` (a bare number is seconds).
func parseDurationFlag(_ text: String) throws -> Duration {
    let units: [(String, Double)] = [("ms", 0.001), ("s", 1), ("m", 60), ("h", 3_600), ("d", 86_400)]
    let trimmed = text.trimmingCharacters(in: .whitespaces)
    var number = Substring(trimmed)
    var scale = 1.0
    for (unit, seconds) in units where trimmed.hasSuffix(unit) {
        let candidate = trimmed.dropLast(unit.count)
        // "5ms" ends in "s" as well: take the longest unit whose prefix is a number.
        if Double(candidate) != nil {
            number = candidate
            scale = seconds
            break
        }
    }
    guard let value = Double(number), value.isFinite, value >= 0, value * scale <= 1e9 else {
        throw ValidationError("'\(text)' is not a duration such as 250ms, 30s, 5m, 1h or 5d")
    }
    return .nanoseconds(Int64(value * scale * 1e9))
}
