import Benchmark
import Sluice
import SluiceSink

/// End-to-end client benchmarks: SMTPClient's bulk API into an in-process sink over loopback,
/// 1 KB messages, one recipient. One iteration is one message, so wall time, CPU and
/// allocations are per message; throughput is messages per second. The sink's work is in the
/// same process, so CPU and allocations count both sides (`sluice bench` separates them).
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .cpuTotal, .instructions, .mallocCountTotal, .throughput],
        timeUnits: .microseconds,
        maxDuration: .seconds(10),
        maxIterations: 20
    )

    for (name, chunking) in [("CHUNKING", true), ("DATA", false)] {
        Benchmark("client → sink, 10 connections, 1 KB, \(name)",
                  configuration: .init(scalingFactor: .kilo)) { benchmark in
            let bench = try await ClientSinkPair.make(connections: 10, chunking: chunking)
            let mails = Array(repeating: bench.mail, count: benchmark.scaledIterations.count)
            benchmark.startMeasurement()
            var accepted = 0
            for try await report in bench.client.send(contentsOf: mails, maximumInFlight: 640)
            where report.outcome == .accepted {
                accepted += 1
            }
            benchmark.stopMeasurement()
            precondition(accepted == mails.count, "only \(accepted) of \(mails.count) accepted")
            await bench.shutdown()
        }
    }
}

/// A sink on loops of its own and a client on others.
struct ClientSinkPair {
    let sink: SMTPSink
    let sinkGroup: EventLoopGroup
    let client: SMTPClient
    let clientGroup: EventLoopGroup
    let mail: OutgoingMail

    static func make(connections: Int, chunking: Bool) async throws -> ClientSinkPair {
        let sinkGroup = EventLoopGroup(numberOfLoops: 1)
        var sinkConfiguration = SinkConfiguration()
        sinkConfiguration.port = 0
        let sink = try await SMTPSink.start(sinkConfiguration, group: sinkGroup)
        let clientGroup = EventLoopGroup(numberOfLoops: 1)
        var configuration = SMTPClient.Configuration(host: "127.0.0.1", port: sink.localAddress.port, security: .none)
        configuration.eventLoopGroup = clientGroup
        configuration.pool.maximumConnections = connections
        configuration.pool.maximumMessagesPerConnection = .max
        configuration.pipelining.chunking = chunking
        configuration.retry = .none
        let client = try SMTPClient(configuration: configuration)
        var text = "From: <bench@sluice.test>\r\nTo: <rcpt@sink.test>\r\nSubject: bench\r\n"
        text += "Message-ID: <bench@sluice.test>\r\n\r\n"
        while text.utf8.count < 1000 { text += String(repeating: "0123456789", count: 7) + "\r\n" }
        let message = EncodedMessage(try RawMessage(Array(text.utf8)))
        let mail = OutgoingMail(envelope: try Envelope(from: "bench@sluice.test", to: ["rcpt@sink.test"]), message: message)
        return ClientSinkPair(sink: sink, sinkGroup: sinkGroup, client: client, clientGroup: clientGroup, mail: mail)
    }

    func shutdown() async {
        await client.shutdown()
        await clientGroup.shutdown()
        await sink.shutdown()
        await sinkGroup.shutdown()
    }
}
