import SluiceCore
import Testing

/// The standard bounce rules against replies that real servers send, as their operators
/// publish them: Gmail's and Google Workspace's SMTP error list, Yahoo's sender error codes,
/// Microsoft's Exchange Online NDR pages, and Postfix's own texts (the Postfix ones are also
/// drawn from a live Postfix in the client's interop tests).
@Suite("Bounce classes")
struct BounceClassifierTests {
    struct Sample: Sendable, CustomTestStringConvertible {
        let reply: String
        let expected: BounceClass
        var testDescription: String { "\(expected): \(reply)" }
        init(_ reply: String, _ expected: BounceClass) {
            self.reply = reply
            self.expected = expected
        }
    }

    static let published: [Sample] = [
        // Gmail / Google Workspace.
        Sample("550 5.1.1 The email account that you tried to reach does not exist. Please try double-checking the recipient's email address for typos or unnecessary spaces.", .invalidRecipient),
        Sample("550 5.2.1 The email account that you tried to reach is disabled.", .inactiveMailbox),
        Sample("452 4.2.2 The email account that you tried to reach is over quota. Please direct the recipient to", .mailboxFull),
        Sample("552 5.2.2 The email account that you tried to reach is over quota and inactive.", .mailboxFull),
        Sample("552 5.2.3 Your message exceeded Google's message size limits.", .messageTooLarge),
        Sample("450 4.2.1 The user you are trying to contact is receiving mail too quickly. Please resend your message at a later time.", .rateLimited),
        Sample("450 4.2.1 The user you are trying to contact is receiving mail at a rate that prevents additional messages from being delivered.", .rateLimited),
        Sample("450 4.2.1 Peak SMTP relay limit exceeded for customer.", .rateLimited),
        Sample("421 4.4.5 Server busy, try again later.", .rateLimited),
        Sample("421 4.7.0 IP not in whitelist for RCPT domain, closing connection.", .policy),
        Sample("421 4.7.0 Our system has detected an unusual rate of unsolicited mail originating from your IP address. To protect our users from spam, mail sent from your IP address has been temporarily blocked.", .rateLimited),
        Sample("421 4.7.0 TLS required for RCPT domain, closing connection.", .tls),
        Sample("421 4.7.0 Try again later, closing connection.", .policy),
        Sample("421 4.3.0 Temporary System Problem. Try again later", .other),
        Sample("451 4.3.0 Mail server temporarily rejected message.", .other),
        Sample("550 5.7.26 This mail has been blocked because the sender is unauthenticated. Gmail requires all senders to authenticate with either SPF or DKIM.", .authentication),
        Sample("550 5.7.26 Unauthenticated email from example.com is not accepted due to domain's DMARC policy.", .authentication),
        Sample("421 4.7.0 This message does not have authentication information or fails to pass authentication checks (SPF or DKIM).", .authentication),
        Sample("550 5.7.1 Our system has detected that this message is likely unsolicited mail. To reduce the amount of spam sent to Gmail, this message has been blocked.", .content),
        Sample("550 5.7.1 Our system has detected that this message is likely suspicious due to the very low reputation of the sending IP address.", .policy),
        Sample("552 5.7.0 This message was blocked because its content presents a potential security issue.", .content),
        Sample("550 5.7.1 This message violates example.com email policy.", .policy),
        Sample("452 4.5.3 Your message has too many recipients.", .protocol),
        Sample("555 5.5.2 Syntax error.", .protocol),
        // Yahoo.
        Sample("421 4.7.0 [TSS04] Messages from 192.0.2.1 temporarily deferred due to unexpected volume or user complaints - 4.16.55.1", .rateLimited),
        Sample("553 5.7.2 [TSS09] All messages from 192.0.2.1 will be permanently deferred; Retrying will NOT succeed.", .policy),
        Sample("554 delivery error: dd This user doesn't have a yahoo.com account (someone@yahoo.com) [0]", .invalidRecipient),
        Sample("554 delivery error: dd Sorry your message to someone@yahoo.com cannot be delivered. This mailbox is disabled (554.30).", .inactiveMailbox),
        Sample("550 5.7.9 This mail has been blocked because the sender is unauthenticated. Yahoo requires all senders to authenticate with either SPF or DKIM.", .authentication),
        Sample("421 Max message per connection reached, closing transmission channel", .rateLimited),
        Sample("450 User is receiving mail too quickly", .rateLimited),
        Sample("451 VS1-IP Excessive unknown recipients - possible Open Relay (#4.1.8)", .policy),
        // Microsoft Exchange Online.
        Sample("550 5.4.1 Recipient address rejected: Access denied. For more information see https://aka.ms/EXOSmtpErrors", .invalidRecipient),
        Sample("550 5.7.1 Service unavailable, Client host [192.0.2.1] blocked using Spamhaus.", .policy),
        Sample("550 5.7.606 Access denied, banned sending IP [192.0.2.1].", .policy),
        Sample("451 4.7.650 The mail server [192.0.2.1] has been temporarily rate limited due to IP reputation.", .rateLimited),
        Sample("550 5.7.515 Access denied, sending domain example.com does not meet the required authentication level.", .authentication),
        Sample("530 5.7.57 Client was not authenticated to send anonymous mail during MAIL FROM", .policy),
        Sample("432 4.3.2 STOREDRV.Deliver; recipient thread limit exceeded", .rateLimited),
        Sample("421 4.3.2 The maximum number of concurrent connections per resource forest has exceeded a limit, closing transmission channel.", .rateLimited),
        Sample("550 5.7.708 Access denied, traffic not accepted from this IP.", .policy),
        Sample("550 5.4.6 Routing loop detected", .routing),
        // Postfix.
        Sample("550 5.1.1 <nobody@sluice.test>: Recipient address rejected: User unknown in local recipient table", .invalidRecipient),
        Sample("450 4.1.2 <a@nonexistent.invalid>: Recipient address rejected: Domain not found", .badDomain),
        Sample("554 5.7.1 <a@elsewhere.test>: Relay access denied", .routing),
        Sample("552 5.3.4 Message size exceeds fixed limit", .messageTooLarge),
        Sample("421 4.7.0 postfix.sluice.test Error: too many connections from 127.0.0.1", .rateLimited),
        Sample("554 5.7.1 Service unavailable; Client host [192.0.2.1] blocked using zen.spamhaus.org", .policy),
        Sample("550 5.1.0 <s@example.com>: Sender address rejected: User unknown in local recipient table", .policy),
        Sample("504 5.5.2 <bad>: Helo command rejected: need fully-qualified hostname", .protocol),
        Sample("450 4.7.1 Client host rejected: cannot find your hostname, [192.0.2.1]", .policy),
        Sample("450 4.2.0 <a@example.org>: Recipient address rejected: Greylisted, see http://postgrey.schweikert.ch/", .policy),
        Sample("556 5.1.10 <a@example.net>: Recipient address rejected: Domain example.net does not accept mail (nullMX)", .badDomain),
        Sample("452 4.3.1 Insufficient system storage", .other),
    ]

    @Test(arguments: published)
    func aPublishedReplyGetsItsClass(sample: Sample) throws {
        var parser = ReplyParser()
        parser.append(Array((sample.reply + "\r\n").utf8))
        let reply = try #require(try parser.nextReply())
        #expect(BounceClassifier.standard.classify(reply) == sample.expected, "\(reply)")
    }

    @Test func bareCodesFallBackToWhatRFC5321SaysTheyMean() {
        let classifier = BounceClassifier.standard
        #expect(classifier.classify(code: 553, enhancedCode: nil, text: "mailbox name not allowed") == .invalidRecipient)
        #expect(classifier.classify(code: 552, enhancedCode: nil, text: "Requested mail action aborted") == .mailboxFull)
        #expect(classifier.classify(code: 521, enhancedCode: nil, text: "") == .badDomain)
        #expect(classifier.classify(code: 501, enhancedCode: nil, text: "bad syntax") == .protocol)
        #expect(classifier.classify(code: 550, enhancedCode: nil, text: "Requested action not taken") == .other,
                "a bare 550 says too little to remove an address for")
        #expect(classifier.classify(code: 451, enhancedCode: nil, text: "local error") == .other)
        #expect(classifier.classify(code: 550, enhancedCode: EnhancedStatusCode("5.7.23"), text: "") == .authentication)
        #expect(classifier.classify(code: 0, enhancedCode: EnhancedStatusCode("5.3.4"), text: "") == .messageTooLarge)
    }

    @Test func aUsersRulesComeFirstAndCanMatchOnEveryPart() throws {
        let classifier = try BounceClassifier(parsing: """
            # a provider that says "blocked" for its own list
            policy         5xx  -      listed by .*example-list
            rate-limited   4xx  x.7.x  slow down please
            invalid-recipient 550 - ^no$
            """)
        #expect(classifier.rules.count == 3 + BounceClassifier.standard.rules.count)
        #expect(classifier.classify(code: 550, enhancedCode: EnhancedStatusCode("5.1.1"),
                                    text: "You are listed by the Example-List") == .policy)
        #expect(classifier.classify(code: 451, enhancedCode: EnhancedStatusCode("4.7.1"), text: "Slow down please") == .rateLimited)
        #expect(classifier.classify(code: 451, enhancedCode: nil, text: "Slow down please") == .rateLimited,
                "the standard rules still apply after the user's")
        #expect(classifier.classify(code: 550, enhancedCode: nil, text: "no") == .invalidRecipient)
        #expect(classifier.classify(code: 550, enhancedCode: nil, text: "no way") == .other)
        let alone = try BounceClassifier(parsing: "content 554 - .*", standard: false)
        #expect(alone.classify(code: 554, enhancedCode: nil, text: "anything") == .content)
        #expect(alone.classify(code: 550, enhancedCode: EnhancedStatusCode("5.1.1"), text: "user unknown") == .other)
    }

    @Test(arguments: [
        ("bouncy 5xx - x", "line 1: \"bouncy\" is not a class"),
        ("\n\npolicy 5x - x", "line 3: the reply code pattern \"5x\""),
        ("policy 5xx 5.7 x", "line 1: the enhanced code pattern \"5.7\""),
        ("policy 5xx - (unclosed", "line 1: the text \"(unclosed\" is not a regular expression"),
        ("policy 5xx", "line 1: a rule is a class, a code, an enhanced code and a text"),
    ])
    func aBadRuleIsRefusedNamingItsLine(text: String, message: String) {
        #expect {
            _ = try BounceClassifier(parsing: text)
        } throws: { error in
            (error as? BounceRuleError)?.message.hasPrefix(message) == true
        }
    }

    @Test func everyClassHasAStableNameAndRulesPrintAsTheyAreRead() throws {
        #expect(BounceClass.allCases.map(\.rawValue) == [
            "invalid-recipient", "bad-domain", "inactive-mailbox", "mailbox-full", "message-too-large", "content",
            "policy", "authentication", "rate-limited", "routing", "protocol", "tls", "connection", "other",
        ])
        let rule = try BounceRule(.policy, code: "5xx", text: "listed by")
        #expect(rule.description == "policy 5xx - listed by")
        let read = try BounceClassifier(parsing: rule.description, standard: false)
        #expect(read.rules.first?.description == rule.description)
    }
}
