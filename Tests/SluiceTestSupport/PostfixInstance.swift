import Foundation

#if canImport(Glibc)
import Glibc
#endif

/// A private Postfix instance (the real `smtpd`, `cleanup`, `qmgr` and a `pipe` delivery) on
/// 127.0.0.1, in a directory of its own: every message it takes is delivered into
/// ``mailDirectory`` as one file named by its queue ID. Starting one needs root (Postfix's
/// master runs as root and its daemons drop to the `postfix` user).
public final class PostfixInstance: Sendable {
    public let port: Int
    /// Where delivered messages land, one file per queue ID (LF line endings, with the
    /// `Received:` header Postfix adds on top).
    public let mailDirectory: String
    private let directory: String
    private let postfix: String
    private let master: PeerProcess

    /// Starts an instance, or returns nil (saying why, and failing under CI) when Postfix is
    /// missing or the tests do not run as root. `mainCF` lines are added to its `main.cf`
    /// (restrictions for a test, say), `masterCF` lines to its `master.cf` (a service more).
    public static func start(tlsCertificate: String? = nil, tlsKey: String? = nil, mainCF: String = "",
                             masterCF: String = "") async throws -> PostfixInstance? {
        guard let postfix = requirePeer("postfix", install: "apt-get install postfix") else { return nil }
        guard getuid() == 0 else {
            peerUnavailable("a private Postfix instance needs root (its master runs as root)")
            return nil
        }
        // The port is free when chosen but not held while Postfix starts, and a test binding
        // port 0 meanwhile can be given it: the client then talked to that test's silent peer
        // until its deadline (CI, under ASan). An instance that does not greet as Postfix is
        // stopped and another started on a new port.
        var failure = ""
        for _ in 1...3 {
            let instance = try await PostfixInstance(postfix: postfix, tlsCertificate: tlsCertificate, tlsKey: tlsKey,
                                                     mainCF: mainCF, masterCF: masterCF)
            if await offThread({ Self.greetsAsPostfix(port: instance.port) }) { return instance }
            failure = "port \(instance.port) never greeted as Postfix; its log:\n\(await instance.stop())"
        }
        throw PostfixNotListening(description: failure)
    }

    /// Whether the server on 127.0.0.1:`port` greets as this instance does (`220
    /// postfix.sluice.test`), within 10 s (scaled).
    private static func greetsAsPostfix(port: Int) -> Bool {
        guard let descriptor = connectedSocket(port: port) else { return false }
        defer { close(descriptor) }
        let wait = scaled(.seconds(10)).components.seconds
        var timeout = timeval(tv_sec: Int(wait), tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var greeting: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 256)
        while !greeting.contains(10) {
            let count = buffer.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
            guard count > 0 else { break }
            greeting += buffer[..<count]
        }
        return String(decoding: greeting, as: UTF8.self).hasPrefix("220 postfix.sluice.test")
    }

    private init(postfix: String, tlsCertificate: String?, tlsKey: String?, mainCF: String, masterCF: String) async throws {
        self.postfix = postfix
        // Short: Postfix's Unix sockets live under the queue directory (108-byte path limit).
        directory = "/tmp/sluice-pf-\(UUID().uuidString.prefix(8))"
        mailDirectory = directory + "/mail"
        let manager = FileManager.default
        for sub in ["etc", "queue", "data", "mail"] {
            try manager.createDirectory(atPath: "\(directory)/\(sub)", withIntermediateDirectories: true)
        }
        try manager.setAttributes([.posixPermissions: 0o755], ofItemAtPath: directory)
        try manager.setAttributes([.ownerAccountName: "postfix"], ofItemAtPath: directory + "/data")
        try manager.setAttributes([.posixPermissions: 0o1777], ofItemAtPath: mailDirectory)
        let refused = try RefusedPort()  // a free port, held until Postfix is about to bind it
        port = refused.port
        var main = """
            compatibility_level = 3.6
            queue_directory = \(directory)/queue
            data_directory = \(directory)/data
            mail_owner = postfix
            setgid_group = postdrop
            myhostname = postfix.sluice.test
            mydomain = sluice.test
            inet_interfaces = 127.0.0.1
            inet_protocols = ipv4
            mynetworks = 127.0.0.0/8
            mydestination =
            relay_domains = example.org
            smtpd_relay_restrictions = permit_mynetworks, reject
            default_transport = capture
            relay_transport = capture
            local_transport = capture
            local_header_rewrite_clients =
            maillog_file = /dev/stdout
            import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C

            """
        if let tlsCertificate, let tlsKey {
            main += "smtpd_tls_security_level = may\nsmtpd_tls_cert_file = \(tlsCertificate)\nsmtpd_tls_key_file = \(tlsKey)\n"
        }
        var services = """
            127.0.0.1:\(port) inet n - n - - smtpd
            pickup unix n - n 60 1 pickup
            cleanup unix n - n - 0 cleanup
            qmgr unix n - n 300 1 qmgr
            rewrite unix - - n - - trivial-rewrite
            bounce unix - - n - 0 bounce
            defer unix - - n - 0 bounce
            trace unix - - n - 0 bounce
            verify unix - - n - 1 verify
            flush unix n - n 1000? 0 flush
            proxymap unix - - n - - proxymap
            error unix - - n - - error
            retry unix - - n - - error
            discard unix - - n - - discard
            anvil unix - - n - 1 anvil
            scache unix - - n - 1 scache
            postlog unix-dgram n - n - 1 postlogd
            tlsmgr unix - - n 1000? 1 tlsmgr
            capture unix - n n - - pipe flags= user=nobody argv=/bin/sh -c { /bin/cat > \(mailDirectory)/.${queue_id} && /bin/mv \(mailDirectory)/.${queue_id} \(mailDirectory)/${queue_id} }

            """
        main += mainCF.isEmpty ? "" : mainCF + "\n"
        services += masterCF.isEmpty ? "" : masterCF + "\n"
        try main.write(toFile: directory + "/etc/main.cf", atomically: true, encoding: .utf8)
        try services.write(toFile: directory + "/etc/master.cf", atomically: true, encoding: .utf8)
        refused.close()
        // In the foreground, logging to standard output: its first line says it is starting.
        master = try await PeerProcess(postfix, ["-c", directory + "/etc", "start-fg"])
        try await withDeadline(.seconds(20), "Postfix listening on \(port)") { [port] in
            while !Self.accepts(port: port) { try await Task.sleep(for: .milliseconds(50)) }
        }
    }

    /// Whether something accepts TCP connections on 127.0.0.1:`port`.
    private static func accepts(port: Int) -> Bool {
        guard let descriptor = connectedSocket(port: port) else { return false }
        close(descriptor)
        return true
    }

    /// A socket connected to 127.0.0.1:`port` (the caller closes it), or nil.
    private static func connectedSocket(port: Int) -> Int32? {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { return nil }
        var address = loopbackAddress(port: port)
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
            }
        }
        guard connected else {
            close(descriptor)
            return nil
        }
        return descriptor
    }

    /// The delivered message with this queue ID, once it has arrived whole: the pipe writes a
    /// hidden file and renames it when the message ends, so a half-written (or still empty)
    /// file is never read.
    public func delivered(queueID: String) -> [UInt8]? {
        FileManager.default.contents(atPath: "\(mailDirectory)/\(queueID)").map { Array($0) }
    }

    /// Stops the instance and removes its directory; returns what it logged.
    @discardableResult
    public func stop() async -> String {
        // `postfix stop` once hung for good (its `master -t` blocked connecting to a socket),
        // holding the test process open after the last test: it gets 30 s, then the master is
        // stopped anyway.
        if let child = try? ChildProcess(postfix, ["-c", directory + "/etc", "stop"]) {
            child.closeInput()
            _ = await child.outputAndError(quietLimit: .seconds(30))
            await child.stopped(grace: .seconds(1))
        }
        let log = await master.stop()
        try? FileManager.default.removeItem(atPath: directory)
        return log
    }
}

/// A Postfix instance that never greeted on its port.
struct PostfixNotListening: Error, CustomStringConvertible {
    let description: String
}
