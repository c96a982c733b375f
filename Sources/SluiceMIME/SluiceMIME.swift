// SluiceMIME: RFC 5322 / MIME messages, encoded once into bytes ready to send many times.
// Filled by the messages issue; nothing here yet claims to build a message.
