// swift-tools-version: 6.1
//
// Sluice's benchmark suites, on ordo-one/benchmark. A package of its own so that building and
// testing Sluice never builds the benchmark harness. Run from the repository root:
//
//   swift package --package-path Benchmarks benchmark
//
import PackageDescription

let package = Package(
    name: "sluice-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "sluice", path: ".."),
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        suite("TransportBenchmarks", ["SluiceTransport"]),
        suite("CoreBenchmarks", ["SluiceCore", "SluiceSink", "SluiceTransport"]),
        suite("ClientBenchmarks", ["Sluice", "SluiceSink"]),
        suite("MIMEBenchmarks", ["SluiceMIME"]),
        suite("DKIMBenchmarks", ["Sluice"]),
        suite("OutboxBenchmarks", ["Sluice", "SluiceOutbox", "SluiceSink"]),
    ]
)

/// A benchmark suite in Benchmarks/NAME, using these products of the sluice package.
func suite(_ name: String, _ products: [String]) -> Target {
    .executableTarget(
        name: name,
        dependencies: [.product(name: "Benchmark", package: "benchmark")]
            + products.map { .product(name: $0, package: "sluice") },
        path: "Benchmarks/\(name)",
        swiftSettings: [.swiftLanguageMode(.v6)],
        plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
    )
}
