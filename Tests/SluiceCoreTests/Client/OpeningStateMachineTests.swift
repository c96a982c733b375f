import Testing
@testable import SluiceCore
import SluiceTransport  // OpenSSLCryptography, as the client wires it

/// The opening on its own: replies in, one step out, no parser, timer or transport.
@Suite("Client opening state machine")
struct OpeningStateMachineTests {
    typealias Opening = OpeningStateMachine

    static func opening(tls: ClientStateMachine.TLSPolicy, credentials: SASLCredentials? = nil,
                        allowPlaintext: Bool = false) -> Opening {
        Opening(configuration: .init(ehloName: try! SMTPDomain("client.example"), tls: tls, credentials: credentials,
                                     allowPlaintextAuthentication: allowPlaintext),
                cryptography: OpenSSLCryptography())
    }

    /// One reply from its text (CRLF line ends).
    static func reply(_ text: String) -> SMTPReply {
        var parser = ReplyParser()
        parser.append(Array(text.utf8))
        return try! parser.nextReply()!
    }

    /// The command a step writes, as text; nil for any other step.
    static func written(_ step: Opening.Step) -> String? {
        guard case .write(let command) = step else { return nil }
        var bytes: [UInt8] = []
        command.encode(into: &bytes)
        return String(decoding: bytes, as: UTF8.self)
    }

    static func failure(_ step: Opening.Step) -> SMTPSessionError? {
        if case .fail(let error) = step { return error }
        return nil
    }

    @Test func startTLSThenAUTHForgetsWhatWasLearnedBeforeTheHandshake() {
        var opening = Self.opening(tls: .startTLSRequired, credentials: try! .password(username: "u", password: "p"))
        #expect(opening.setupPhase == .greeting && !opening.isSecure)
        #expect(Self.written(opening.replyReceived(Self.reply("220 mx ESMTP\r\n"))) == "EHLO client.example\r\n")
        #expect(opening.setupPhase == .ehlo)
        let before = opening.replyReceived(Self.reply("250-mx\r\n250-STARTTLS\r\n250 AUTH LOGIN\r\n"))
        #expect(Self.written(before) == "STARTTLS\r\n", "TLS comes before AUTH")
        guard case .startTLS = opening.replyReceived(Self.reply("220 go ahead\r\n")) else {
            Issue.record("the 220 to STARTTLS starts the handshake")
            return
        }
        #expect(opening.isInTLSHandshake && opening.setupPhase == .tlsHandshake)
        #expect(Self.failure(opening.replyReceived(Self.reply("250 early\r\n")))?.kind == .protocolViolation,
                "nothing is answered during the handshake")

        var secured = Self.opening(tls: .startTLSRequired, credentials: try! .password(username: "u", password: "p"))
        _ = secured.replyReceived(Self.reply("220 mx ESMTP\r\n"))
        _ = secured.replyReceived(Self.reply("250-mx\r\n250-STARTTLS\r\n250 AUTH LOGIN\r\n"))
        _ = secured.replyReceived(Self.reply("220 go ahead\r\n"))
        #expect(secured.tlsEstablished().map(Self.written) == "EHLO client.example\r\n")
        #expect(secured.isSecure && secured.capabilities.authenticationMechanisms.isEmpty,
                "the plaintext EHLO's capabilities are gone")
        let auth = secured.replyReceived(Self.reply("250-mx\r\n250 AUTH PLAIN\r\n"))
        #expect(Self.written(auth)?.hasPrefix("AUTH PLAIN ") == true, "\(String(describing: Self.written(auth)))")
        #expect(secured.setupPhase == .authentication)
        guard case .ready(let capabilities) = secured.replyReceived(Self.reply("235 2.7.0 ok\r\n")) else {
            Issue.record("a 235 ends the opening")
            return
        }
        #expect(capabilities.authenticationMechanisms == ["PLAIN"])
        #expect(secured.setupPhase == nil)
        #expect(secured.tlsEstablished() == nil, "no handshake is under way")
    }

    @Test func aPermanentEHLORefusalFallsBackToHELOAndATransientOneFails() {
        var old = Self.opening(tls: .none)
        _ = old.replyReceived(Self.reply("220 mx\r\n"))
        #expect(Self.written(old.replyReceived(Self.reply("502 what\r\n"))) == "HELO client.example\r\n")
        guard case .ready(let capabilities) = old.replyReceived(Self.reply("250 mx.example\r\n")) else {
            Issue.record("HELO's 250 ends the opening")
            return
        }
        #expect(!capabilities.pipelining)

        var busy = Self.opening(tls: .none)
        _ = busy.replyReceived(Self.reply("220 mx\r\n"))
        #expect(Self.failure(busy.replyReceived(Self.reply("421 busy\r\n")))?.kind == .ehloRejected)

        var refused = Self.opening(tls: .none)
        #expect(Self.failure(refused.replyReceived(Self.reply("554 no SMTP here\r\n")))?.kind == .greetingRefused)
    }

    @Test func theTLSPolicyDecidesWhenSTARTTLSIsMissingOrRefused() {
        var required = Self.opening(tls: .startTLSRequired)
        _ = required.replyReceived(Self.reply("220 mx\r\n"))
        #expect(Self.failure(required.replyReceived(Self.reply("250 mx\r\n")))?.kind == .tlsRequired)

        var refusedRequired = Self.opening(tls: .startTLSRequired)
        _ = refusedRequired.replyReceived(Self.reply("220 mx\r\n"))
        _ = refusedRequired.replyReceived(Self.reply("250-mx\r\n250 STARTTLS\r\n"))
        #expect(Self.failure(refusedRequired.replyReceived(Self.reply("454 not now\r\n")))?.kind == .tlsRequired)

        var opportunistic = Self.opening(tls: .startTLSOpportunistic)
        _ = opportunistic.replyReceived(Self.reply("220 mx\r\n"))
        _ = opportunistic.replyReceived(Self.reply("250-mx\r\n250 STARTTLS\r\n"))
        guard case .ready = opportunistic.replyReceived(Self.reply("454 not now\r\n")) else {
            Issue.record("an opportunistic session goes on in plaintext")
            return
        }
        #expect(!opportunistic.isSecure)
    }

    @Test func credentialsNeverGoOverPlaintextUnlessAllowed() {
        let credentials = try! SASLCredentials.password(username: "u", password: "p")
        var plain = Self.opening(tls: .none, credentials: credentials)
        _ = plain.replyReceived(Self.reply("220 mx\r\n"))
        #expect(Self.failure(plain.replyReceived(Self.reply("250-mx\r\n250 AUTH PLAIN\r\n")))?.kind == .authenticationNotAllowed)

        var allowed = Self.opening(tls: .none, credentials: credentials, allowPlaintext: true)
        _ = allowed.replyReceived(Self.reply("220 mx\r\n"))
        #expect(Self.written(allowed.replyReceived(Self.reply("250-mx\r\n250 AUTH PLAIN\r\n")))?.hasPrefix("AUTH PLAIN") == true)
        #expect(Self.failure(allowed.replyReceived(Self.reply("535 5.7.8 no\r\n")))?.kind == .authenticationFailed)
    }

    @Test func aServerThatKeepsChallengingIsLeftWithinTheLimit() {
        var opening = Self.opening(tls: .none, credentials: try! .password(username: "u", password: "p"),
                                   allowPlaintext: true)
        _ = opening.replyReceived(Self.reply("220 mx\r\n"))
        #expect(Self.written(opening.replyReceived(Self.reply("250-mx\r\n250 AUTH LOGIN\r\n"))) == "AUTH LOGIN\r\n")
        var failure: SMTPSessionError?
        var answers = 0
        for _ in 0..<50 where failure == nil {
            let step = opening.replyReceived(Self.reply("334 \r\n"))
            if Self.written(step) != nil { answers += 1 }
            failure = Self.failure(step)
        }
        #expect(failure?.kind == .authenticationFailed, "the exchange is bounded")
        #expect(answers <= Opening.maximumAuthenticationChallenges)
    }
}
