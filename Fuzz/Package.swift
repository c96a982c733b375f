// swift-tools-version: 6.1
//
// libFuzzer targets for Sluice's parsers and state machines, a package of their own so that
// the main build never links libFuzzer. Build and run them with Fuzz/run.sh:
//
//   bash Fuzz/run.sh all 600          # every target for 10 minutes each
//   bash Fuzz/run.sh FuzzReplyParser 60
//
import PackageDescription

let package = Package(
    name: "sluice-fuzz",
    platforms: [.macOS(.v15)],
    dependencies: [.package(name: "sluice", path: "..")],
    targets: [
        .target(name: "CLibFuzzer", path: "Targets/CLibFuzzer"),
        .target(name: "FuzzSupport", dependencies: ["CLibFuzzer"], path: "Targets/FuzzSupport",
                swiftSettings: [.swiftLanguageMode(.v6)]),
        fuzzer("FuzzReplyParser", ["SluiceCore"]),
        fuzzer("FuzzServerCommands", ["SluiceCore", "SluiceSink"]),
        fuzzer("FuzzAddresses", ["SluiceCore", "SluiceMIME"]),
        fuzzer("FuzzRawMessage", ["SluiceMIME"]),
        fuzzer("FuzzClientStateMachine", ["SluiceCore"]),
    ]
)

/// A fuzz target in Targets/NAME: a `LLVMFuzzerTestOneInput` over these products.
func fuzzer(_ name: String, _ products: [String]) -> Target {
    .executableTarget(
        name: name,
        dependencies: ["FuzzSupport"] + products.map { .product(name: $0, package: "sluice") },
        path: "Targets/\(name)",
        swiftSettings: [.swiftLanguageMode(.v6), .unsafeFlags(["-parse-as-library"])]
    )
}
