import Benchmark
import Foundation
import SluiceMIME

/// Message encoding: one iteration encodes one message from its parts into wire bytes
/// (headers, transfer encodings, boundaries). Throughput is messages per second; multiply by
/// the encoded size for MB/s (a 1 KB text message encodes to about 1.3 KB, the 1 MB
/// attachment to about 1.37 MB).
let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(
        metrics: [.wallClock, .cpuTotal, .instructions, .mallocCountTotal, .throughput],
        timeUnits: .microseconds,
        maxDuration: .seconds(3)
    )

    let from = try! Mailbox("Notifications <notifications@example.com>")
    let to = try! Mailbox("Someone Person <someone.person@example.org>")
    let line = "A line of the message body, with plain text to fill it up to one kilobyte.\n"
    let text = String(repeating: line, count: 1_024 / line.utf8.count + 1)
    let textMessage = Message(from: from, to: [to], subject: "Your password reset code", text: text)
    Benchmark("encode a 1 KB text message", configuration: .init(scalingFactor: .kilo)) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try textMessage.encoded())
        }
    }

    var unicode = Message(from: try! Mailbox("Zoë Ünal <zoe@bücher.example>"), to: [to],
                          subject: "Grüße aus Köln — 東京からのお知らせ 🚀", text: "Grüße! " + text,
                          html: "<p>Grüße! " + text + "</p>")
    unicode.headers = [Header("List-Unsubscribe", "<https://example.com/unsubscribe?token=0123456789abcdef>")]
    Benchmark("encode a 1 KB Unicode text+HTML message", configuration: .init(scalingFactor: .kilo)) { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try unicode.encoded())
        }
    }

    var attachment = Message(from: from, to: [to], subject: "Your report", text: "Attached.")
    var generator = SystemRandomNumberGenerator()
    attachment.attachments = [Attachment(data: (0..<1_048_576).map { _ in UInt8.random(in: 0...255, using: &generator) },
                                         fileName: "report.pdf")]
    Benchmark("encode a message with a 1 MB attachment") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(try attachment.encoded())
        }
    }
}
