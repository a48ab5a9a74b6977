// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "swift-reactor",
    products: [
        .library(name: "Reactor", targets: ["Reactor"]),
        .executable(name: "echo-server", targets: ["EchoServer"]),
    ],
    dependencies: [
        // Executables only: the Reactor library depends on nothing but CEpoll and the toolchain.
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    ],
    targets: [
        .target(
            name: "CEpoll",
            cSettings: [.define("_GNU_SOURCE")]
        ),
        .target(
            name: "Reactor",
            dependencies: ["CEpoll"]
        ),
        .executableTarget(
            name: "EchoServer",
            dependencies: [
                "Reactor",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Blocking loopback clients and subprocess helpers shared by the test targets.
        .target(
            name: "TestSupport",
            dependencies: ["Reactor"],
            path: "Tests/TestSupport"
        ),
        .testTarget(
            name: "ReactorTests",
            dependencies: ["Reactor", "TestSupport"]
        ),
        .testTarget(
            name: "EchoServerTests",
            dependencies: ["Reactor", "TestSupport"]
        ),
    ],
    swiftLanguageModes: [.v6]
)
