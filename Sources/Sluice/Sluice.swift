// Sluice: the public face — SMTPClient, its configuration, the pool, retries, rate limits,
// delivery reports and errors. It re-exports what a user needs from the layers below:
// addresses, replies and status codes (SluiceCore), messages (SluiceMIME), and event loops
// and TLS settings (SluiceTransport).
@_exported public import SluiceCore
@_exported public import SluiceMIME
@_exported public import SluiceTransport
