import Sluice

func sendReceipts(password: String, customers: [Mailbox]) async throws {
    var configuration = SMTPClient.Configuration(host: "smtp.example.com")  // STARTTLS required, port 587
    configuration.credentials = .password(username: "app", password: password)
    // Trust a private CA as well as the system's roots (the host name is still verified).
    configuration.tls = .client(trustRoots: .systemAnd(pemFile: "/etc/ssl/private-ca.pem"))
    let client = try SMTPClient(configuration: configuration)

    // One message: the report has every recipient's outcome.
    let receipt = Message(from: try Mailbox("Billing <billing@example.com>"),
                          to: [try Mailbox("Ann <ann@example.org>")],
                          subject: "Your receipt", text: "Thank you for your order.")
    do {
        let report = try await client.send(receipt)
        for refused in report.failedRecipients {          // a partial acceptance is not an error
            print(refused.address, refused.status, refused.code ?? 0, refused.bounceClass ?? .other)
        }
    } catch let error as SMTPError {                      // thrown when no recipient was accepted
        print(error.kind, error.isTransient, error.code ?? 0)
    }

    // In bulk: a copy for each customer, reports as they finish; at most 1,000 held at once.
    let newsletter = Message(from: try Mailbox("News <news@example.com>"), subject: "December", text: "…")
    for try await report in try client.send(newsletter, toEach: customers) {
        if report.outcome != .accepted { print(report.envelope.recipients, report.outcome) }
    }
    await client.shutdown()                               // finishes what it holds, says QUIT
}
