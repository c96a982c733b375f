import Benchmark
import Foundation
import Sluice
import SluiceSink

/// End-to-end client benchmarks: SMTPClient's bulk API over loopback, 1 KB messages, one
/// recipient. One iteration is one message, so wall time, CPU and allocations are per message;
/// throughput is messages per second. Into the in-process sink, CPU and allocations count both
/// sides; into Postfix's `smtp-sink` (a child process, when installed) they are the client's own.
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
            try await bench.client.sendMeasured(benchmark)
            await bench.shutdown()
        }
    }

    guard let smtpSink = PostfixSMTPSink.executable else {
        print("ClientBenchmarks: Postfix's smtp-sink is not installed (apt-get install postfix); "
              + "the client-only benchmark is left out")
        return
    }
    Benchmark("client → Postfix smtp-sink, 10 connections, 1 KB (client only)",
              configuration: .init(scalingFactor: .kilo)) { benchmark in
        let sink = try PostfixSMTPSink(executable: smtpSink)
        defer { sink.stop() }
        let client = try BenchClient.make(port: sink.port, connections: 10, chunking: true)  // smtp-sink offers none
        try await client.sendMeasured(benchmark)
        await client.shutdown()
    }
}

/// Postfix's smtp-sink on a free loopback port, as a child process (as `nobody` under root).
final class PostfixSMTPSink {
    static var executable: String? {
        ["/usr/sbin/smtp-sink", "/usr/bin/smtp-sink"].first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    let port: Int
    private let process = Process()

    init(executable: String) throws {
        port = try Self.freePort()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = (getuid() == 0 ? ["-u", "nobody"] : []) + ["127.0.0.1:\(port)", "1024"]
        try process.run()
        // smtp-sink says nothing when it is ready: wait until it accepts, for up to 5 s.
        for _ in 0..<100 {
            if Self.accepts(port) { return }
            usleep(50_000)
        }
        stop()
        throw CocoaError(.featureUnsupported, userInfo: [NSLocalizedDescriptionKey: "smtp-sink did not start on port \(port)"])
    }

    /// SIGKILL: the child inherits the spawning thread's signal mask, which here blocks
    /// SIGTERM (a plain `terminate()` left smtp-sink running and the benchmark waiting).
    func stop() {
        guard process.isRunning else { return }
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    private static func freePort() throws -> Int {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = loopback(port: 0)
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard bound else { throw CocoaError(.fileReadUnknown) }
        return Int(UInt16(bigEndian: address.sin_port))
    }

    private static func accepts(_ port: Int) -> Bool {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var address = loopback(port: port)
        return withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
    }

    private static func loopback(port: Int) -> sockaddr_in {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        return address
    }
}

/// A client on a loop of its own, and the message it sends.
struct BenchClient {
    let client: SMTPClient
    let group: EventLoopGroup
    let mail: OutgoingMail

    static func make(port: Int, connections: Int, chunking: Bool) throws -> BenchClient {
        let group = EventLoopGroup(numberOfLoops: 1)
        var configuration = SMTPClient.Configuration(host: "127.0.0.1", port: port, security: .none)
        configuration.eventLoopGroup = group
        configuration.pool.maximumConnections = connections
        configuration.pool.maximumMessagesPerConnection = .max
        configuration.pipelining.chunking = chunking
        configuration.retry = .none
        return BenchClient(client: try SMTPClient(configuration: configuration), group: group, mail: try benchMail())
    }

    /// The benchmarks' message: about 1 KB, one recipient.
    private static func benchMail() throws -> OutgoingMail {
        var text = "From: <bench@sluice.test>\r\nTo: <rcpt@sink.test>\r\nSubject: bench\r\n"
        text += "Message-ID: <bench@sluice.test>\r\n\r\n"
        while text.utf8.count < 1000 { text += String(repeating: "0123456789", count: 7) + "\r\n" }
        let message = EncodedMessage(try RawMessage(Array(text.utf8)))
        return OutgoingMail(envelope: try Envelope(from: "bench@sluice.test", to: ["rcpt@sink.test"]), message: message)
    }

    /// Sends one message per iteration through the bulk API, measuring only the sending;
    /// every message must be accepted.
    func sendMeasured(_ benchmark: Benchmark) async throws {
        let mails = Array(repeating: mail, count: benchmark.scaledIterations.count)
        benchmark.startMeasurement()
        var accepted = 0
        for try await report in client.send(contentsOf: mails, maximumInFlight: 640) where report.outcome == .accepted {
            accepted += 1
        }
        benchmark.stopMeasurement()
        precondition(accepted == mails.count, "only \(accepted) of \(mails.count) accepted")
    }

    func shutdown() async {
        await client.shutdown()
        await group.shutdown()
    }
}

/// A sink on loops of its own and a client on others.
struct ClientSinkPair {
    let sink: SMTPSink
    let sinkGroup: EventLoopGroup
    let client: BenchClient

    static func make(connections: Int, chunking: Bool) async throws -> ClientSinkPair {
        let sinkGroup = EventLoopGroup(numberOfLoops: 1)
        var sinkConfiguration = SinkConfiguration()
        sinkConfiguration.port = 0
        let sink = try await SMTPSink.start(sinkConfiguration, group: sinkGroup)
        let client = try BenchClient.make(port: sink.localAddress.port, connections: connections, chunking: chunking)
        return ClientSinkPair(sink: sink, sinkGroup: sinkGroup, client: client)
    }

    func shutdown() async {
        await client.shutdown()
        await sink.shutdown()
        await sinkGroup.shutdown()
    }
}
