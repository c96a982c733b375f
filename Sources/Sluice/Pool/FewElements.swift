/// An ordered list that holds its first element inline and only the rest in an array.
///
/// The pool's actions and the client's effects for one message are nearly always none or
/// one (dispatch this job to that connection): held in an `Array`, each event allocated one
/// or two arrays for a single element. Order and every array operation the pool uses are kept.
struct FewElements<Element>: Sequence, ExpressibleByArrayLiteral {
    /// The first element; nil only while the list is empty.
    private var first: Element?
    /// Every element after the first.
    private var rest: [Element] = []

    init() {}

    init(arrayLiteral elements: Element...) {
        for element in elements { append(element) }
    }

    var isEmpty: Bool { first == nil }

    mutating func append(_ element: Element) {
        if first == nil {
            first = element
        } else {
            rest.append(element)
        }
    }

    mutating func append(contentsOf other: FewElements) {
        for element in other { append(element) }
    }

    static func + (lhs: FewElements, rhs: FewElements) -> FewElements {
        var result = lhs
        result.append(contentsOf: rhs)
        return result
    }

    static func += (lhs: inout FewElements, rhs: FewElements) {
        lhs.append(contentsOf: rhs)
    }

    func makeIterator() -> Iterator { Iterator(first: first, rest: rest.makeIterator()) }

    struct Iterator: IteratorProtocol {
        fileprivate var first: Element?
        fileprivate var rest: IndexingIterator<[Element]>

        mutating func next() -> Element? {
            if let element = first {
                first = nil
                return element
            }
            return rest.next()
        }
    }
}
