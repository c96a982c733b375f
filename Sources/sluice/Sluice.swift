import ArgumentParser

/// The `sluice` command line.
@main
struct SluiceCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sluice",
        abstract: "An event-driven SMTP engine: send mail, run a sink, measure throughput.",
        subcommands: [SendCommand.self, SinkCommand.self, BenchCommand.self, SoakCommand.self, LoopbackCommand.self]
    )
}
