/// A piece of what the client writes: command bytes, or a message's prepared content.
public enum ClientOutput: Hashable, Sendable {
    /// Command lines (or a lone terminator).
    case bytes([UInt8])
    /// The transaction's content, dot-stuffed with its terminator (after 354).
    case data(transactionID: Int)
    /// The transaction's content, CRLF-normalised (after `BDAT n LAST`).
    case chunk(transactionID: Int)
}

/// What one event of a client machine produces, gathered as it goes: the bytes to write and
/// the actions to report. ``ClientStateMachine`` owns it and lends it to its sub-machines.
struct ClientEffects: Sendable {
    var output = OutputBuffer()
    var actions: [ClientStateMachine.Action] = []
    /// Transactions settled during this event, as indices into `actions`, and whether their
    /// content was handed to the connection: if the event then ends in a protocol error,
    /// their replies may have been paired with the wrong commands and they are settled again.
    var settledThisEvent: [(action: Int, contentSent: Bool)] = []
}

/// What the machine has to write in this event: content pieces, and the command bytes after
/// the last of them, gathered in place.
///
/// ``take()`` hands the pieces over (in a `.write` action) and the buffers are emptied only
/// when the next event writes: by then the caller has carried the action out and dropped it,
/// so the storage is unique again and is kept. Emptying them at once, while the action still
/// shared them, would allocate two new buffers per event (two events per message). Were a
/// copy still alive, emptying would simply allocate, as value semantics say.
struct OutputBuffer: Sendable {
    private var pieces: [ClientOutput] = []
    /// Command bytes written after the last entry of `pieces`.
    private var bytes: [UInt8] = []
    /// `pieces` (and `bytes`, if not empty) went out in the last ``take()``.
    private var handedOver = false
    /// The last of `pieces` is `bytes` itself, added by ``take()``.
    private var bytesArePiece = false
    /// Command buffers sealed into earlier pieces, emptied once those went out: a content
    /// piece seals the commands before it, and taking a kept buffer for the commands after
    /// it costs no allocation (a new one did, for every message).
    private var spareBuffers: [[UInt8]] = []

    mutating func append(_ command: SMTPCommand) {
        reclaim()
        if bytes.capacity == 0 { bytes.reserveCapacity(256) }  // a MAIL, its RCPTs and DATA: about 100 bytes
        command.encode(into: &bytes)
    }

    /// A lone terminator (a 354 that came with no recipient accepted).
    mutating func appendTerminator() {
        reclaim()
        bytes += [UInt8(ascii: "."), 13, 10]
    }

    /// A piece that is not command bytes, after the commands gathered so far.
    mutating func append(_ piece: ClientOutput) {
        reclaim()
        sealBytes()
        appendPiece(piece)
    }

    /// Everything written since the last take, or nil if nothing was.
    mutating func take() -> [ClientOutput]? {
        reclaim()
        // `bytes` is not emptied here: the piece shares its storage until reclaimed.
        if !bytes.isEmpty {
            appendPiece(.bytes(bytes))
            bytesArePiece = true
        }
        guard !pieces.isEmpty else { return nil }
        handedOver = true
        return pieces
    }

    private mutating func reclaim() {
        guard handedOver else { return }
        handedOver = false
        if bytesArePiece {
            pieces.removeLast()
            bytesArePiece = false
        }
        let firstNew = spareBuffers.count
        for case .bytes(let sealed) in pieces { spareBuffers.append(sealed) }
        pieces.removeAll(keepingCapacity: true)
        // Unique again now that the pieces are gone, so they keep their storage.
        for index in firstNew..<spareBuffers.count { spareBuffers[index].removeAll(keepingCapacity: true) }
        bytes.removeAll(keepingCapacity: true)
    }

    private mutating func sealBytes() {
        guard !bytes.isEmpty else { return }
        appendPiece(.bytes(bytes))
        bytes = spareBuffers.popLast() ?? []
    }

    private mutating func appendPiece(_ piece: ClientOutput) {
        if pieces.capacity == 0 { pieces.reserveCapacity(4) }  // one allocation, not one per doubling
        pieces.append(piece)
    }
}
