import Foundation
import Reactor
import TestSupport
import Testing
@testable import DummyClient

/// The dummy-client binary against in-process Reactor servers on 127.0.0.1.
/// Runs are bounded by their flags (and a watchdog); nothing asserts speed.
@Suite struct DummyClientTests {
    @Test func pingRunsRoundsAndVerifies() throws {
        let result = try withServer(loops: 1) { server in
            let port = server.port
            return try runProgram("dummy-client", ["ping", "--port", "\(port)", "--rounds", "3", "--interval", "0"])
        }
        #expect(result.status == 0, "\(result.transcript)")
        let lines = result.standardOutput.split(separator: "\n")
        for round in 1...3 {
            #expect(lines.contains { $0.hasPrefix("round \(round): sent 1000 B, echoed 1000 B in ") && $0.hasSuffix(" us") },
                    "\(result.transcript)")
        }
        #expect(result.standardOutput.contains("3 rounds, 3000 B sent, 3000 B echoed, all verified"), "\(result.transcript)")
    }

    @Test func pingIsTheDefaultCommand() throws {
        let result = try withServer(loops: 1) { server in
            let port = server.port
            return try runProgram("dummy-client", ["--port", "\(port)", "--rounds", "2", "--interval", "0", "--size", "11", "--burst", "1"])
        }
        #expect(result.status == 0, "\(result.transcript)")
        #expect(result.standardOutput.contains("round 2: sent 11 B, echoed 11 B in "), "\(result.transcript)")
    }

    @Test func floodWithHundredConnectionsVerifiesEverything() throws {
        let result = try withServer(loops: 1) { server in
            let port = server.port
            return try runProgram("dummy-client", [
                "flood", "--port", "\(port)", "--connections", "100", "--duration", "1", "--warmup", "0.3",
                "--json", "--quiet",
            ])
        }
        #expect(result.status == 0, "\(result.transcript)")
        let report = try #require(
            try JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [String: Any],
            "\(result.transcript)")
        for field in ["mode", "host", "port", "connections", "threads", "size", "burst", "duration_s", "rounds",
                      "messages", "bytes_sent", "bytes_echoed", "msgs_per_sec", "mib_per_sec", "latency_us",
                      "connect_us", "errors", "client_cpu_s"] {
            #expect(report[field] != nil, "missing \(field): \(result.transcript)")
        }
        #expect(report["mode"] as? String == "closed")
        #expect(report["host"] as? String == "127.0.0.1")
        #expect(report["connections"] as? Int == 100)
        #expect(report["size"] as? Int == 100)
        #expect(report["burst"] as? Int == 10)
        let rounds = try #require(report["rounds"] as? Int)
        let messages = try #require(report["messages"] as? Int)
        #expect(rounds > 0)
        #expect(messages == rounds * 10)
        // Bytes count as they arrive in the window, rounds as they complete: they
        // differ by at most the rounds in flight at its two edges.
        let echoed = try #require(report["bytes_echoed"] as? Int)
        #expect(abs(echoed - messages * 100) <= 2 * 100 * 1000, "\(result.transcript)")
        let latency = try #require(report["latency_us"] as? [String: Double])
        for field in ["p50", "p90", "p99", "p999", "max", "mean"] { #expect(latency[field] != nil, "latency_us.\(field)") }
        let p50 = try #require(latency["p50"]), p99 = try #require(latency["p99"]), max = try #require(latency["max"])
        #expect(p50 > 0 && p50 <= p99 && p99 <= max)
        let connect = try #require(report["connect_us"] as? [String: Double])
        for field in ["p50", "p99", "max"] { #expect(connect[field] != nil, "connect_us.\(field)") }
        let errors = try #require(report["errors"] as? [String: Int])
        #expect(errors == ["mismatches": 0, "short_echoes": 0, "resets": 0, "connect_failures": 0])
        let cpu = try #require(report["client_cpu_s"] as? [String: Double])
        #expect(cpu["user"] != nil && cpu["system"] != nil)
    }

    @Test(arguments: [["--mode", "stream", "--window", "4096"], ["--rate", "200"], ["--coalesce", "--threads", "2"]])
    func otherFloodModesVerify(_ flags: [String]) throws {
        let (result, served) = try withServer(loops: 1) { server in
            let port = server.port
            let result = try runProgram("dummy-client", ["flood", "--port", "\(port)", "--connections", "10", "--duration", "0.5",
                                        "--warmup", "0.2", "--json", "--quiet"] + flags)
            return (result, server.statistics)
        }
        #expect(result.status == 0, "\(result.transcript)")
        let report = try #require(
            try JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [String: Any],
            "\(result.transcript)")
        #expect(try #require(report["rounds"] as? Int) > 0)
        let errors = try #require(report["errors"] as? [String: Int])
        #expect(errors == ["mismatches": 0, "short_echoes": 0, "resets": 0, "connect_failures": 0])
        // What the client verified as echoed, the server really sent (warm-up included on its side).
        let echoed = try #require(report["bytes_echoed"] as? Int)
        #expect(echoed > 0)
        #expect(UInt64(echoed) <= served.bytesSent, "client verified \(echoed) B, server sent \(served.bytesSent) B")
    }

    @Test func pingCatchesAFlippedByte() throws {
        let result = try withServer(loops: 1, handler: { _ in CorruptingEchoHandler(flipAt: 1_517) }) { server in
            let port = server.port
            return try runProgram("dummy-client", ["ping", "--port", "\(port)", "--rounds", "3", "--interval", "0"])
        }
        #expect(result.status == 1, "\(result.transcript)")
        #expect(result.standardOutput.contains("round 2: sent 1000 B, echoed 1000 B in "), "\(result.transcript)")
        #expect(result.standardOutput.contains("MISMATCH"), "\(result.transcript)")
        #expect(result.standardError.contains("echoed byte 1517"), "\(result.transcript)")
    }

    @Test func floodCountsMismatches() throws {
        let result = try withServer(loops: 1, handler: { _ in CorruptingEchoHandler(flipAt: 12_345) }) { server in
            let port = server.port
            return try runProgram("dummy-client", ["flood", "--port", "\(port)", "--connections", "4", "--duration", "0.5",
                                        "--warmup", "0", "--json", "--quiet"])
        }
        #expect(result.status == 1, "\(result.transcript)")
        let report = try #require(
            try JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [String: Any],
            "\(result.transcript)")
        let errors = try #require(report["errors"] as? [String: Int])
        #expect((errors["mismatches"] ?? 0) > 0, "\(result.transcript)")
    }

    @Test func connectionRefusedSaysSoAndFails() throws {
        try withRefusingPort { port in
            let ping = try runProgram("dummy-client", ["ping", "--port", "\(port)", "--rounds", "1"])
            #expect(ping.status == 1, "\(ping.transcript)")
            #expect(ping.standardError.contains("connect 127.0.0.1:\(port): Connection refused"), "\(ping.transcript)")

            let flood = try runProgram("dummy-client", ["flood", "--port", "\(port)", "--connections", "3",
                                                    "--duration", "5", "--json", "--quiet"])
            #expect(flood.status == 1, "\(flood.transcript)")
            #expect(flood.standardError.contains("connect 127.0.0.1:\(port): Connection refused"), "\(flood.transcript)")
            let report = try #require(
                try JSONSerialization.jsonObject(with: Data(flood.standardOutput.utf8)) as? [String: Any],
                "\(flood.transcript)")
            #expect((report["errors"] as? [String: Int])?["connect_failures"] == 3, "\(flood.transcript)")
        }
    }

    @Test(arguments: [
        (["flood", "--connections", "0"], "--connections must be in 1...100000"),
        (["flood", "--connections", "100001"], "--connections must be in 1...100000"),
        (["--port", "70000"], "--port must be in 1...65535"),
        (["flood", "--size", "0"], "--size must be in 1...1048576"),
        (["flood", "--threads", "0"], "--threads must be in 1...256"),
        (["flood", "--mode", "open"], "--mode open needs --rate"),
        (["flood", "--window", "100"], "--window applies to --mode stream only"),
        (["ping", "--rounds", "0"], "--rounds must be in 1...1000000000"),
        (["flood", "--bogus"], "--bogus"),
        (["flood", "--rounds-per-connection", "0"], "--rounds-per-connection must be in 1...1000000000"),
        (["flood", "--source-address", "::1"], "--source-address ::1: not of the server's family"),
        (["flood", "--source-address", "192.0.2.1"], "--source-address 192.0.2.1: not an address of this host"),
        (["room", "--source-address", "::1"], "--source-address ::1: not of the server's family"),
    ])
    func badFlagsExit64NamingTheFlag(_ arguments: [String], _ message: String) throws {
        let result = try runProgram("dummy-client", arguments)
        #expect(result.status == 64, "\(result.transcript)")
        #expect(result.standardError.contains(message), "\(result.transcript)")
    }
}

/// The pure parts: the pattern every byte is checked against, and the number formats.
@Suite struct PatternAndFormatTests {
    @Test func floodPatternDiffersPerConnectionAndRound() {
        let pattern = Pattern.flood()
        let first = Array(pattern.bytes(phase: pattern.phase(for: 0), offset: 0, count: 1000))
        let second = Array(pattern.bytes(phase: pattern.phase(for: 1), offset: 0, count: 1000))
        let nextRound = Array(pattern.bytes(phase: pattern.phase(for: 0), offset: 1000, count: 1000))
        #expect(first != second)
        #expect(first != nextRound)
        // Offsets wrap around the period seamlessly.
        let wrapped = Array(pattern.bytes(phase: 0, offset: UInt64(pattern.period) - 10, count: 20))
        #expect(Array(wrapped[10...]) == Array(pattern.bytes(phase: 0, offset: 0, count: 10)))
        first.withUnsafeBytes { bytes in
            #expect(pattern.matches(bytes, phase: pattern.phase(for: 0), offset: 0))
            #expect(!pattern.matches(bytes, phase: pattern.phase(for: 1), offset: 0))
        }
    }

    @Test func helloPatternIsTheCoursesMessage() {
        let pattern = Pattern.hello(size: 100)
        let message = Array(pattern.bytes(phase: 0, offset: 300, count: 100))
        #expect(Array(message[..<11]) == Array("Hello world".utf8))
        #expect(message[11...].allSatisfy { $0 == 0 })
        var corrupted = message
        corrupted[42] = 1
        corrupted.withUnsafeBytes { bytes in
            #expect(pattern.firstMismatch(in: bytes, phase: 0, offset: 300)?.index == 42)
        }
    }

    @Test func numberFormats() {
        #expect(Format.fixed(5.006, 2) == "5.01")
        #expect(Format.fixed(0.04, 1) == "0.0")
        #expect(Format.fixed(-1.25, 1) == "-1.3" || Format.fixed(-1.25, 1) == "-1.2")
        #expect(Format.fixed(12, 0) == "12")
        #expect(Format.grouped(1_234_567) == "1,234,567")
        #expect(Format.grouped(999) == "999")
        #expect(Format.microseconds(84_400) == "84")
        #expect(Format.microseconds(7_450) == "7.5" || Format.microseconds(7_450) == "7.4")
        #expect(Format.jsonString("a\"b\\c") == "\"a\\\"b\\\\c\"")
    }
}

/// Someone else's echo server: Python's asyncio, when python3 is installed.
@Suite(.enabled(if: PythonEchoServer.isAvailable, "python3 not found"))
struct ForeignEchoServerTests {
    @Test func pingAndFloodAgainstAsyncioEcho() throws {
        let server = try PythonEchoServer()
        defer { server.stop() }
        let ping = try runProgram("dummy-client", ["ping", "--port", "\(server.port)", "--rounds", "3", "--interval", "0"])
        #expect(ping.status == 0, "\(ping.transcript)")
        #expect(ping.standardOutput.contains("3 rounds, 3000 B sent, 3000 B echoed, all verified"), "\(ping.transcript)")
        let flood = try runProgram("dummy-client", ["flood", "--port", "\(server.port)", "--connections", "20",
                                                "--duration", "0.5", "--warmup", "0.2", "--quiet"])
        #expect(flood.status == 0, "\(flood.transcript)")
        #expect(flood.standardOutput.contains("0 mismatches, 0 short echoes, 0 resets, 0 connect failures"), "\(flood.transcript)")
    }
}

/// `python3` running an asyncio echo server on an ephemeral loopback port.
final class PythonEchoServer {
    static let script = """
        import asyncio
        async def echo(reader, writer):
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except ConnectionError:
                pass
            finally:
                writer.close()
        async def main():
            server = await asyncio.start_server(echo, "127.0.0.1", 0)
            print(server.sockets[0].getsockname()[1], flush=True)
            async with server:
                await server.serve_forever()
        asyncio.run(main())
        """

    static let executable = ["/usr/bin/python3", "/usr/local/bin/python3"].first {
        FileManager.default.isExecutableFile(atPath: $0)
    } ?? ProcessInfo.processInfo.environment["PATH"].flatMap { path in
        path.split(separator: ":").map { "\($0)/python3" }.first { FileManager.default.isExecutableFile(atPath: $0) }
    }

    static var isAvailable: Bool { executable != nil }

    struct Failed: Error, CustomStringConvertible { let description: String }

    let process = Process()
    let port: UInt16

    init() throws {
        guard let executable = Self.executable else { throw Failed(description: "python3 not found") }
        let output = Pipe()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = ["-c", Self.script]
        process.standardOutput = output
        process.standardInput = FileHandle.nullDevice
        try process.run()
        // The first line is the port; EOF (python failed) ends the read too.
        var line = Data()
        while true {
            let byte = output.fileHandleForReading.readData(ofLength: 1)
            if byte.isEmpty || byte == Data("\n".utf8) { break }
            line.append(byte)
        }
        guard let port = UInt16(String(decoding: line, as: UTF8.self)) else {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
            throw Failed(description: "python3 echo server did not start: \(String(decoding: line, as: UTF8.self))")
        }
        self.port = port
    }

    func stop() {
        // SIGKILL, not SIGTERM: the child inherits this process's signal mask,
        // and a server under test elsewhere in the process may block SIGTERM.
        kill(process.processIdentifier, SIGKILL) // only the child this test started
        process.waitUntilExit()
    }
}
