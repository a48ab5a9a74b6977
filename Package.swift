// swift-tools-version: 6.1
import PackageDescription

let package = Package(
    name: "swift-reactor",
    products: [
        .library(name: "Reactor", targets: ["Reactor"]),
        // async/await over the Reactor (AsyncServer, AsyncConnection); no other dependency.
        .library(name: "ReactorAsync", targets: ["ReactorAsync"]),
        // A Server or AsyncServer as a swift-service-lifecycle Service.
        .library(name: "ReactorService", targets: ["ReactorService"]),
        // Loop counters as swift-metrics, and GET /metrics in Prometheus text.
        .library(name: "ReactorMetrics", targets: ["ReactorMetrics"]),
        // The room protocol and server, for the benchmarks and anyone embedding rooms.
        .library(name: "Rooms", targets: ["Rooms"]),
        .executable(name: "echo-server", targets: ["EchoServer"]),
        .executable(name: "dummy-client", targets: ["DummyClient"]),
        .executable(name: "room-server", targets: ["RoomServer"]),
        // The README's ServiceGroup example.
        .executable(name: "service-echo", targets: ["ServiceEcho"]),
    ],
    dependencies: [
        // Executables only: the Reactor library depends on nothing but CEpoll and the toolchain.
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
        // ReactorService only.
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        // ReactorMetrics only.
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        // `make docs` only: the DocC catalogs of Reactor and ReactorAsync.
        .package(url: "https://github.com/swiftlang/swift-docc-plugin", from: "1.5.0"),
        // Tests only: property-based checks of the framers at every split point.
        .package(url: "https://github.com/x-sheep/swift-property-based", from: "2.0.1"),
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
        .target(
            name: "ReactorAsync",
            dependencies: ["Reactor"],
            // Async functions run on their caller's executor (a loop): no
            // executor switch, and no lookup of the task's preference, per call.
            swiftSettings: [.enableUpcomingFeature("NonisolatedNonsendingByDefault")]
        ),
        .target(
            name: "ReactorService",
            dependencies: [
                "Reactor", "ReactorAsync",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .target(
            name: "ReactorMetrics",
            dependencies: [
                "Reactor",
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .executableTarget(
            name: "ServiceEcho",
            dependencies: [
                "Reactor", "ReactorAsync", "ReactorService",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // What the executables' command lines share: flags, checks, signals, the serve loop.
        .target(
            name: "CommandLineSupport",
            dependencies: [
                "Reactor", "ReactorMetrics",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "EchoServer",
            dependencies: [
                "Reactor",
                "ReactorAsync",
                "CommandLineSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The room protocol: packets (shared with dummy-client) and the server's rooms.
        .target(
            name: "Rooms",
            dependencies: ["Reactor"]
        ),
        .executableTarget(
            name: "RoomServer",
            dependencies: [
                "Reactor", "Rooms", "CommandLineSupport",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // Blocking loopback clients and subprocess helpers shared by the test targets.
        .target(
            name: "TestSupport",
            dependencies: ["Reactor", "Rooms"],
            path: "Tests/TestSupport"
        ),
        // zlib, for the HdrHistogram log files dummy-client writes and merges; no other target uses it.
        .systemLibrary(
            name: "CZlib",
            pkgConfig: "zlib",
            providers: [.apt(["zlib1g-dev"])]
        ),
        .executableTarget(
            name: "DummyClient",
            dependencies: [
                "Reactor",
                "Rooms",
                "CommandLineSupport",
                "CZlib",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ]
        ),
        .testTarget(
            name: "ReactorTests",
            dependencies: [
                "Reactor", "TestSupport",
                .product(name: "PropertyBased", package: "swift-property-based"),
            ]
        ),
        .testTarget(
            name: "ReactorAsyncTests",
            dependencies: ["Reactor", "ReactorAsync", "TestSupport"]
        ),
        .testTarget(
            name: "ReactorMetricsTests",
            dependencies: ["Reactor", "ReactorMetrics", "TestSupport"]
        ),
        .testTarget(
            name: "ReactorServiceTests",
            dependencies: [
                "Reactor", "ReactorService", "TestSupport",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .testTarget(
            name: "EchoServerTests",
            dependencies: ["Reactor", "TestSupport"]
        ),
        .testTarget(
            name: "RoomTests",
            dependencies: ["Reactor", "Rooms", "TestSupport"]
        ),
        .testTarget(
            name: "DummyClientTests",
            // Runs the built dummy-client binary (`swift test` builds every product
            // first) against in-process servers, and unit-tests its pure parts.
            dependencies: [
                "Reactor", "Rooms", "DummyClient", "TestSupport",
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "PropertyBased", package: "swift-property-based"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
