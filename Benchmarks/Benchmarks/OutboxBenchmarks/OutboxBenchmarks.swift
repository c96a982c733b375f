import Benchmark
import Foundation
import Sluice
import SluiceOutbox
import SluiceSink

/// The outbox: enqueue (batches of 1,000 through the API) and drain (one worker, claimed,
/// sent into the in-process sink and recorded), 1 KB messages with one recipient. One
/// iteration is one message, so throughput is messages a second. SQLite always; PostgreSQL
/// when `SLUICE_BENCH_POSTGRES` holds a libpq connection string to an empty database
/// (`scripts/outbox-bench.sh` starts a private cluster and sets it).
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .cpuTotal, .mallocCountTotal, .throughput],
        timeUnits: .microseconds,
        maxDuration: .seconds(20),
        maxIterations: 5
    )
    var stores: [(String, @Sendable () async throws -> String)] = [
        ("SQLite", {
            let directory = NSTemporaryDirectory() + "sluice-outbox-bench-\(UUID().uuidString)"
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
            return "sqlite:\(directory)/outbox.db"
        }),
    ]
    if let postgres = ProcessInfo.processInfo.environment["SLUICE_BENCH_POSTGRES"] {
        stores.append(("PostgreSQL", {
            // The same database each run: emptied first.
            let outbox = try await Outbox.open(postgres)
            try await outbox.initialize()
            await outbox.close()
            return postgres
        }))
    } else {
        print("OutboxBenchmarks: SLUICE_BENCH_POSTGRES is not set; PostgreSQL is left out (scripts/outbox-bench.sh sets it)")
    }

    for (name, makeURL) in stores {
        Benchmark("outbox enqueue, \(name), batches of 1,000, 1 KB", configuration: .init(scalingFactor: .kilo)) { benchmark in
            let outbox = try await OutboxBench.open(try await makeURL())
            let messages = OutboxBench.messages(benchmark.scaledIterations.count)
            benchmark.startMeasurement()
            for start in stride(from: 0, to: messages.count, by: 1_000) {
                _ = try await outbox.enqueue(contentsOf: Array(messages[start..<min(messages.count, start + 1_000)]))
            }
            benchmark.stopMeasurement()
            await outbox.close()
        }

        Benchmark("outbox drain, \(name), one worker into the sink, 1 KB", configuration: .init(scalingFactor: .kilo)) { benchmark in
            let outbox = try await OutboxBench.open(try await makeURL())
            let messages = OutboxBench.messages(benchmark.scaledIterations.count)
            for start in stride(from: 0, to: messages.count, by: 1_000) {
                _ = try await outbox.enqueue(contentsOf: Array(messages[start..<min(messages.count, start + 1_000)]))
            }
            let sinkGroup = EventLoopGroup(numberOfLoops: 1)
            var sinkConfiguration = SinkConfiguration()
            sinkConfiguration.port = 0
            let sink = try await SMTPSink.start(sinkConfiguration, group: sinkGroup)
            var client = SMTPClient.Configuration(host: "127.0.0.1", port: sink.localAddress.port, security: .none)
            client.pool.maximumConnections = 10
            client.retry = .none
            let smtp = try SMTPClient(configuration: client)
            var configuration = OutboxWorker.Configuration()
            configuration.exitWhenIdle = true
            configuration.batchSize = 500
            configuration.retention = nil
            let worker = OutboxWorker(outbox: outbox, client: smtp, configuration: configuration)
            benchmark.startMeasurement()
            try await worker.run()
            benchmark.stopMeasurement()
            precondition(worker.statistics.delivered == messages.count, "\(worker.statistics)")
            await smtp.shutdown()
            await sink.shutdown()
            await sinkGroup.shutdown()
            await outbox.close()
        }
    }
}

enum OutboxBench {
    /// An outbox with an empty schema.
    static func open(_ url: String) async throws -> Outbox {
        let outbox = try await Outbox.open(url)
        try await outbox.initialize()
        if !url.hasPrefix("sqlite:") {
            _ = try await outbox.purge(olderThan: .zero, batch: 100_000)
        }
        return outbox
    }

    /// `count` messages of about 1 KB, each with its own Message-ID and recipient.
    static func messages(_ count: Int) -> [OutboxMessage] {
        let body = String(repeating: String(repeating: "x", count: 70) + "\r\n", count: 12)
        return (0..<count).map { index in
            let text = "From: a@example.com\r\nTo: r\(index)@example.org\r\nSubject: bench\r\n"
                + "Message-ID: <\(index)@bench.example>\r\n\r\n" + body
            return OutboxMessage(sender: "a@example.com", recipients: ["r\(index)@example.org"], content: Array(text.utf8))
        }
    }
}
