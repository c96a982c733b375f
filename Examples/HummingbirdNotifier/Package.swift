// swift-tools-version: 6.1
//
// An example of Sluice in a Swift server: a Hummingbird 2 app that shares one SMTPClient
// through a swift-service-lifecycle ServiceGroup and sends mail on `POST /send`. A package
// of its own, so that building Sluice never builds Hummingbird and SwiftNIO.
import PackageDescription

let package = Package(
    name: "hummingbird-notifier",
    dependencies: [
        .package(name: "sluice", path: "../.."),  // as a user names a checkout of Sluice
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        .executableTarget(
            name: "Notifier",
            dependencies: [
                .product(name: "Sluice", package: "sluice"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: [.swiftLanguageMode(.v6)]
        ),
    ]
)
