// SluiceCore: the SMTP protocol as pure Swift — replies, commands, capabilities, status codes,
// SASL, and the client and server state machines. No sockets, threads, clock or C.
// Filled by the protocol-core issue; nothing here yet claims to speak SMTP.
