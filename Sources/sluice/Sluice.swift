import ArgumentParser
import SluiceMIME

/// The `sluice` command line.
@main
struct SluiceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sluice",
        abstract: "An event-driven SMTP engine: send mail, run a sink, measure throughput.",
        subcommands: [SendCommand.self, SinkCommand.self, BenchCommand.self, SoakCommand.self, LoopbackCommand.self]
    )
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
