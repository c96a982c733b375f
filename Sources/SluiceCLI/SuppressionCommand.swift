import ArgumentParser
import Foundation
import SluiceCore
import SluiceOutbox

/// `sluice suppression`: the outbox's list of addresses and domains nothing is sent to.
struct SuppressionCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "suppression",
        abstract: "Manage the outbox's suppression list: addresses and domains nothing is sent to.",
        discussion: """
            A recipient on the list is recorded as suppressed when it is enqueued, or when a \
            worker claims its message, and is never sent. Workers add an address by themselves \
            when a relay refuses it for good as invalid-recipient, bad-domain or \
            inactive-mailbox (see `sluice worker --suppress-on`).

            A target is an address (user@example.com) or a whole domain (example.com); ASCII \
            letters are compared without case. Every subcommand takes --outbox as `sluice \
            outbox` does. Exit status: 0 done, 64 invalid input (nothing was written), 69 the \
            outbox cannot be used.
            """,
        subcommands: [Add.self, Remove.self, List.self, Import.self, Export.self]
    )

    struct Add: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Add addresses or domains, or update them.")
        @OptionGroup var options: OutboxOptions
        @Argument(help: "Addresses or domains.")
        var targets: [String]
        @Option(help: "manual (the default), complaint, unsubscribed, or a bounce class.")
        var reason = Suppression.Reason.manual
        @Option(help: "A note kept with each entry.")
        var detail: String?
        @Option(name: .customLong("expires-in"), help: "Lapse after this long (30s, 15m, 12h, 90d); never when left out.",
                transform: parseDurationFlag)
        var expiresIn: Duration?

        func validate() throws {
            guard !targets.isEmpty else { throw ValidationError("give at least one address or domain") }
        }

        func run() async throws {
            try await options.with("suppression add") { outbox in
                let now = outbox.clock.now()
                var entries: [Suppression] = []
                for target in targets {
                    entries.append(try Suppression(target: target, reason: reason, detail: detail, createdAt: now,
                                                   expiresAt: expiresIn.map { now.addingTimeInterval($0.seconds) }))
                }
                let count = try await outbox.suppress(contentsOf: entries)
                print("\(count) entr\(count == 1 ? "y" : "ies") added or updated")
            }
        }
    }

    struct Remove: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Take addresses or domains off the list.")
        @OptionGroup var options: OutboxOptions
        @Argument(help: "Addresses or domains.")
        var targets: [String]

        func validate() throws {
            guard !targets.isEmpty else { throw ValidationError("give at least one address or domain") }
        }

        func run() async throws {
            try await options.with("suppression remove") { outbox in
                let count = try await outbox.unsuppress(targets)
                print("\(count) entr\(count == 1 ? "y" : "ies") removed")
            }
        }
    }

    struct List: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "The list, by target (or whether one address is on it).")
        @OptionGroup var options: OutboxOptions
        @Argument(help: "An address: print the entry that stops mail to it (its own or its domain's); exit 1 when none.")
        var address: String?
        @Option(help: "At most this many entries.")
        var limit = 1_000
        @Option(help: "Only targets after this one (to page).")
        var after: String?
        @Flag(help: "One JSON object a line.")
        var json = false

        func run() async throws {
            var found = true
            try await options.with("suppression list") { outbox in
                let entries: [Suppression]
                if let address {
                    _ = try Suppression.normalized(address)
                    entries = try await outbox.suppression(for: address).map { [$0] } ?? []
                    found = !entries.isEmpty
                } else {
                    entries = try await outbox.suppressions(after: after, limit: max(1, limit))
                }
                let now = outbox.clock.now()
                for entry in entries { print(json ? compactJSON(EntryJSON(entry, now: now)) : describe(entry, now: now)) }
            }
            if !found { throw ExitCode(1) }
        }
    }

    struct Import: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Add the entries of a CSV file (or - for standard input) in one transaction.",
            discussion: """
                The columns are target,reason,created_at,expires_at,detail; a first line naming \
                them (target, or address or email) may put them in any order, and other columns \
                are skipped. A file of bare addresses, one a line, is a list too. Every line is \
                checked first: one bad line imports nothing, and the error names it.
                """)
        @OptionGroup var options: OutboxOptions
        @Argument(help: "The CSV file; - for standard input.")
        var file: String

        func run() async throws {
            let text = try settingUp("suppression import") { () throws -> String in
                guard file == "-" else { return try readTextFile(file, flag: "import") }
                guard let read = String(data: FileHandle.standardInput.readDataToEndOfFile(), encoding: .utf8) else {
                    throw ValidationError("standard input is not UTF-8; nothing was imported")
                }
                return read
            }
            try await options.with("suppression import") { outbox in
                let count = try await outbox.importSuppressions(csv: text)
                print("\(count) entr\(count == 1 ? "y" : "ies") imported")
            }
        }
    }

    struct Export: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Write the whole list as CSV, to a file or standard output.")
        @OptionGroup var options: OutboxOptions
        @Argument(help: "The file to write; standard output when left out.")
        var file: String?

        func run() async throws {
            try await options.with("suppression export") { outbox in
                let csv = try await outbox.exportSuppressions()
                if let file {
                    do {
                        try Data(csv.utf8).write(to: URL(fileURLWithPath: file), options: .atomic)
                    } catch {
                        throw OutboxError(.invalidInput, "cannot write \(file): \(error.localizedDescription)")
                    }
                } else {
                    FileHandle.standardOutput.write(Data(csv.utf8))
                }
            }
        }
    }
}

/// `--suppress-on`: bounce class names, comma-separated, or `none`.
func parseBounceClasses(_ text: String) throws -> Set<BounceClass> {
    if text.lowercased() == "none" { return [] }
    var classes = Set<BounceClass>()
    for name in text.split(separator: ",") {
        let trimmed = name.trimmingCharacters(in: .whitespaces).lowercased()
        guard let bounceClass = BounceClass(rawValue: trimmed) else {
            throw ValidationError("'\(trimmed)' is not a bounce class: " + BounceClass.allCases.map(\.rawValue).joined(separator: ", "))
        }
        classes.insert(bounceClass)
    }
    return classes
}

/// One entry for people; the detail is a server's words, escaped before it reaches a terminal.
private func describe(_ entry: Suppression, now: Date) -> String {
    var text = "\(entry.target)  \(entry.reason)  since \(formatRFC3339(entry.createdAt))"
    if let expires = entry.expiresAt {
        text += entry.isActive(at: now) ? "  until \(formatRFC3339(expires))" : "  lapsed \(formatRFC3339(expires))"
    }
    if let detail = entry.detail { text += "  \(detail.controlCharactersEscaped)" }
    return text
}

/// `list --json`.
private struct EntryJSON: Encodable {
    var target: String
    var reason: String
    var detail: String?
    var createdAt: String
    var expiresAt: String?
    var active: Bool

    init(_ entry: Suppression, now: Date) {
        target = entry.target
        reason = entry.reason
        detail = entry.detail
        createdAt = formatRFC3339(entry.createdAt)
        expiresAt = entry.expiresAt.map(formatRFC3339)
        active = entry.isActive(at: now)
    }
}
