// swift-tools-version: 6.1
//
// Sluice — an event-driven, asynchronous SMTP engine for Swift on Linux (only: the C shims use
// Linux interfaces such as prctl and SOCK_NONBLOCK, so no other platform is declared).
// Layers (dependencies point down only) are described in Sources/Sluice/Sluice.docc/Architecture.md:
//
//   SluiceCLI ─┬─ SluiceOutbox ─ Sluice ─┬─ SluiceTransport ─┬─ CLibUV
//              │  (CSQLite, CLibPQ)      │                   └─ COpenSSL
//              ├─ SluiceSink ────────────┘  (and CScan, its vector scan of content)
//              └─ CZlib (HdrHistogram interval logs)
//                    Sluice ─ SluiceMIME ─ SluiceCore (pure Swift, no I/O; SluiceMIME
//                                          links GNU libidn2 for IDNA, through CIDN2)
//
// The benchmark suites live in Benchmarks/, a package of their own, so that
// building and testing Sluice does not build the benchmark harness.
import PackageDescription

let strict: [SwiftSetting] = [
    .swiftLanguageMode(.v6),
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
]

let serviceLifecycle: Target.Dependency = .product(
    name: "ServiceLifecycle", package: "swift-service-lifecycle", condition: .when(traits: ["ServiceLifecycleSupport"]))
let tracing: Target.Dependency = .product(
    name: "Tracing", package: "swift-distributed-tracing", condition: .when(traits: ["DistributedTracingSupport"]))

let package = Package(
    name: "sluice",
    products: [
        .library(name: "Sluice", targets: ["Sluice"]),
        .library(name: "SluiceCore", targets: ["SluiceCore"]),
        .library(name: "SluiceMIME", targets: ["SluiceMIME"]),
        .library(name: "SluiceTransport", targets: ["SluiceTransport"]),
        .library(name: "SluiceSink", targets: ["SluiceSink"]),
        .library(name: "SluiceOutbox", targets: ["SluiceOutbox"]),
        .executable(name: "sluice", targets: ["SluiceCLI"]),
    ],
    traits: [
        .trait(
            name: "ServiceLifecycleSupport",
            description: "SMTPClient, SMTPSink and OutboxWorker are swift-service-lifecycle Services"
        ),
        .trait(
            name: "DistributedTracingSupport",
            description: "Spans for each send, each attempt and each sink transaction (swift-distributed-tracing)"
        ),
        .default(enabledTraits: ["ServiceLifecycleSupport", "DistributedTracingSupport"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/x-sheep/swift-property-based", from: "2.0.1"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-distributed-tracing", from: "1.7.3"),
    ],
    targets: [
        // MARK: C bridges (system libraries; the only C this package touches)
        .systemLibrary(
            name: "CLibUV",
            pkgConfig: "libuv",
            providers: [.apt(["libuv1-dev"])]
        ),
        .systemLibrary(
            name: "COpenSSL",
            pkgConfig: "openssl",
            providers: [.apt(["libssl-dev"])]
        ),
        .systemLibrary(
            name: "CSQLite",
            pkgConfig: "sqlite3",
            providers: [.apt(["libsqlite3-dev"])]
        ),
        .systemLibrary(
            name: "CLibPQ",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
        ),
        .systemLibrary(
            name: "CZlib",
            pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"])]
        ),
        .systemLibrary(
            name: "CIDN2",
            pkgConfig: "libidn2",
            providers: [.apt(["libidn2-dev"])]
        ),

        // MARK: Layers
        .target(name: "SluiceCore", swiftSettings: strict),
        .target(name: "SluiceMIME", dependencies: ["SluiceCore", "CIDN2"], swiftSettings: strict),
        .target(
            name: "SluiceTransport",
            dependencies: [
                "SluiceCore",  // SASL's primitives are given to it from OpenSSL here
                "CLibUV",
                "COpenSSL",
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: strict
        ),
        .target(
            name: "Sluice",
            dependencies: [
                "SluiceCore",
                "SluiceMIME",
                "SluiceTransport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                serviceLifecycle,
                tracing,
            ],
            swiftSettings: strict
        ),
        .target(name: "CScan"),  // vector scans of message content
        .target(
            name: "SluiceSink",
            dependencies: ["SluiceCore", "SluiceTransport", "CScan", serviceLifecycle, tracing],
            swiftSettings: strict
        ),
        .target(
            name: "SluiceOutbox",
            dependencies: [
                "Sluice",
                "SluiceMIME",
                "SluiceTransport",
                "CSQLite",
                "CLibPQ",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                serviceLifecycle,
            ],
            swiftSettings: strict
        ),
        .executableTarget(
            name: "SluiceCLI",
            dependencies: [
                "Sluice",
                "SluiceOutbox",
                "SluiceMIME",
                "SluiceSink",
                "SluiceTransport",
                "CZlib",  // HdrHistogram's interval logs (--hdr-out, bench merge) are zlib-compressed
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                // `sluice worker` runs its client and worker in a ServiceGroup: the command
                // line needs the ServiceLifecycleSupport trait (a default one).
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            swiftSettings: strict
        ),

        // MARK: Tests
        // Helpers the test suites share (test handlers, certificates, peers, deadlines).
        .target(name: "CSpawn", path: "Tests/CSpawn"),  // glibc's posix_spawn extensions
        .target(
            name: "SluiceTestSupport",
            dependencies: ["SluiceCore", "SluiceTransport", "SluiceSink", "CSpawn"],
            path: "Tests/SluiceTestSupport",
            swiftSettings: strict
        ),
        .testTarget(
            name: "SluiceCoreTests",
            dependencies: [
                "SluiceCore",
                "SluiceTransport",  // OpenSSL's primitives for the SASL test vectors
                "SluiceSink",  // the server machine reads encoded commands back
                "SluiceTestSupport",  // the server harness, for client and server together
                .product(name: "PropertyBased", package: "swift-property-based"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "SluiceTransportTests",
            dependencies: ["SluiceTransport", "SluiceTestSupport"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "SluiceMIMETests",
            dependencies: [
                "SluiceMIME",
                "SluiceTestSupport",
                .product(name: "PropertyBased", package: "swift-property-based"),
            ],
            exclude: ["Support/read_messages.py", "Golden"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "SluiceTests",
            dependencies: [
                "Sluice",
                "SluiceCLI",  // the bench's pure parts (its schedules and draws), tested directly
                "SluiceSink",
                "SluiceTestSupport",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "ServiceLifecycleTestKit", package: "swift-service-lifecycle"),
                .product(name: "Tracing", package: "swift-distributed-tracing"),
                .product(name: "InMemoryTracing", package: "swift-distributed-tracing"),
            ],
            exclude: ["Support/verify_dkim.py"],
            swiftSettings: strict
        ),
        .testTarget(
            name: "SluiceOutboxTests",
            dependencies: [
                "SluiceOutbox", "Sluice", "SluiceSink", "SluiceTestSupport",
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ],
            swiftSettings: strict
        ),
        .testTarget(
            name: "SluiceSinkTests",
            dependencies: ["SluiceSink", "SluiceCore", "SluiceTransport", "SluiceTestSupport"],
            swiftSettings: strict
        ),
    ]
)
