import Foundation

/// What a finished run of one of this package's executables printed.
public struct ProgramResult: Sendable {
    public var status: Int32
    public var standardOutput: String
    public var standardError: String
    /// Everything printed, for failure messages.
    public var transcript: String { "exit \(status)\n--- stdout\n\(standardOutput)\n--- stderr\n\(standardError)" }
}

/// Runs an executable of this package (built next to the test bundle) to
/// completion, with stdin from /dev/null; kills it if it still runs after
/// `timeout` seconds, so a hung run fails its test instead of hanging it.
/// Output goes to files, not pipes: nothing can block on a full pipe.
public func runProgram(_ executable: String, _ arguments: [String], timeout: Double = 60) throws -> ProgramResult {
    let path = ServerProcess.productsDirectory.appendingPathComponent(executable).path
    guard FileManager.default.isExecutableFile(atPath: path) else {
        throw TestFailure("no \(executable) at \(path): build the products first (swift build)")
    }
    let directory = FileManager.default.temporaryDirectory
        .appendingPathComponent("\(executable)-test-\(getpid())-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    let outputURL = directory.appendingPathComponent("stdout")
    let errorURL = directory.appendingPathComponent("stderr")
    _ = FileManager.default.createFile(atPath: outputURL.path, contents: nil)
    _ = FileManager.default.createFile(atPath: errorURL.path, contents: nil)
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
    let watchdog = DispatchWorkItem { kill(pid, SIGKILL) } // only the child started here
    DispatchQueue.global().asyncAfter(deadline: .now() + timeout, execute: watchdog)
    process.waitUntilExit()
    watchdog.cancel()
    try output.close()
    try error.close()
    return ProgramResult(
        status: process.terminationStatus,
        standardOutput: (try? String(contentsOf: outputURL, encoding: .utf8)) ?? "",
        standardError: (try? String(contentsOf: errorURL, encoding: .utf8)) ?? "")
}
