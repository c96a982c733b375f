import Foundation
import SluiceCore
import SluiceMIME
import SluiceTestSupport
import Testing

/// Reports that come back later: delivery status notifications laid out as RFC 3464's
/// examples are, a complaint as RFC 5965's, each read here and by Python's email package (which
/// parses message/delivery-status into its field groups), and the malformed ones refused with
/// a reason.
@Suite("Bounce reports")
struct BounceReportTests {
    /// After RFC 3464 §10's examples: two recipients, one failed and one delayed, the
    /// original's headers returned.
    static let dsn = """
        From: Mail Delivery System <MAILER-DAEMON@mx.example.net>\r
        To: bounces@example.com\r
        Subject: Undelivered Mail Returned to Sender\r
        MIME-Version: 1.0\r
        Content-Type: multipart/report; report-type=delivery-status;\r
        \tboundary="RAA14128.773615765/CS.UTK.EDU"\r
        \r
        This is a MIME-encapsulated message.\r
        \r
        --RAA14128.773615765/CS.UTK.EDU\r
        Content-Type: text/plain; charset=us-ascii\r
        \r
        The original message was received and could not be delivered.\r
        \r
        --RAA14128.773615765/CS.UTK.EDU\r
        Content-Type: message/delivery-status\r
        \r
        Reporting-MTA: dns; mx.example.net\r
        Original-Envelope-Id: sluice.7.00112233445566778899\r
        Arrival-Date: Sat, 5 Dec 2026 07:55:00 +0000\r
        \r
        Original-Recipient: rfc822;Gone+news@example.org\r
        Final-Recipient: RFC822; gone+news@example.org\r
        Action: failed\r
        Status: 5.1.1 (bad destination mailbox address)\r
        Remote-MTA: DNS; mail.example.org\r
        Diagnostic-Code: smtp; 550 5.1.1 <gone+news@example.org>: Recipient address\r
        \trejected: User unknown in local recipient table\r
        \r
        Final-Recipient: rfc822;slow@example.org\r
        Action: delayed\r
        Status: 4.4.1\r
        Will-Retry-Until: Mon, 7 Dec 2026 07:55:00 +0000\r
        \r
        --RAA14128.773615765/CS.UTK.EDU\r
        Content-Type: text/rfc822-headers\r
        \r
        From: news@example.com\r
        To: gone+news@example.org, slow@example.org\r
        Subject: This week\r
        Message-ID: <abc123@example.com>\r
        \r
        --RAA14128.773615765/CS.UTK.EDU--\r

        """

    /// After RFC 5965 Appendix B.2: a complaint with the whole original returned.
    static let arf = """
        From: <abusedesk@example.com>\r
        Date: Thu, 8 Mar 2005 17:40:36 EDT\r
        Subject: FW: Earn money\r
        To: <abuse@example.net>\r
        MIME-Version: 1.0\r
        Content-Type: multipart/report; report-type=feedback-report;\r
             boundary="part1_13d.2e68ed54_boundary"\r
        \r
        --part1_13d.2e68ed54_boundary\r
        Content-Type: text/plain; charset="US-ASCII"\r
        Content-Transfer-Encoding: 7bit\r
        \r
        This is an email abuse report for an email message received from IP\r
        192.0.2.1 on Thu, 8 Mar 2005 14:00:00 EDT.\r
        \r
        --part1_13d.2e68ed54_boundary\r
        Content-Type: message/feedback-report\r
        \r
        Feedback-Type: abuse\r
        User-Agent: SomeGenerator/1.0\r
        Version: 1\r
        Original-Mail-From: <somespammer@example.net>\r
        Original-Rcpt-To: <user@example.com>\r
        Arrival-Date: Thu, 8 Mar 2005 14:00:00 EDT\r
        Reporting-MTA: dns; mail.example.com\r
        Source-IP: 192.0.2.1\r
        \r
        --part1_13d.2e68ed54_boundary\r
        Content-Type: message/rfc822\r
        Content-Disposition: inline\r
        \r
        From: <somespammer@example.net>\r
        Received: from mailserver.example.net (mailserver.example.net [192.0.2.1])\r
                by example.com with ESMTP id M63d4137594e46; Thu, 08 Mar 2005 14:00:00 -0400\r
        To: <Undisclosed Recipients>\r
        Subject: Earn money\r
        MIME-Version: 1.0\r
        Content-type: text/plain\r
        Message-ID: 8787KJKJ3K4J3K4J3K4J3.mail@example.net\r
        Date: Thu, 02 Sep 2004 12:31:03 -0500\r
        \r
        Spam Spam Spam\r
        \r
        --part1_13d.2e68ed54_boundary--\r

        """

    /// RFC 3464 §10.1, "a simple DSN": sendmail reporting a delay that became a failure (its
    /// lines as the RFC gives them, LF line ends, the returned message's headers added).
    static let rfc3464Simple = """
        Date: Thu, 7 Jul 1994 17:16:05 -0400
        From: Mail Delivery Subsystem <MAILER-DAEMON@CS.UTK.EDU>
        Message-Id: <199407072116.RAA14128@CS.UTK.EDU>
        Subject: Returned mail: Cannot send message for 5 days
        To: <owner-info-mime@cs.utk.edu>
        MIME-Version: 1.0
        Content-Type: multipart/report; report-type=delivery-status;
            boundary="RAA14128.773615765/CS.UTK.EDU"

        --RAA14128.773615765/CS.UTK.EDU

        The original message was received at Sat, 2 Jul 1994 17:10:28 -0400
        from root@localhost

            ----- The following addresses had delivery problems -----
        <louisl@larry.slip.umd.edu>  (unrecoverable error)

        --RAA14128.773615765/CS.UTK.EDU
        content-type: message/delivery-status

        Reporting-MTA: dns; cs.utk.edu

        Original-Recipient: rfc822;louisl@larry.slip.umd.edu
        Final-Recipient: rfc822;louisl@larry.slip.umd.edu
        Action: failed
        Status: 4.0.0
        Diagnostic-Code: smtp; 426 connection timed out
        Last-Attempt-Date: Thu, 7 Jul 1994 17:15:49 -0400

        --RAA14128.773615765/CS.UTK.EDU
        content-type: message/rfc822

        From: owner-info-mime@cs.utk.edu
        To: louisl@larry.slip.umd.edu
        Message-ID: <199407021710.RAA00001@cs.utk.edu>
        Subject: info-mime

        [original message goes here]

        --RAA14128.773615765/CS.UTK.EDU--

        """

    @Test func rfc3464sSimpleExampleIsRead() throws {
        guard case .deliveryStatus(let dsn) = try BounceReport(parsing: Array(Self.rfc3464Simple.utf8)) else {
            Issue.record("not read as a delivery status notification")
            return
        }
        #expect(dsn.reportingMTA == "cs.utk.edu")
        #expect(dsn.originalEnvelopeID == nil)
        #expect(dsn.originalMessageID == "<199407021710.RAA00001@cs.utk.edu>")
        #expect(dsn.recipients == [DeliveryStatusNotification.Recipient(
            originalRecipient: "louisl@larry.slip.umd.edu", finalRecipient: "louisl@larry.slip.umd.edu", action: .failed,
            status: EnhancedStatusCode("4.0.0")!, remoteMTA: nil, diagnosticCode: "426 connection timed out")])
        // A delay that became a failure: its class says so, and it is not a hard bounce.
        #expect(BounceClassifier.standard.classify(code: 426, enhancedCode: EnhancedStatusCode("4.0.0"),
                                                   text: "426 connection timed out") == .connection)
    }

    @Test func aDeliveryStatusNotificationIsReadRecipientByRecipient() throws {
        guard case .deliveryStatus(let dsn) = try BounceReport(parsing: Array(Self.dsn.utf8)) else {
            Issue.record("not read as a delivery status notification")
            return
        }
        #expect(dsn.originalEnvelopeID == "sluice.7.00112233445566778899")
        #expect(dsn.reportingMTA == "mx.example.net")
        #expect(dsn.originalMessageID == "<abc123@example.com>")
        #expect(dsn.recipients.count == 2)
        let failed = dsn.recipients[0]
        #expect(failed.originalRecipient == "Gone+news@example.org", "ORCPT's xtext +2B would be decoded; a plain + stays")
        #expect(failed.finalRecipient == "gone+news@example.org")
        #expect(failed.address == "Gone+news@example.org")
        #expect(failed.action == .failed)
        #expect(failed.status == EnhancedStatusCode("5.1.1"))
        #expect(failed.remoteMTA == "mail.example.org")
        #expect(failed.diagnosticCode == "550 5.1.1 <gone+news@example.org>: Recipient address rejected: User unknown in local recipient table")
        #expect(dsn.recipients[1].action == .delayed && dsn.recipients[1].status == EnhancedStatusCode("4.4.1"))
        // Bare LF line ends read the same.
        let lf = try BounceReport(parsing: Array(Self.dsn.replacingOccurrences(of: "\r\n", with: "\n").utf8))
        #expect(lf == .deliveryStatus(dsn))
    }

    @Test func aComplaintIsReadWithWhoComplainedAndTheReturnedMessageID() throws {
        guard case .feedback(let report) = try BounceReport(parsing: Array(Self.arf.utf8)) else {
            Issue.record("not read as a feedback report")
            return
        }
        #expect(report.feedbackType == "abuse")
        #expect(report.recipients == ["user@example.com"])
        #expect(report.originalMailFrom == "somespammer@example.net")
        #expect(report.userAgent == "SomeGenerator/1.0")
        #expect(report.originalMessageID == "8787KJKJ3K4J3K4J3K4J3.mail@example.net")
    }

    @Test(.needsPeers(python: ["email"]))
    func pythonsEmailPackageReadsTheSameFields() async throws {
        guard let python = await peerPython(importing: ["email"]) else { return }
        let path = FileManager.default.temporaryDirectory.appendingPathComponent("dsn-\(UUID().uuidString).eml").path
        try Data(Self.dsn.utf8).write(to: URL(fileURLWithPath: path))
        defer { try? FileManager.default.removeItem(atPath: path) }
        // message/delivery-status parts are a list of field groups in Python's email.
        let script = """
            import email, email.policy, json, sys
            m = email.message_from_binary_file(open(sys.argv[1], 'rb'), policy=email.policy.compat32)
            status = next(p for p in m.walk() if p.get_content_type() == 'message/delivery-status')
            groups = status.get_payload()
            out = {'envid': groups[0]['Original-Envelope-Id'], 'recipients': [
                {'final': g['Final-Recipient'], 'action': g['Action'], 'status': g['Status']} for g in groups[1:]]}
            print(json.dumps(out))
            """
        let run = try await runInBackground(python, ["-c", script, path])
        #expect(run.status == 0, "\(run.error)")
        struct View: Decodable {
            struct Recipient: Decodable { var final: String; var action: String; var status: String }
            var envid: String
            var recipients: [Recipient]
        }
        let view = try JSONDecoder().decode(View.self, from: Data(run.output.utf8))
        guard case .deliveryStatus(let dsn) = try BounceReport(parsing: Array(Self.dsn.utf8)) else { return }
        #expect(view.envid == dsn.originalEnvelopeID)
        #expect(view.recipients.count == dsn.recipients.count)
        for (seen, read) in zip(view.recipients, dsn.recipients) {
            #expect(seen.final.split(separator: ";").last.map { $0.trimmingCharacters(in: .whitespaces) } == read.finalRecipient)
            #expect(seen.action == read.action.rawValue)
            #expect(seen.status.hasPrefix("\(read.status)"))
        }
    }

    @Test(arguments: [
        ("From: a@example.com\r\nSubject: hi\r\n\r\nhello\r\n", "has no Content-Type"),
        ("From: a@example.com\r\nContent-Type: text/plain\r\n\r\nhello\r\n", "is text/plain, not multipart/report"),
        ("Content-Type: multipart/report; report-type=delivery-status\r\n\r\nx\r\n", "has no boundary"),
        ("Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nx\r\n--b--\r\n",
         "no message/delivery-status part"),
        ("Content-Type: multipart/report; report-type=disposition-notification; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n",
         "neither delivery-status nor feedback-report"),
        ("Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\nAction: failed\r\nStatus: 5.1.1\r\n--b--\r\n",
         "recipient 1 has no Final-Recipient"),
        ("Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\nFinal-Recipient: rfc822; a@example.org\r\nAction: failed\r\nStatus: bounced\r\n--b--\r\n",
         "recipient 1 has no valid Status"),
        ("Content-Type: multipart/report; report-type=delivery-status; boundary=b\r\n\r\n--b\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; x\r\n\r\nFinal-Recipient: rfc822; a@example.org\r\nAction: exploded\r\nStatus: 5.1.1\r\n--b--\r\n",
         "recipient 1 has no Action the RFC defines"),
        ("Content-Type: multipart/report; report-type=feedback-report; boundary=b\r\n\r\n--b\r\nContent-Type: message/feedback-report\r\n\r\nVersion: 1\r\n--b--\r\n",
         "no Feedback-Type"),
    ])
    func aMalformedReportIsRefusedSayingWhy(text: String, reason: String) {
        #expect {
            _ = try BounceReport(parsing: Array(text.utf8))
        } throws: { error in
            (error as? BounceReportError)?.message.contains(reason) == true
        }
    }
}
