import FuzzSupport
import SluiceCore
import SluiceMIME

/// Arbitrary text as an envelope address, a mailbox and a mailbox list: whatever is accepted
/// encodes to a MAIL and an RCPT command of exactly one line, with no control character.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> Int32 {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    var addresses: [EnvelopeAddress] = []
    if let address = try? EnvelopeAddress(text) { addresses.append(address) }
    if let mailbox = try? Mailbox(text) {
        addresses.append(mailbox.address)
        if let ascii = mailbox.asciiAddress { addresses.append(ascii) }
        require(mailbox.name.map { !$0.utf8.contains(13) && !$0.utf8.contains(10) } ?? true, "CR or LF in a parsed display name")
    }
    if let list = try? Mailbox.list(text) { addresses += list.map(\.address) }
    for address in addresses {
        for command: SMTPCommand in [.mail(from: address, MailParameters()), .recipient(address, RecipientParameters())] {
            var bytes: [UInt8] = []
            command.encode(into: &bytes)
            require(bytes.suffix(2) == [13, 10], "a header line that does not end in CRLF")
            require(!bytes.dropLast(2).contains { $0 < 0x20 || $0 == 0x7F }, "a control character on the wire")
        }
    }
    return 0
}

@_cdecl("FuzzAddresses_main")
func main(_ argc: Int32, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> Int32 {
    runFuzzer(argc, argv) { data, size in data.map { fuzz($0, size) } ?? 0 }
}
