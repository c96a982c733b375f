extension StringProtocol {
    /// The text with every control character shown as an escape, for a terminal or a log
    /// line: C0 controls and DEL as `\x1b`, C1 controls (U+0080 to U+009F) as `\u009b`.
    ///
    /// Text from a peer (reply lines, banners) goes through this before anyone reads it, so
    /// an ESC, OSC, BEL, BS or CSI from a hostile server can never reach a terminal raw.
    public var controlCharactersEscaped: String {
        guard unicodeScalars.contains(where: \.isControlCharacter) else { return String(self) }
        var escaped = ""
        escaped.reserveCapacity(utf8.count + 8)
        for scalar in unicodeScalars {
            guard scalar.isControlCharacter else {
                escaped.unicodeScalars.append(scalar)
                continue
            }
            let hex = String(scalar.value, radix: 16)
            let padded = String(repeating: "0", count: Swift.max(0, 2 - hex.count)) + hex
            escaped += scalar.value < 0x80 ? "\\x\(padded)" : "\\u00\(padded)"
        }
        return escaped
    }
}

extension Unicode.Scalar {
    /// C0 controls, DEL and C1 controls.
    var isControlCharacter: Bool { value < 0x20 || (0x7F...0x9F).contains(value) }
}
