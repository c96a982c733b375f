import SluiceTransport

/// A misbehaving SMTP server for tests: it greets, then hands every command line it reads to
/// a script that says what to answer, byte for byte (several replies, early replies, control
/// characters: whatever a broken or hostile relay would send). After a reply starting with
/// `354` it reads content until the terminator and asks the script again with the line
/// `"<end of data>"`. The answers to everything one read brought go out in one write, as a
/// pipelining server sends them. It does not check anything the client sends.
public final class ScriptedSMTPServer: Sendable {
    /// What to send in answer to `line` (without CRLF); nil sends nothing.
    public typealias Script = @Sendable (_ line: String) -> String?

    private let server: TCPServer
    private let group: EventLoopGroup

    /// The port it listens on, on 127.0.0.1.
    public var port: Int { server.localAddress.port }

    /// Starts listening on 127.0.0.1 with a free port.
    public static func start(greeting: String = "220 scripted.test ESMTP\r\n", script: @escaping Script) async throws
        -> ScriptedSMTPServer {
        let group = EventLoopGroup(numberOfLoops: 1)
        let server = try await TCPServer.listen(host: "127.0.0.1", port: 0, group: group) { connection in
            connection.enqueueWrite([SharedBytes(Array(greeting.utf8))])
            return ScriptedSession(script: script)
        }
        return ScriptedSMTPServer(server: server, group: group)
    }

    private init(server: TCPServer, group: EventLoopGroup) {
        self.server = server
        self.group = group
    }

    /// Stops listening and ends every session.
    public func shutdown() async {
        await server.close()
        await group.shutdown()
    }
}

/// One scripted session; only its connection's loop touches it.
private final class ScriptedSession: ConnectionHandler {
    private let script: ScriptedSMTPServer.Script
    private var buffer: [UInt8] = []
    private var inContent = false

    init(script: @escaping ScriptedSMTPServer.Script) { self.script = script }

    func connection(_ connection: Connection, didReceive bytes: UnsafeRawBufferPointer) {
        buffer.append(contentsOf: bytes)
        var answers = ""
        while true {
            if inContent {
                guard let end = buffer.firstRange(of: [13, 10, 46, 13, 10]) else { break }
                buffer.removeSubrange(..<end.upperBound)
                inContent = false
                answers += answer("<end of data>")
                continue
            }
            guard let end = buffer.firstRange(of: [13, 10]) else { break }
            let line = String(decoding: buffer[..<end.lowerBound], as: UTF8.self)
            buffer.removeSubrange(..<end.upperBound)
            answers += answer(line)
        }
        if !answers.isEmpty { connection.enqueueWrite([SharedBytes(Array(answers.utf8))]) }
    }

    private func answer(_ line: String) -> String {
        guard let reply = script(line) else { return "" }
        if reply.hasPrefix("354") {
            inContent = true
            buffer.insert(contentsOf: [13, 10], at: 0)  // the terminator may be the content's first line
        }
        return reply
    }

    func connectionDidClose(_ connection: Connection, error: TransportError?) {}
}
