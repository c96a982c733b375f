extension [UInt8] {
    /// Appends `value` in decimal ASCII, without the string an interpolation would build.
    mutating func appendDecimal(_ value: Int) {
        precondition(value >= 0, "only counts and sizes are written in decimal")
        guard value >= 10 else {
            append(UInt8(ascii: "0") + UInt8(value))
            return
        }
        var digits = 0
        var rest = value
        while rest > 0 {
            digits += 1
            rest /= 10
        }
        let start = count
        append(contentsOf: repeatElement(UInt8(ascii: "0"), count: digits))
        rest = value
        for index in stride(from: start + digits - 1, through: start, by: -1) {
            self[index] = UInt8(ascii: "0") + UInt8(rest % 10)
            rest /= 10
        }
    }
}
