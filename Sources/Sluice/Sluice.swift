// Sluice: the public face — SMTPClient, its configuration, the pool, retries, rate limits,
// delivery reports and errors. Filled by the client issue. Until then it re-exports the
// transport layer, which is complete.
@_exported public import SluiceTransport
