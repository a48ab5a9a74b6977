// swift-tools-version: 6.1
import PackageDescription

// libFuzzer targets, in a package of their own: built only by `make fuzz`
// (with -sanitize=fuzzer), never by the main build.
let package = Package(
    name: "Fuzz",
    dependencies: [.package(name: "swift-reactor", path: "..")],
    targets: [
        .executableTarget(
            name: "ProxyHeaderFuzzer",
            dependencies: [.product(name: "Reactor", package: "swift-reactor")],
            // No top-level code: libFuzzer's main drives LLVMFuzzerTestOneInput.
            swiftSettings: [.unsafeFlags(["-parse-as-library"])]
        ),
    ],
    swiftLanguageModes: [.v6]
)
