// swift-tools-version: 6.1
// Benchmarks for swift-reactor, kept in their own package so the main package's
// build and `make test` never compile package-benchmark. Run with `make bench`
// from the repository root (or `swift package benchmark` here).
import PackageDescription

let package = Package(
    name: "swift-reactor-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "swift-reactor", path: ".."),
        // MallocInterposer gives the malloc counters without jemalloc.
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "EchoFlood",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "Reactor", package: "swift-reactor"),
                .product(name: "ReactorAsync", package: "swift-reactor"),
            ],
            path: "Benchmarks/EchoFlood",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "Broadcast",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "Reactor", package: "swift-reactor"),
                .product(name: "Rooms", package: "swift-reactor"),
            ],
            path: "Benchmarks/Broadcast",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
        .executableTarget(
            name: "HotPath",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "Reactor", package: "swift-reactor"),
            ],
            path: "Benchmarks/HotPath",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
