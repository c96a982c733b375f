extension Array {
    /// Empties the array and keeps its storage. The busy paths clear arrays of one or two
    /// elements (or none) once per message; element by element from the end is a few
    /// instructions each, where `removeAll(keepingCapacity: true)` runs the general
    /// `replaceSubrange` even on an empty array (~1% of the client's time against smtp-sink,
    /// for the four arrays cleared per message).
    @inlinable
    package mutating func removeAllKeepingCapacity() {
        while !isEmpty { removeLast() }
    }
}

extension Array {
    /// `count` nils. `Array(repeating: nil, count:)` looks up the metadata of the element's
    /// Optional through the runtime's locked cache on every call (1.5% of the client's time
    /// against smtp-sink, for two such arrays per message); appending does not.
    @inlinable
    package init<Wrapped>(nils count: Int) where Element == Wrapped? {
        self.init()
        reserveCapacity(count)
        for _ in 0..<count { append(nil) }
    }
}
