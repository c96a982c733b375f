import Foundation
import Testing

/// Every Swift example in the README that imports Sluice is a file in `README/` beside this
/// one, byte for byte, so the suite's build compiles exactly what a reader copies.
@Suite("README")
struct ReadmeSnippetTests {
    @Test func everySwiftExampleInTheReadmeIsCompiledHere() throws {
        let here = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        let root = here.deletingLastPathComponent().deletingLastPathComponent()
        let readme = try String(contentsOf: root.appendingPathComponent("README.md"), encoding: .utf8)
        let examples = readme.components(separatedBy: "```swift\n").dropFirst()
            .compactMap { $0.components(separatedBy: "```").first }
            .filter { $0.contains("import Sluice") }
        let directory = here.appendingPathComponent("README")
        let compiled = try FileManager.default.contentsOfDirectory(atPath: directory.path)
            .filter { $0.hasSuffix(".swift") }
            .map { try String(contentsOf: directory.appendingPathComponent($0), encoding: .utf8) }
        #expect(!examples.isEmpty)
        for example in examples {
            #expect(compiled.contains(example), "not compiled by the tests; copy it into README/:\n\(example)")
        }
        for file in compiled {
            #expect(examples.contains(file), "README/ holds an example the README no longer shows:\n\(file)")
        }
    }
}
