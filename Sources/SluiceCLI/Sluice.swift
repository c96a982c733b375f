import ArgumentParser
import Foundation
import SluiceMIME

/// The `sluice` command line.
@main
struct SluiceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sluice",
        abstract: "An event-driven SMTP engine: send mail, run a sink, measure throughput.",
        subcommands: [SendCommand.self, SinkCommand.self, BenchCommand.self, SoakCommand.self, OutboxCommand.self,
                      WorkerCommand.self, SuppressionCommand.self, BouncesCommand.self, LoopbackCommand.self]
    )

    static func main() async {
        await main(withOptionalValues(Array(CommandLine.arguments.dropFirst())))
    }

    /// `sink --print` with no value means `--print=summary` (ArgumentParser has no option
    /// whose value may be left out; `--print=full` and `--print full` parse as they are).
    static func withOptionalValues(_ arguments: [String]) -> [String] {
        guard arguments.first == "sink" else { return arguments }
        var rewritten = arguments
        for index in rewritten.indices.dropFirst() where rewritten[index] == "--print" {
            let next = index + 1 < rewritten.count ? rewritten[index + 1] : nil
            if next.flatMap(SinkCommand.PrintMode.init(rawValue:)) == nil { rewritten[index] = "--print=summary" }
        }
        return rewritten
    }
}

/// Runs the part of a command that turns its flags into settings once they are parsed: reading
/// files, checking values against each other. A flag found unusable there ends the command
/// with exit status 64 (EX_USAGE) and one line on stderr, `sluice COMMAND: what is wrong`,
/// followed by "; nothing was sent" when `nothingSent` says so (or "; nothing was enqueued"). Thrown on from `run()`,
/// ArgumentParser would print the root command's usage instead, which names no flag of this one.
func settingUp<T>(_ command: String, nothingSent: Bool = false, nothingWritten: Bool = false,
                  _ body: () throws -> T) throws -> T {
    do {
        return try body()
    } catch let exit as ExitCode {
        throw exit
    } catch {
        let text = (error as? ValidationError)?.message ?? "\(error)"
        let suffix = nothingSent ? "; nothing was sent" : nothingWritten ? "; nothing was enqueued" : ""
        FileHandle.standardError.write(Data("sluice \(command): \(text)\(suffix)\n".utf8))
        throw ExitCode(64)
    }
}

/// A `--header 'Name: value'` flag (for `send` and `bench`): the name, printable ASCII
/// without a colon, and the value with its surrounding blanks trimmed. One line only: a CR
/// or LF would start a header of its own (`X-Note: a\r\nBcc: …`).
func parseHeaderFlag(_ line: String) throws -> (name: String, value: String) {
    guard let colon = line.firstIndex(of: ":"), colon != line.startIndex,
          line[..<colon].unicodeScalars.allSatisfy({ $0.value > 32 && $0.value < 127 }),
          !line.contains("\r"), !line.contains("\n") else {
        throw ValidationError("--header '\(line)' is not 'Name: value' on one line")
    }
    return (String(line[..<colon]), String(line[line.index(after: colon)...]).trimmingCharacters(in: .whitespaces))
}

/// The UTF-8 text of the file at `path`, given with command-line flag `flag`; a usage error
/// naming the flag, the path and the reason when it cannot be read or is not UTF-8.
func readTextFile(_ path: String, flag: String) throws -> String {
    let bytes: [UInt8]
    do {
        bytes = try readFile(path)
    } catch {
        throw ValidationError("\(flag): cannot read \(error.detail ?? path)")
    }
    guard let text = String(validating: bytes, as: UTF8.self) else {
        throw ValidationError("\(flag): \(path) is not UTF-8")
    }
    return text
}

extension String {
    /// JSON text with DEL and the C1 controls (U+0080 to U+009F) escaped as `\u007f` …
    /// `\u009f`. JSON encoders escape only C0, and a terminal that shows the output would act
    /// on a raw U+009B (CSI) from a server's reply. Those characters can stand only inside
    /// strings, so replacing them everywhere leaves the JSON's meaning as it was.
    var jsonControlsEscaped: String {
        guard unicodeScalars.contains(where: { (0x7F...0x9F).contains($0.value) }) else { return self }
        var escaped = ""
        for scalar in unicodeScalars {
            if (0x7F...0x9F).contains(scalar.value) {
                escaped += "\\u00" + String(scalar.value, radix: 16)
            } else {
                escaped.unicodeScalars.append(scalar)
            }
        }
        return escaped
    }
}

/// Raises the soft limit on open file descriptors to the hard limit (a load test or a sink
/// with thousands of connections needs them; the usual soft limit is 1,024) and returns the
/// limit now in force.
@discardableResult
func raiseDescriptorLimit() -> Int {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return 1024 }
    if limit.rlim_cur < limit.rlim_max {
        var raised = limit
        raised.rlim_cur = limit.rlim_max
        if setrlimit(Int32(RLIMIT_NOFILE.rawValue), &raised) == 0 { limit = raised }
    }
    return Int(clamping: limit.rlim_cur)  // RLIM_INFINITY is the largest value: Int.max
}
