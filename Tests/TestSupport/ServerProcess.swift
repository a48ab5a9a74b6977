import Foundation
import Reactor

/// The built `echo-server` (or another executable of this package) run as a
/// child process, for what only a separate process shows: exit codes, fd
/// counts under /proc, ulimits, signals.
public final class ServerProcess {
    public let process = Process()
    private let output = Pipe()
    private let errors = Pipe()
    public private(set) var listeningLine = ""
    private var unreadOutput = ""

    /// The directory holding this package's built products (next to the test bundle).
    public static var productsDirectory: URL {
        let executable = URL(fileURLWithPath: "/proc/self/exe").resolvingSymlinksInPath()
        var directory = URL(fileURLWithPath: CommandLine.arguments.first ?? executable.path).deletingLastPathComponent()
        for candidate in [directory, executable.deletingLastPathComponent()] {
            var url = candidate
            for _ in 0..<4 {
                if FileManager.default.fileExists(atPath: url.appendingPathComponent("echo-server").path) { return url }
                url = url.deletingLastPathComponent()
            }
        }
        directory = URL(fileURLWithPath: FileManager.default.currentDirectoryPath).appendingPathComponent(".build/debug")
        return directory
    }

    /// Starts `executable` with `arguments`; with `fileLimit`, under `ulimit -n`.
    public init(_ executable: String = "echo-server", arguments: [String], fileLimit: Int? = nil) throws {
        let path = Self.productsDirectory.appendingPathComponent(executable).path
        if let fileLimit {
            process.executableURL = URL(fileURLWithPath: "/bin/bash")
            process.arguments = ["-c", "ulimit -n \(fileLimit) && exec \"$0\" \"$@\"", path] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: path)
            process.arguments = arguments
        }
        process.standardOutput = output
        process.standardError = errors
        try process.run()
    }

    /// `echo-server` (or another server taking `--port`) started on a free
    /// loopback port with `arguments`, once it listens.
    public static func echoServer(
        _ arguments: [String] = [], fileLimit: Int? = nil, executable: String = "echo-server"
    ) throws -> (ServerProcess, UInt16) {
        let port = try unusedPort()
        let server = try ServerProcess(executable, arguments: ["--port", "\(port)"] + arguments, fileLimit: fileLimit)
        try server.waitUntilListening()
        return (server, port)
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }

    public var pid: Int32 { process.processIdentifier }

    /// Waits for the "listening on" line; throws with stderr if the process exits first.
    public func waitUntilListening() throws {
        listeningLine = try nextOutputLine()
    }

    /// Reads stdout up to the next whole line (which a child of the process,
    /// sharing its stdout, may print too); throws with stderr at EOF.
    public func nextOutputLine() throws -> String {
        while !unreadOutput.contains("\n") {
            let chunk = output.fileHandleForReading.availableData
            if chunk.isEmpty {
                throw TestFailure("stdout ended before a line; stderr: \(standardError())")
            }
            unreadOutput += String(decoding: chunk, as: UTF8.self)
        }
        let end = unreadOutput.firstIndex(of: "\n")!
        defer { unreadOutput = String(unreadOutput[unreadOutput.index(after: end)...]) }
        return String(unreadOutput[...end])
    }

    /// Waits for exit (at most `seconds`, then SIGKILL) and returns the status.
    @discardableResult
    public func waitForExit(seconds: Double = 20) -> Int32 {
        _ = eventually(within: seconds) { !process.isRunning }
        if process.isRunning { kill(pid, SIGKILL) }
        process.waitUntilExit()
        return process.terminationStatus
    }

    public func standardOutput() -> String {
        String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    }

    public func standardError() -> String {
        String(decoding: errors.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    }

    public func signal(_ number: Int32) { kill(pid, number) }

    /// Closes this side of the process's stderr pipe, as a log reader that went away.
    public func closeStandardError() { try? errors.fileHandleForReading.close() }

    /// File descriptors the process holds now.
    public var openFileCount: Int {
        ((try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd")) ?? []).count
    }

    /// User plus system CPU time so far, in seconds (/proc/PID/stat).
    public var cpuSeconds: Double {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return 0 }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        // After the command name: state is field 3; utime and stime are fields 14 and 15.
        let ticks = (Double(fields[11]) ?? 0) + (Double(fields[12]) ?? 0)
        return ticks / Double(sysconf(Int32(_SC_CLK_TCK)))
    }

    /// The share of one core the process uses over the next `seconds` (a
    /// measurement window: it waits, but synchronises nothing).
    public func cpuShare(overSeconds seconds: Double) -> Double {
        let cpuBefore = cpuSeconds
        let wallBefore = monotonicNanoseconds()
        usleep(UInt32(seconds * 1e6))
        return (cpuSeconds - cpuBefore) / (Double(monotonicNanoseconds() - wallBefore) / 1e9)
    }

    /// Resident set size in bytes (VmRSS).
    public var residentBytes: Int {
        guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmRSS:") }) else { return 0 }
        return (Int(line.split(separator: " ")[1]) ?? 0) * 1024
    }
}
