// SluiceMIME: RFC 5322 / MIME messages, encoded once into bytes ready to send many times.
// Message builds one (Mailbox, Attachment, RFC 2047/2231 headers, QP/base64 bodies);
// RawMessage takes an existing one, checked.
import Foundation

/// The bytes of the file at `path`, or a ``MessageError`` that says why not.
func readFile(_ path: String) throws(MessageError) -> [UInt8] {
    do {
        return [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
    } catch {
        throw MessageError(.unreadable, line: 0, detail: "\(path): \(error.localizedDescription)")
    }
}
