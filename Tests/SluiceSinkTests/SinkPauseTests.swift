import SluiceCore
@testable import SluiceSink
import SluiceTestSupport
import SluiceTransport
import Testing

/// `SMTPSink.pauseReading()`: tests pause the sink to hold a client's commands unanswered.
@Suite("Pausing the sink")
struct SinkPauseTests {
    /// The pause reaches each connection by a hop to its loop; bytes read before that hop
    /// used to be answered. Here they arrive in the same loop turn as the pause, before the
    /// hop: the session must hold them unanswered and answer once the sink resumes. (A client
    /// test that cancels a send while the sink is paused stored the cancelled message when
    /// CI's load delayed the hop.)
    @Test func bytesReadAfterAPauseBeganAreAnsweredOnlyAfterItEnds() async throws {
        let sink = try await startSink()
        let group = EventLoopGroup(numberOfLoops: 1)
        let client = try await RawSession.open(to: sink.localAddress, on: group.loops[0])
        await client.replies(atLeast: 1)
        let session = try #require(sink.shared.sessions.first)
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            session.connection.eventLoop.execute {
                sink.pauseReading()
                Array("NOOP\r\n".utf8).withUnsafeBytes { session.connection(session.connection, didReceive: $0) }
                done.resume()
            }
        }
        try await Task.sleep(for: .milliseconds(200))
        #expect(client.codes == [220], "answered while paused: \(client.replies)")
        sink.resumeReading()
        let replies = try await withDeadline(.seconds(10), "the held NOOP's reply") { await client.replies(atLeast: 2) }
        #expect(replies.map(\.code.rawValue) == [220, 250])
        await sink.shutdown()
        await group.shutdown()
    }
}
