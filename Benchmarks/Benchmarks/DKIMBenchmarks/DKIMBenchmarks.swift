import Benchmark
import Foundation
import Sluice

/// DKIM signing: one iteration signs one message (canonicalisation, body hash, header hash
/// and the signature), so throughput is signatures per second. Keys are made at start by the
/// openssl command.
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .cpuTotal, .mallocCountTotal, .throughput],
        timeUnits: .microseconds,
        maxDuration: .seconds(3)
    )

    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-dkim-bench-\(getpid())").path
    try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    func makeKey(_ name: String, _ arguments: [String]) -> SigningKey {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
        process.arguments = ["genpkey"] + arguments + ["-out", "\(directory)/\(name).pem"]
        try! process.run()
        process.waitUntilExit()
        return try! SigningKey(pemFile: "\(directory)/\(name).pem")
    }
    let rsa = try! DKIMSigner(domain: "example.com", selector: "rsa",
                              key: makeKey("rsa", ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"]))
    let ed25519 = try! DKIMSigner(domain: "example.com", selector: "ed", key: makeKey("ed", ["-algorithm", "ed25519"]))

    let from = try! Mailbox("Notifications <notifications@example.com>")
    let to = try! Mailbox("someone@example.org")
    let line = "A line of the message body, with plain text to fill it up to its size......\n"
    for (label, size) in [("1 KB", 1_024), ("100 KB", 102_400)] {
        let text = String(repeating: line, count: size / line.utf8.count)
        let message = try! Message(from: from, to: [to], subject: "Your receipt", text: text).encoded()
        for (name, signer) in [("RSA-2048", rsa), ("Ed25519", ed25519)] {
            Benchmark("sign a \(label) message, \(name)") { benchmark in
                for _ in benchmark.scaledIterations {
                    blackHole(try signer.sign(message))
                }
            }
        }
    }
}
