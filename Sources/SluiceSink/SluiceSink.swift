// SluiceSink: the SMTP sink server (accept, discard or store, fault injection), built on
// SluiceCore's server state machine and SluiceTransport. Filled by the sink issue.
