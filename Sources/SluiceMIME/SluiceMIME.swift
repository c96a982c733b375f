// SluiceMIME: RFC 5322 / MIME messages, encoded once into bytes ready to send many times.
// Message builds one (Mailbox, Attachment, RFC 2047/2231 headers, QP/base64 bodies);
// RawMessage takes an existing one, checked.
import Foundation

/// The bytes of the file at `path`, or a ``MessageError`` that says why not (the `sluice`
/// command reads its text and password files with it too).
package func readFile(_ path: String) throws(MessageError) -> [UInt8] {
    let file = try OpenFile(path)
    var bytes: [UInt8] = []
    bytes.reserveCapacity(file.regularSize ?? 0)
    var chunk = [UInt8](repeating: 0, count: 64 * 1_024)
    while true {
        let count = try file.read(into: &chunk, at: 0)
        if count == 0 { return bytes }
        bytes.append(contentsOf: chunk[..<count])
    }
}

/// A file open for reading to its end, closed when this goes away; every failure is a
/// ``MessageError`` of kind `.unreadable` naming the path.
///
/// Plain POSIX calls rather than Foundation's readers: `Data(contentsOf:)` and
/// `FileManager.contents(atPath:)` leak a 4 KiB buffer each time they read an empty file
/// (swift-foundation in Swift 6.3), and an empty attachment or message file is ordinary input.
struct OpenFile: ~Copyable {
    let path: String
    private let descriptor: Int32

    init(_ path: String) throws(MessageError) {
        let descriptor = open(path, O_RDONLY | O_CLOEXEC)
        // Thrown before `self` exists, so `deinit` never closes a descriptor that is not one.
        guard descriptor >= 0 else { throw Self.error(path) }
        self.path = path
        self.descriptor = descriptor
    }

    deinit { close(descriptor) }

    /// The size of a regular file (nil for a pipe, a device or anything else whose size says
    /// nothing about how much there is to read); only a hint for reserving capacity.
    var regularSize: Int? {
        var info = stat()
        guard fstat(descriptor, &info) == 0, (info.st_mode & S_IFMT) == S_IFREG else { return nil }
        return Int(info.st_size)
    }

    /// Reads into `buffer` from index `offset` up to its end; the count read, 0 at the end of
    /// the file.
    func read(into buffer: inout [UInt8], at offset: Int) throws(MessageError) -> Int {
        precondition(offset < buffer.count, "no room to read into")
        while true {
            let count = buffer.withUnsafeMutableBytes { bytes in
                Glibc.read(descriptor, bytes.baseAddress! + offset, bytes.count - offset)
            }
            if count >= 0 { return count }
            if errno != EINTR { throw Self.error(path) }
        }
    }

    private static func error(_ path: String) -> MessageError {
        MessageError(.unreadable, line: 0, detail: "\(path): \(String(cString: strerror(errno)))")
    }
}
