import Foundation
@testable import Sluice
import SluiceSink
import SluiceTestSupport
import Testing

/// Test keys made by the openssl command, with their DNS TXT records.
struct DKIMTestKeys: Sendable {
    let directory: String
    let rsaPKCS8: String
    let rsaPKCS1: String
    let ed25519: String
    let rsaRecord: String
    let ed25519Record: String

    /// The keys, made once per run (RSA key generation takes a while).
    static func shared() async throws -> DKIMTestKeys? { try await made.value }
    private static let made = Task<DKIMTestKeys?, any Error> { try await make() }

    private static func make() async throws -> DKIMTestKeys? {
        guard let openssl = requirePeer("openssl", install: "apt-get install openssl") else { return nil }
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("sluice-dkim-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        for arguments in [["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", "rsa.pem"],
                          ["rsa", "-in", "rsa.pem", "-traditional", "-out", "rsa1.pem"],
                          ["genpkey", "-algorithm", "ed25519", "-out", "ed.pem"],
                          ["pkey", "-in", "rsa.pem", "-pubout", "-outform", "DER", "-out", "rsa.pub"],
                          ["pkey", "-in", "ed.pem", "-pubout", "-outform", "DER", "-out", "ed.pub"]] {
            let result = try await runInBackground(openssl, arguments, in: directory)
            guard result.status == 0 else { throw CertificateError(message: "openssl \(arguments): \(result.error)") }
        }
        let rsaPublic = try Data(contentsOf: URL(fileURLWithPath: "\(directory)/rsa.pub"))
        let edPublic = try Data(contentsOf: URL(fileURLWithPath: "\(directory)/ed.pub")).suffix(32)
        return DKIMTestKeys(directory: directory, rsaPKCS8: "\(directory)/rsa.pem", rsaPKCS1: "\(directory)/rsa1.pem",
                            ed25519: "\(directory)/ed.pem",
                            rsaRecord: "v=DKIM1; k=rsa; p=\(rsaPublic.base64EncodedString())",
                            ed25519Record: "v=DKIM1; k=ed25519; p=\(Data(edPublic).base64EncodedString())")
    }

    func signers(domain: String = "example.com") throws -> [DKIMSigner] {
        [try DKIMSigner(domain: domain, selector: "rsa", privateKeyFile: rsaPKCS8),
         try DKIMSigner(domain: domain, selector: "ed", privateKeyFile: ed25519)]
    }

    /// dkimpy's verdict on every signature of `message`, top to bottom; nil when the peer is missing.
    func verify(_ message: [UInt8], domain: String = "example.com") async throws -> [Bool]? {
        guard let python = await peerPython(importing: ["dkim", "nacl"]) else { return nil }
        let path = "\(directory)/message-\(UUID().uuidString).eml"
        try Data(message).write(to: URL(fileURLWithPath: path))
        let script = packageRoot() + "/Tests/SluiceTests/Support/verify_dkim.py"
        let result = try await runInBackground(python, [script, path, "rsa._domainkey.\(domain)=\(rsaRecord)",
                                      "ed._domainkey.\(domain)=\(ed25519Record)"])
        #expect(result.status == 0, "\(result.error)")
        return try JSONDecoder().decode([Bool].self, from: Data(result.output.utf8))
    }
}

@Suite("DKIM")
struct DKIMTests {
    // MARK: RFC 8463 Appendix A (its example verifies with dkimpy as written here)

    static let rfcMessage = try! RawMessage(Array("""
        From: Joe SixPack <joe@football.example.com>\r
        To: Suzie Q <suzie@shopping.example.net>\r
        Subject: Is dinner ready?\r
        Date: Fri, 11 Jul 2003 21:00:37 -0700 (PDT)\r
        Message-ID: <20030712040037.46341.5F8J@football.example.com>\r
        \r
        Hi.\r
        \r
        We lost the game.  Are you hungry yet?\r
        \r
        Joe.\r

        """.utf8))

    /// The RFC's Ed25519 secret key (A.2), as PKCS#8 PEM.
    static var rfcEd25519Key: SigningKey {
        let seed = Array(Data(base64Encoded: "nWGxne/9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A=")!)
        let der: [UInt8] = [0x30, 0x2E, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2B, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20] + seed
        let pem = "-----BEGIN PRIVATE KEY-----\n\(Data(der).base64EncodedString())\n-----END PRIVATE KEY-----\n"
        return try! SigningKey(pem: Array(pem.utf8))
    }

    @Test func theRFC8463ExampleIsReproducedExactly() throws {
        #expect(String(decoding: Self.rfcMessage.bytes[..<Self.rfcMessage.headerLength], as: UTF8.self).hasSuffix("com>\r\n\r\n"))
        let signer = try DKIMSigner(domain: "football.example.com", selector: "brisbane", key: Self.rfcEd25519Key)
        #expect(Base64.encode(signer.bodyHash(of: Self.rfcMessage)) == "2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=")
        let header = Array("""
            DKIM-Signature: v=1; a=ed25519-sha256; c=relaxed/relaxed;\r
             d=football.example.com; i=@football.example.com;\r
             q=dns/txt; s=brisbane; t=1528637909; h=from : to :\r
             subject : date : message-id : from : subject : date;\r
             bh=2jUSOH9NhtVGCQWNr9BrIAPreKQjO6Sn7XIkfJVOzv8=;\r
             b=
            """.utf8)
        let names = ["from", "to", "subject", "date", "message-id", "from", "subject", "date"]
        let signature = try signer.signatureValue(for: DKIMSigner.headerFields(of: Self.rfcMessage), names: names,
                                                  signatureHeader: header)
        #expect(Base64.encode(signature) == "/gCrinpcQOoIfuHNQIbq4pgh9kyIK3AQUdt9OdqQehSwhEIug4D11BusFa3bT3FY5OsU7ZbnKELq+eXdp1Q1Dw==")
    }

    @Test func canonicalisationFollowsRFC6376Section3_4() throws {
        var signer = try DKIMSigner(domain: "example.com", selector: "s", key: Self.rfcEd25519Key)
        // §3.4.2 relaxed header: lower-case name, unfolded, whitespace runs to one space, none around the colon.
        #expect(signer.canonicalHeader(Array("SubJect \t:  A  b\r\n \tc \r\n".utf8)) == Array("subject:A b c\r\n".utf8))
        signer.headerCanonicalization = .simple
        #expect(signer.canonicalHeader(Array("SubJect :  A\r\n b\r\n".utf8)) == Array("SubJect :  A\r\n b\r\n".utf8))
        // §3.4.3 simple body: trailing empty lines go; an empty body is one CRLF.
        #expect(DKIMSigner.simpleBody(Array("a \r\n\r\n\r\n".utf8)[...]) == Array("a \r\n".utf8))
        #expect(DKIMSigner.simpleBody([][...]) == [13, 10])
        #expect(DKIMSigner.simpleBody(Array("\r\n\r\n".utf8)[...]) == [13, 10])
        // §3.4.4 relaxed body: the RFC's example, and an empty body stays empty.
        #expect(DKIMSigner.relaxedBody(Array(" C \r\nD \t E\r\n\r\n\r\n".utf8)[...]) == Array(" C\r\nD E\r\n".utf8))
        #expect(DKIMSigner.relaxedBody(Array("\r\n \r\nx\r\n \t\r\n".utf8)[...]) == Array("\r\n\r\nx\r\n".utf8))
        #expect(DKIMSigner.relaxedBody([][...]) == [])
        // The RFC 6376 §3.4.6 example.
        signer.headerCanonicalization = .relaxed
        #expect(signer.canonicalHeader(Array("A: X\r\n".utf8)) + signer.canonicalHeader(Array("B : Y\t\r\n\tZ  \r\n".utf8))
                == Array("a:X\r\nb:Y Z\r\n".utf8))
    }

    // MARK: Independent verification (dkimpy)

    static func messages() throws -> [(String, RawMessage)] {
        var unicode = Message(from: try Mailbox("Zoë Ünal <zoe@example.com>"), to: [try Mailbox("山田 太郎 <taro@example.jp>")],
                              subject: "Grüße aus Köln — 東京からのお知らせ 🚀, a subject long enough to be folded over several lines",
                              text: "Grüße!\n\nTrailing spaces   \n\n\n", html: "<p>Grüße</p>")
        unicode.headers = [Header("List-Unsubscribe", "<https://example.com/unsubscribe?token=0123456789abcdef0123456789abcdef0123456789abcdef>"),
                           Header("List-Unsubscribe-Post", "List-Unsubscribe=One-Click")]
        unicode.attachments = [Attachment(data: (0..<5_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }, fileName: "Prüfbericht.pdf")]
        let plain = Message(from: try Mailbox("a@example.com"), to: [try Mailbox("b@example.org")], subject: "Hi", text: "")
        let raw = try RawMessage(Array("From: a@example.com\nTo: b@example.org\nSubject:   spaced    out  \n\twith a fold\n\nline  with   spaces \n\n\n".utf8))
        return [("unicode", try unicode.encoded()), ("empty body", try plain.encoded()), ("raw", raw)]
    }

    @Test(.needsPeers(executables: ["openssl"], python: ["dkim", "nacl"]), arguments: [DKIMSigner.Canonicalization.relaxed, .simple])
    func dkimpyVerifiesRSAAndEd25519Signatures(canonicalization: DKIMSigner.Canonicalization) async throws {
        guard let keys = try await DKIMTestKeys.shared() else { return }
        for (name, message) in try Self.messages() {
            for bodyCanonicalization in [DKIMSigner.Canonicalization.relaxed, .simple] {
                var signed = message
                for var signer in try keys.signers() {
                    signer.headerCanonicalization = canonicalization
                    signer.bodyCanonicalization = bodyCanonicalization
                    signed = try signer.sign(signed)
                }
                let text = String(decoding: signed.bytes, as: UTF8.self)
                #expect(!text.contains("l="), "never a body length tag")
                for line in text.components(separatedBy: "\r\n") where line.hasPrefix("DKIM") || line.hasPrefix(" ") {
                    #expect(line.utf8.count <= 998)
                }
                let verdicts = try await keys.verify(signed.bytes)
                #expect(verdicts == [true, true], "\(name), \(canonicalization)/\(bodyCanonicalization)")
            }
        }
    }

    @Test(.needsPeers(executables: ["openssl"], python: ["dkim", "nacl"])) func oneChangedByteOrHeaderFailsVerification() async throws {
        guard let keys = try await DKIMTestKeys.shared() else { return }
        let (_, message) = try Self.messages()[0]
        var signed = message
        for signer in try keys.signers() { signed = try signer.sign(signed) }
        guard try await keys.verify(signed.bytes) == [true, true] else {
            Issue.record("the untouched message must verify")
            return
        }
        var body = signed.bytes
        body[body.count - 10] ^= 0x01
        #expect(try await keys.verify(body) == [false, false], "one body byte changed")

        let text = String(decoding: signed.bytes, as: UTF8.self)
        let subject = text.replacingOccurrences(of: "Subject: =?utf-8?", with: "Subject: =?UTF-8?")
        #expect(subject != text)
        #expect(try await keys.verify(Array(subject.utf8)) == [false, false], "a signed header changed")

        let secondFrom = text.replacingOccurrences(of: "\r\nTo: ", with: "\r\nFrom: eve@example.org\r\nTo: ")
        #expect(try await keys.verify(Array(secondFrom.utf8)) == [false, false], "From is oversigned: another cannot be added")
    }

    @Test(.needsPeers(executables: ["openssl"], python: ["dkim", "nacl"])) func aMessageThroughTheClientAndTheSinksMaildirStillVerifies() async throws {
        guard let keys = try await DKIMTestKeys.shared() else { return }
        let maildir = keys.directory + "/Maildir"
        for sub in ["tmp", "new", "cur"] {
            try FileManager.default.createDirectory(atPath: "\(maildir)/\(sub)", withIntermediateDirectories: true)
        }
        let sink = try await startSink { $0.store = .maildir(maildir) }
        let client = try makeClient(for: sink) { $0.dkim = try! keys.signers() }
        let (_, message) = try Self.messages()[0]
        let report = try await client.send(message, envelope: envelope("b@example.org"))
        #expect(report.outcome == .accepted)
        await client.shutdown()
        await sink.shutdown()
        let files = try FileManager.default.contentsOfDirectory(atPath: "\(maildir)/new")
        #expect(files.count == 1)
        let stored = try Data(contentsOf: URL(fileURLWithPath: "\(maildir)/new/\(files[0])"))
        #expect(try await keys.verify(Array(stored)) == [true, true])
    }

    @Test(.needsPeers(executables: ["openssl"], python: ["dkim", "nacl"])) func keysAreReadFromPKCS1AndPKCS8AndBadOnesAreClearErrors() async throws {
        guard let keys = try await DKIMTestKeys.shared() else { return }
        #expect(try SigningKey(pemFile: keys.rsaPKCS1).kind == .rsa(bits: 2048))
        #expect(try SigningKey(pemFile: keys.rsaPKCS8).kind == .rsa(bits: 2048))
        #expect(try SigningKey(pemFile: keys.ed25519).kind == .ed25519)
        #expect(throws: SigningKey.KeyError.self) { try SigningKey(pem: Array("not a key".utf8)) }
        #expect(throws: SigningKey.KeyError.self) { try SigningKey(pemFile: "/nonexistent/key.pem") }
        if let openssl = findExecutable("openssl") {
            _ = try await runInBackground(openssl, ["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:768",
                                                    "-out", "small.pem"], in: keys.directory)
            let small = try SigningKey(pemFile: "\(keys.directory)/small.pem")
            #expect { try DKIMSigner(domain: "example.com", selector: "s", key: small) } throws: {
                "\($0)".contains("1024 to 4096")
            }
        }
        let key = try SigningKey(pemFile: keys.ed25519)
        #expect(throws: DKIMError.self) { try DKIMSigner(domain: "exa mple.com", selector: "s", key: key) }
        #expect(throws: DKIMError.self) { try DKIMSigner(domain: "example.com", selector: "s;x=1", key: key) }
    }
}
