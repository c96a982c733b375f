import Testing
@testable import SluiceTransport
import SluiceTestSupport

/// How a write's pieces become TLS records: two sessions joined in memory, the client's
/// ciphertext read record by record.
@Suite("TLS records")
struct TLSRecordTests {
    /// A client and a server session with the handshake done and every byte it wrote taken.
    private static func connectedSessions() throws -> (client: TLSSession, server: TLSSession) {
        let certificates = try TestCertificates.shared()
        let server = try TLSSession(
            context: TLSContext(.server(certificateChainFile: certificates.good.certificate,
                                        privateKeyFile: certificates.good.key)),
            serverName: nil)
        let client = try TLSSession(
            context: TLSContext(.client(trustRoots: .pemFile(certificates.caFile))), serverName: "localhost")
        var clientDone = false, serverDone = false
        for _ in 0..<10 where !(clientDone && serverDone) {
            clientDone = try client.handshake()
            if let bytes = client.takeCiphertext() { server.receive(bytes.bytes) }
            serverDone = try server.handshake()
            if let bytes = server.takeCiphertext() { client.receive(bytes.bytes) }
        }
        #expect(clientDone && serverDone)
        // The server's session tickets, then nothing left in either direction.
        let sink = UnsafeMutableRawBufferPointer.allocate(byteCount: 1024, alignment: 1)
        defer { sink.deallocate() }
        _ = try client.read(into: sink)
        _ = client.takeCiphertext()
        return (client, server)
    }

    /// The plaintext length of each record in `ciphertext` (a 5-byte header, then the record).
    private static func recordLengths(_ ciphertext: [UInt8]) -> [Int] {
        var lengths: [Int] = []
        var offset = 0
        while offset + 5 <= ciphertext.count {
            let length = Int(ciphertext[offset + 3]) << 8 | Int(ciphertext[offset + 4])
            // TLS 1.3 AES-GCM: the content type's byte and a 16-byte tag.
            lengths.append(length - 17)
            offset += 5 + length
        }
        #expect(offset == ciphertext.count, "the ciphertext ends on a record's end")
        return lengths
    }

    /// Writes `pieces` through the client and returns its records' plaintext lengths, having
    /// checked that the server reads back exactly what was written.
    private static func records(for pieces: [[UInt8]], sharedEvery: Int = 2) throws -> [Int] {
        let (client, server) = try connectedSessions()
        // Alternate shared chunks and runs of batched bytes, as a connection's flush does.
        var writePieces: [WritePiece] = []
        var batched: [UInt8] = []
        for (index, piece) in pieces.enumerated() {
            if index % sharedEvery == 0 {
                writePieces.append(.shared(piece.withUnsafeBytes { SharedBytes(copying: $0) }))
            } else {
                batched += piece
                writePieces.append(.batched(upTo: batched.count))
            }
        }
        let staging = UnsafeMutableRawBufferPointer.allocate(byteCount: 16_384, alignment: 16)
        defer { staging.deallocate() }
        let batchedBytes = UnsafeMutableRawBufferPointer.allocate(byteCount: batched.count, alignment: 1)
        defer { batchedBytes.deallocate() }
        batchedBytes.copyBytes(from: batched)
        try client.write(writePieces, batched: UnsafeRawBufferPointer(batchedBytes), staging: staging)
        let ciphertext = try #require(client.takeCiphertext())
        server.receive(ciphertext.bytes)
        var received: [UInt8] = []
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 20_000, alignment: 1)
        defer { buffer.deallocate() }
        while case .bytes(let count) = try server.read(into: buffer) {
            received += buffer[..<count]
        }
        #expect(received == pieces.flatMap { $0 }, "the server reads what was written, in order")
        return recordLengths(Array(ciphertext.bytes))
    }

    private static func piece(_ count: Int, _ seed: Int) -> [UInt8] {
        (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ seed) }
    }

    @Test func aFlushOfSmallPiecesIsOneRecord() throws {
        // Forty commands and contents of a flush: one record, not forty.
        let pieces = (0..<40).map { Self.piece(100, $0) }
        #expect(try Self.records(for: pieces) == [4_000])
    }

    @Test func smallPiecesFillWholeRecordsBeforeTheNext() throws {
        let pieces = (0..<20).map { Self.piece(1_000, $0) }
        #expect(try Self.records(for: pieces) == [16_384, 3_616])
    }

    @Test func aLargePieceIsSealedWhereItLiesAfterWhatWasGathered() throws {
        let pieces = [Self.piece(100, 1), Self.piece(40_000, 2), Self.piece(100, 3), Self.piece(50, 4)]
        #expect(try Self.records(for: pieces, sharedEvery: 1) == [100, 16_384, 16_384, 7_232, 150])
        #expect(try Self.records(for: pieces, sharedEvery: 3) == [100, 16_384, 16_384, 7_232, 150])
    }
}
