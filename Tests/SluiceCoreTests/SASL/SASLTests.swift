import Testing
import SluiceTransport  // OpenSSLCryptography, as the client wires it
@testable import SluiceCore

private func text(_ command: SMTPCommand) -> String { String(decoding: command.encoded, as: UTF8.self) }

private func client(_ mechanism: SASLMechanism, _ credentials: SASLCredentials) -> SASLClient {
    SASLClient(mechanism: mechanism, credentials: credentials, cryptography: OpenSSLCryptography(),
               host: "mail.example.com", port: 587)
}

private func responseText(_ step: SASLClient.Step) -> String? {
    guard case .respond(let bytes) = step else { return nil }
    return String(decoding: bytes, as: UTF8.self)
}

@Suite("SASL")
struct SASLTests {
    let tim = try! SASLCredentials.password(username: "tim", password: "tanstaaftanstaaf")
    let user = try! SASLCredentials.password(username: "user", password: "pencil")

    @Test func plainMatchesRFC4616() {
        var exchange = client(.plain, tim)
        #expect(text(exchange.start()) == "AUTH PLAIN AHRpbQB0YW5zdGFhZnRhbnN0YWFm\r\n")
        #expect(throws: Never.self) { try exchange.succeeded() }
    }

    @Test func cramMD5MatchesRFC2195() {
        var exchange = client(.cramMD5, tim)
        #expect(text(exchange.start()) == "AUTH CRAM-MD5\r\n")
        let challenge = Base64.encode(Array("<1896.697170952@postoffice.reston.mci.net>".utf8))
        #expect(responseText(exchange.challengeReceived(challenge)) == "tim b913a602c7eda7a495b4e6e7334d3890")
    }

    @Test func scramSHA1MatchesRFC5802() {
        var exchange = client(.scramSHA1, user)
        let first = exchange.startSCRAM(nonce: "fyko+d2lbbFgONRv9qkxdawL")
        #expect(text(first) == "AUTH SCRAM-SHA-1 \(Base64.encode(Array("n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL".utf8)))\r\n")
        let serverFirst = "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096"
        #expect(responseText(exchange.challengeReceived(Base64.encode(Array(serverFirst.utf8))))
                == "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=")
        #expect(throws: SASLError.self) { try exchange.succeeded() }  // not before the server's proof
        #expect(responseText(exchange.challengeReceived(Base64.encode(Array("v=rmF9pqV8S7suAoZWja4dJRkFsKQ=".utf8)))) == "")
        #expect(throws: Never.self) { try exchange.succeeded() }
    }

    @Test func scramSHA256MatchesRFC7677() {
        var exchange = client(.scramSHA256, user)
        _ = exchange.startSCRAM(nonce: "rOprNGfwEbeRWgbNEkqO")
        let serverFirst = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        #expect(responseText(exchange.challengeReceived(Base64.encode(Array(serverFirst.utf8))))
                == "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
        let serverFinal = "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="
        #expect(responseText(exchange.challengeReceived(Base64.encode(Array(serverFinal.utf8)))) == "")
        #expect(throws: Never.self) { try exchange.succeeded() }
    }

    @Test func scramRejectsAServerThatDoesNotKnowThePassword() {
        var exchange = client(.scramSHA256, user)
        _ = exchange.startSCRAM(nonce: "rOprNGfwEbeRWgbNEkqO")
        let serverFirst = "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
        _ = exchange.challengeReceived(Base64.encode(Array(serverFirst.utf8)))
        let forged = exchange.challengeReceived(Base64.encode(Array("v=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".utf8)))
        guard case .cancel(let error) = forged else { Issue.record("a forged signature was accepted"); return }
        #expect(error.kind == .serverNotAuthenticated)
        #expect(throws: SASLError.self) { try exchange.succeeded() }
    }

    @Test func scramRejectsANonceThatDoesNotExtendOurs() {
        var exchange = client(.scramSHA1, user)
        _ = exchange.startSCRAM(nonce: "abc")
        let step = exchange.challengeReceived(Base64.encode(Array("r=xyz123,s=QSXCR+Q6sek8bf92,i=4096".utf8)))
        #expect(step == .cancel(SASLError(.malformedChallenge, "the server nonce does not extend ours")))
    }

    @Test func loginSendsUserThenPasswordAndNothingAfterAMalformedChallenge() {
        var exchange = client(.login, tim)
        #expect(text(exchange.start()) == "AUTH LOGIN\r\n")
        #expect(responseText(exchange.challengeReceived("VXNlcm5hbWU6")) == "tim")
        #expect(responseText(exchange.challengeReceived("UGFzc3dvcmQ6")) == "tanstaaftanstaaf")
        #expect(throws: Never.self) { try exchange.succeeded() }

        var broken = client(.login, tim)
        _ = broken.start()
        guard case .cancel(let error) = broken.challengeReceived("not base64!") else {
            Issue.record("a malformed challenge was answered")
            return
        }
        #expect(error.kind == .malformedChallenge)
        // Even a well-formed challenge after that gets no secret.
        #expect(responseText(broken.challengeReceived("UGFzc3dvcmQ6")) == nil)
    }

    @Test func oauthMechanismsSendTheBearerToken() throws {
        let token = try SASLCredentials.bearerToken(username: "someuser@example.com", token: "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg")
        var xoauth2 = client(.xoauth2, token)
        let expected = "user=someuser@example.com\u{1}auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\u{1}\u{1}"
        #expect(text(xoauth2.start()) == "AUTH XOAUTH2 \(Base64.encode(Array(expected.utf8)))\r\n")
        // On failure the server sends a JSON error as a challenge; the client answers empty.
        #expect(xoauth2.challengeReceived(Base64.encode(Array("{\"status\":\"401\"}".utf8))) == .respond([]))

        var bearer = client(.oauthBearer, token)
        let gs2 = "n,a=someuser@example.com,\u{1}host=mail.example.com\u{1}port=587\u{1}auth=Bearer ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg\u{1}\u{1}"
        #expect(text(bearer.start()) == "AUTH OAUTHBEARER \(Base64.encode(Array(gs2.utf8)))\r\n")
        #expect(bearer.challengeReceived(Base64.encode(Array("{\"status\":\"invalid_token\"}".utf8))) == .respond([1]))
        #expect(throws: SASLError.self) { try bearer.succeeded() }
    }

    @Test func choosesTheStrongestCommonMechanismUnlessForced() throws {
        let offered = ["PLAIN", "LOGIN", "CRAM-MD5", "SCRAM-SHA-1", "SCRAM-SHA-256", "XOAUTH2"]
        #expect(try SASLMechanism.choose(offered: offered, credentials: user) == .scramSHA256)
        #expect(try SASLMechanism.choose(offered: ["login", "plain"], credentials: user) == .plain)
        #expect(try SASLMechanism.choose(offered: offered, credentials: user, forced: .login) == .login)
        let token = try SASLCredentials.bearerToken(username: "u", token: "t")
        #expect(try SASLMechanism.choose(offered: offered, credentials: token) == .xoauth2)
        #expect(throws: SASLError.self) { try SASLMechanism.choose(offered: ["PLAIN"], credentials: token) }
        #expect(throws: SASLError.self) { try SASLMechanism.choose(offered: ["PLAIN"], credentials: user, forced: .cramMD5) }
        #expect(throws: SASLError.self) { try SASLMechanism.choose(offered: [], credentials: user) }
    }

    @Test func credentialsWithLineBreaksOrNULAreRefusedLocally() {
        for (name, secret) in [("a\r\nb", "p"), ("a", "p\nq"), ("a\u{0}", "p"), ("", "p"), ("a", "")] {
            #expect(throws: SASLError.self) { try SASLCredentials.password(username: name, password: secret) }
        }
        #expect(!String(describing: user).contains("pencil"), "descriptions never show the secret")
    }
}
