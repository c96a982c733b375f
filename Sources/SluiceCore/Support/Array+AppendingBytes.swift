extension [UInt8] {
    /// Appends `value` in decimal ASCII, without the string an interpolation would build
    /// (reply codes on the server's hot path, sizes in `MAIL` and `BDAT` on the client's).
    mutating func appendDecimal(_ value: Int) {
        precondition(value >= 0, "only codes, counts and sizes are written in decimal")
        if value >= 10 { appendDecimal(value / 10) }
        append(UInt8(ascii: "0") + UInt8(value % 10))
    }

    /// Appends a literal's bytes straight from the binary (appending a string's UTF-8 view
    /// goes through the string's storage, with a retain and a release per call). Commands
    /// here, header punctuation in SluiceMIME.
    package mutating func append(literal text: StaticString) {
        text.withUTF8Buffer { append(contentsOf: $0) }
    }
}
