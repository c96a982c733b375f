public import Foundation

/// The suppression list as CSV (RFC 4180), the form `sluice suppression import` reads and
/// `export` writes:
///
/// ```text
/// target,reason,created_at,expires_at,detail
/// gone@example.org,invalid-recipient,2026-12-05T07:55:00Z,,"550 5.1.1 no such user"
/// example.net,manual,2026-12-05T08:00:00Z,2027-01-01T00:00:00Z,
/// ```
///
/// On import, a first line that names its columns (`target`, or `address` or `email`;
/// `reason`, `created_at`, `expires_at`, `detail`) says where each is; other columns are
/// skipped. Without one, the columns are in the order above, and a file of bare addresses one
/// a line is a list too. An empty reason is `manual`, an empty `created_at` is now, an empty
/// `expires_at` is never. Times are ISO 8601 (`2026-12-05T07:55:00Z`) or a date (`2027-01-01`).
public enum SuppressionCSV {
    /// The first line of an export.
    public static let header = "target,reason,created_at,expires_at,detail\r\n"

    /// One entry as a line.
    public static func line(_ entry: Suppression) -> String {
        [entry.target, entry.reason, format(entry.createdAt), entry.expiresAt.map(format) ?? "", entry.detail ?? ""]
            .map(quoted).joined(separator: ",") + "\r\n"
    }

    /// Reads every entry, or throws for the first line that is wrong.
    /// - Throws: ``OutboxError/Kind/invalidInput`` naming the line and what is wrong.
    public static func parse(_ text: String, now: Date) throws(OutboxError) -> [Suppression] {
        let records = try records(text)
        guard let first = records.first else { return [] }
        var columns = (target: 0, reason: 1, created: 2, expires: 3, detail: 4)
        var body = records[...]
        let names = first.fields.map { $0.trimmingCharacters(in: .whitespaces).lowercased() }
        if let target = names.firstIndex(where: { ["target", "address", "email", "domain"].contains($0) }) {
            func column(_ accepted: [String]) -> Int { names.firstIndex(where: accepted.contains) ?? -1 }
            columns = (target, column(["reason"]), column(["created_at", "created"]), column(["expires_at", "expires"]),
                       column(["detail", "note"]))
            body = body.dropFirst()
        }
        var entries: [Suppression] = []
        for record in body {
            func field(_ index: Int) -> String? {
                guard index >= 0, index < record.fields.count else { return nil }
                let value = record.fields[index].trimmingCharacters(in: .whitespaces)
                return value.isEmpty ? nil : value
            }
            do throws(OutboxError) {
                guard let target = field(columns.target) else { throw OutboxError(.invalidInput, "no address or domain") }
                let created = try field(columns.created).map { value throws(OutboxError) in try date(value) } ?? now
                let expires = try field(columns.expires).map { value throws(OutboxError) in try date(value) }
                entries.append(try Suppression(target: target, reason: field(columns.reason) ?? Suppression.Reason.manual,
                                               detail: field(columns.detail), createdAt: created, expiresAt: expires))
            } catch {
                throw OutboxError(.invalidInput, "line \(record.line): \(error.message); nothing was imported")
            }
        }
        return entries
    }

    private struct Record {
        let line: Int
        let fields: [String]
    }

    /// The records, each with the line it starts on; blank lines skipped.
    private static func records(_ text: String) throws(OutboxError) -> [Record] {
        var records: [Record] = []
        var fields: [String] = []
        var field = ""
        var quoted = false
        var line = 1
        var start = 1
        var iterator = text.unicodeScalars.makeIterator()
        var pending: Unicode.Scalar?
        func next() -> Unicode.Scalar? {
            if let scalar = pending {
                pending = nil
                return scalar
            }
            return iterator.next()
        }
        func endRecord() {
            fields.append(field)
            if !(fields.count == 1 && fields[0].trimmingCharacters(in: .whitespaces).isEmpty) {
                records.append(Record(line: start, fields: fields))
            }
            fields = []
            field = ""
        }
        while let scalar = next() {
            if quoted {
                if scalar == "\"" {
                    if let following = next() {
                        if following == "\"" {
                            field.unicodeScalars.append("\"")
                        } else {
                            quoted = false
                            pending = following
                        }
                    } else {
                        quoted = false
                    }
                } else {
                    if scalar == "\n" { line += 1 }
                    field.unicodeScalars.append(scalar)
                }
                continue
            }
            switch scalar {
            case "\"" where field.isEmpty:
                quoted = true
            case ",":
                fields.append(field)
                field = ""
            case "\r":
                break
            case "\n":
                endRecord()
                line += 1
                start = line
            default:
                field.unicodeScalars.append(scalar)
            }
        }
        if quoted { throw OutboxError(.invalidInput, "line \(start): a quoted field is not closed; nothing was imported") }
        if !field.isEmpty || !fields.isEmpty { endRecord() }
        return records
    }

    private static func quoted(_ field: String) -> String {
        guard field.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" || $0 == "\r" }) else { return field }
        return "\"" + field.replacingOccurrences(of: "\"", with: "\"\"") + "\""
    }

    private static func format(_ date: Date) -> String {
        date.formatted(Date.ISO8601FormatStyle(includingFractionalSeconds: false))
    }

    private static func date(_ text: String) throws(OutboxError) -> Date {
        if let date = try? Date.ISO8601FormatStyle(includingFractionalSeconds: false).parse(text) { return date }
        if let date = try? Date.ISO8601FormatStyle(includingFractionalSeconds: true).parse(text) { return date }
        if let date = try? Date.ISO8601FormatStyle().year().month().day().parse(text) { return date }
        throw OutboxError(.invalidInput, "\"\(text)\" is not a time (2026-12-05T07:55:00Z) or a date (2027-01-01)")
    }
}
