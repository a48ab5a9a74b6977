import Foundation
import Reactor

/// Runs the built `dummy-client` binary, which `swift test` builds next to the
/// test bundle (.build/debug), and collects its exit status and output.
enum DummyClientProcess {
    struct Result {
        var status: Int32
        var standardOutput: String
        var standardError: String
        /// Everything printed, for failure messages.
        var transcript: String { "exit \(status)\n--- stdout\n\(standardOutput)\n--- stderr\n\(standardError)" }
    }

    struct Missing: Error, CustomStringConvertible {
        let path: String
        var description: String { "no dummy-client binary at \(path): build the product first (swift build)" }
    }

    /// The products directory: where the running test binary lives.
    static var binary: String {
        let executable = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
            ?? CommandLine.arguments[0]
        var directory = URL(fileURLWithPath: executable).deletingLastPathComponent()
        // On some layouts the test binary sits inside a bundle directory.
        while directory.path != "/", !FileManager.default.fileExists(atPath: directory.appendingPathComponent("dummy-client").path) {
            guard directory.pathExtension == "xctest" || directory.lastPathComponent == "Contents"
                    || directory.lastPathComponent == "MacOS" else { break }
            directory = directory.deletingLastPathComponent()
        }
        return directory.appendingPathComponent("dummy-client").path
    }

    /// Runs `dummy-client arguments...`; kills it if it is still running after
    /// `timeout` seconds (so a hung run fails the test instead of hanging it).
    static func run(_ arguments: [String], timeout: Double = 60) throws -> Result {
        let path = binary
        guard FileManager.default.isExecutableFile(atPath: path) else { throw Missing(path: path) }
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("dummy-client-test-\(getpid())-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        // Files, not pipes: nothing can block on a full pipe.
        let outputURL = directory.appendingPathComponent("stdout")
        let errorURL = directory.appendingPathComponent("stderr")
        FileManager.default.createFile(atPath: outputURL.path, contents: nil)
        FileManager.default.createFile(atPath: errorURL.path, contents: nil)
        let output = try FileHandle(forWritingTo: outputURL)
        let error = try FileHandle(forWritingTo: errorURL)

        let process = Process()
        process.executableURL = URL(fileURLWithPath: path)
        process.arguments = arguments
        process.standardOutput = output
        process.standardError = error
        process.standardInput = FileHandle.nullDevice
        try process.run()
        let pid = process.processIdentifier
        let watchdog = DispatchWorkItem {
            kill(pid, SIGKILL) // only the child this test started
        }
        DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: watchdog)
        process.waitUntilExit()
        watchdog.cancel()
        try output.close()
        try error.close()
        return Result(
            status: process.terminationStatus,
            standardOutput: (try? String(contentsOf: outputURL, encoding: .utf8)) ?? "",
            standardError: (try? String(contentsOf: errorURL, encoding: .utf8)) ?? "")
    }
}

/// A Reactor server on an ephemeral loopback port for the length of `body`.
func withEchoServer<Result>(
    handler: @escaping @Sendable (EventLoop) -> any ConnectionHandler = { _ in EchoHandler() },
    _ body: (UInt16) throws -> Result
) throws -> Result {
    var configuration = Server.Configuration()
    configuration.port = 0
    configuration.loops = 1
    let server = try Server(configuration: configuration, makeHandler: handler)
    try server.start()
    defer {
        server.shutdown(gracePeriod: .seconds(2))
        server.wait()
    }
    return try body(server.localAddress.port)
}

/// Echoes everything, except that the byte at stream offset `flipAt` of each
/// connection comes back with its low bit flipped.
final class CorruptingEchoHandler: ConnectionHandler {
    private let flipAt: Int
    private var seen = 0

    init(flipAt: Int) { self.flipAt = flipAt }

    func connection(_ connection: Connection, received bytes: UnsafeRawBufferPointer) {
        let range = seen..<(seen + bytes.count)
        seen += bytes.count
        guard range.contains(flipAt) else { return connection.write(bytes) }
        var copy = Array(bytes)
        copy[flipAt - range.lowerBound] ^= 0x01
        connection.write(copy)
    }
}

/// A loopback port where nothing listens, reserved while `body` runs: a socket
/// bound to it but not listening, so a connect is refused and no other test
/// can take the port meanwhile.
func withRefusingPort<Result>(_ body: (UInt16) throws -> Result) throws -> Result {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw SystemError("socket") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
    }
    guard bound == 0 else { throw SystemError("bind") }
    let named = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
    }
    guard named == 0 else { throw SystemError("getsockname") }
    return try body(UInt16(bigEndian: address.sin_port))
}
