import Testing
@testable import Sluice

@Suite("FewElements")
struct FewElementsTests {
    /// Every way the pool builds its actions — appends, literals, `+` and `+=` — gives the
    /// elements an Array would hold, in the same order, for lists of every length up to 6.
    @Test func keepsEveryElementInArrayOrder() {
        for left in 0...6 {
            for right in 0...6 {
                let first = Array(0..<left)
                let second = Array(100..<(100 + right))
                var built = FewElements<Int>()
                for element in first { built.append(element) }
                var other: FewElements<Int> = []
                for element in second { other.append(element) }

                #expect(Array(built) == first)
                #expect(built.isEmpty == first.isEmpty)
                #expect(Array(built + other) == first + second)
                var summed = built
                summed += other
                #expect(Array(summed) == first + second)
                #expect(Array(built) == first, "+= left the original alone")
            }
        }
        let literal: FewElements<String> = ["a", "b", "c"]
        #expect(Array(literal) == ["a", "b", "c"])
        #expect(Array(FewElements<String>()).isEmpty)
    }
}
