import Foundation
import Reactor
import TestSupport
import Testing

/// flood's --rounds-per-connection, --reconnect and --source-address, through
/// the dummy-client binary against in-process servers on loopback.
@Suite struct ConnectionChurnTests {
    /// One flood against a server made by `handler`; its exit status, JSON report and the server's statistics.
    func flood(_ flags: [String], handler: @escaping @Sendable (EventLoop) -> any ConnectionHandler = { _ in EchoHandler() })
        throws -> (result: ProgramResult, report: [String: Any], served: LoopStatistics.Snapshot) {
        let (result, served) = try withServer(loops: 1, handler: handler) { server in
            let result = try runProgram("dummy-client", ["flood", "--port", "\(server.port)", "--duration", "0.5",
                                                         "--warmup", "0", "--json", "--quiet"] + flags)
            return (result, server.statistics)
        }
        let report = try #require(
            try JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [String: Any],
            "\(result.transcript)")
        return (result, report, served)
    }

    func number(_ report: [String: Any], _ key: String) throws -> Int {
        try #require(report[key] as? Int, "no \(key) in \(report)")
    }

    @Test func roundsPerConnectionKeepsOpeningFreshConnections() throws {
        let (result, report, served) = try flood(["--connections", "5", "--rounds-per-connection", "3"])
        #expect(result.status == 0, "\(result.transcript)")
        #expect(report["errors"] as? [String: Int] == ["mismatches": 0, "short_echoes": 0, "resets": 0, "connect_failures": 0])
        let opened = try number(report, "connections_opened")
        let planned = try number(report, "connections_closed_by_plan")
        #expect(served.opened > 50, "the server saw \(served.opened) connections: \(result.transcript)")
        // The server may not have accepted the last few when its statistics were read.
        #expect(abs(Int(served.opened) - opened) <= 5, "server \(served.opened), client \(opened)")
        // All but those open at the end closed after their third round, and nothing else replaced them.
        #expect(planned >= opened - 5 && planned <= opened, "\(result.transcript)")
        #expect(try number(report, "connections_failed") == 0)
        #expect(try number(report, "connections_reconnected") == 0)
        #expect(try number(report, "connections_closed_by_server") == 0)
        #expect(try number(report, "rounds_cut") == 0)
        // Every connection closed by plan sent exactly its 3 rounds of 1,000 B, and none sent more.
        // (The server's count covers the whole run; the report's rounds only its measured window.)
        #expect(served.bytesReceived >= UInt64(3_000 * planned) && served.bytesReceived <= UInt64(3_000 * opened),
                "server read \(served.bytesReceived) B over \(opened) connections, \(planned) closed by plan")
        #expect(try number(report, "rounds") <= 3 * opened)
    }

    @Test(arguments: [
        // Reset after two and a half rounds.
        (FaultyEchoHandler.Fault.reset, "resets"),
        // FIN in the middle of the third round: its echo is cut short.
        (FaultyEchoHandler.Fault.fin, "short_echoes"),
    ])
    func reconnectReplacesFailedConnectionsAndExitsZero(_ fault: FaultyEchoHandler.Fault, _ kind: String) throws {
        let handler: @Sendable (EventLoop) -> any ConnectionHandler = { _ in FaultyEchoHandler(after: 2_500, fault) }
        let (result, report, served) = try flood(["--connections", "4", "--reconnect"], handler: handler)
        #expect(result.status == 0, "\(result.transcript)")
        let errors = try #require(report["errors"] as? [String: Int])
        #expect(errors["mismatches"] == 0, "\(result.transcript)")
        let failed = try number(report, "connections_failed")
        #expect(failed > 4 && errors[kind] == failed, "\(result.transcript)")
        let reconnected = try number(report, "connections_reconnected")
        #expect(reconnected > 0 && reconnected <= failed, "\(result.transcript)")
        #expect(try number(report, "connections_opened") == 4 + reconnected)
        #expect(served.opened >= UInt64(4 + reconnected) - 4)
        // Each failed connection cut its third round, after the server had read its 2,500 B.
        // (The server's count covers the whole run; the report's rounds only its measured window.)
        #expect(try number(report, "rounds_cut") >= failed, "\(result.transcript)")
        #expect(served.bytesReceived >= UInt64(2_500 * failed), "server read \(served.bytesReceived) B, \(failed) failed")
        #expect(result.standardError.contains(kind == "resets" ? "reset by peer" : "peer FIN with"), "\(result.transcript)")

        let (without, withoutReport, _) = try flood(["--connections", "4"], handler: handler)
        #expect(without.status == 1, "\(without.transcript)")
        #expect(try number(withoutReport, "connections_opened") == 4, "\(without.transcript)")
        #expect((withoutReport["errors"] as? [String: Int])?[kind] == 4, "\(without.transcript)")
    }

    @Test(arguments: [["--reconnect"], ["--rounds-per-connection", "1000"]])
    func serverClosingBetweenRoundsIsReplacedNotAFailure(_ flags: [String]) throws {
        // A FIN right after the third round's echo, as a draining server sends it.
        let (result, report, _) = try flood(["--connections", "4"] + flags) { _ in FaultyEchoHandler(after: 3_000, .fin) }
        #expect(result.status == 0, "\(result.transcript)")
        #expect(report["errors"] as? [String: Int] == ["mismatches": 0, "short_echoes": 0, "resets": 0, "connect_failures": 0],
                "\(result.transcript)")
        let closed = try number(report, "connections_closed_by_server")
        #expect(closed > 4, "\(result.transcript)")
        #expect(try number(report, "connections_reconnected") >= closed - 4, "\(result.transcript)")
        #expect(try number(report, "connections_failed") == 0)
    }

    @Test func reconnectStillFailsOnAWrongByte() throws {
        let (result, report, _) = try flood(["--connections", "4", "--reconnect"]) { _ in CorruptingEchoHandler(flipAt: 1_234) }
        #expect(result.status == 1, "\(result.transcript)")
        #expect(((report["errors"] as? [String: Int])?["mismatches"] ?? 0) > 0, "\(result.transcript)")
    }

    @Test func refusedReconnectsBackOffAndCountAsFailures() throws {
        try withRefusingPort { port in
            let result = try runProgram("dummy-client", ["flood", "--port", "\(port)", "--connections", "2", "--duration", "0.5",
                                                         "--warmup", "0", "--json", "--quiet", "--reconnect"])
            // Failures alone do not fail a --reconnect run, but nothing was verified.
            #expect(result.status == 1, "\(result.transcript)")
            #expect(result.standardError.contains("no round completed"), "\(result.transcript)")
            let report = try #require(
                try JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [String: Any],
                "\(result.transcript)")
            let failures = try #require((report["errors"] as? [String: Int])?["connect_failures"])
            // 0.5 s at 10 to 50 ms apart: 2 connections try about 10 to 50 times each, never hundreds.
            #expect(failures >= 2 * 5 && failures <= 2 * 60, "\(failures) connect failures: \(result.transcript)")
        }
    }

    @Test(arguments: [
        ["flood", "--connections", "3", "--duration", "0.3", "--warmup", "0", "--quiet"],
        ["ping", "--rounds", "2", "--interval", "0"],
    ])
    func sourceAddressIsWhatTheServerSees(_ arguments: [String]) throws {
        let hosts = Locked<[String]>([])
        let result = try withServer(loops: 1, handler: { _ in AddressRecordingEchoHandler(into: hosts) }) { server in
            try runProgram("dummy-client", arguments + ["--port", "\(server.port)", "--source-address", "127.0.0.2"])
        }
        #expect(result.status == 0, "\(result.transcript)")
        let seen = hosts.withLock { $0 }
        #expect(!seen.isEmpty && seen.allSatisfy { $0 == "127.0.0.2" }, "the server saw \(seen)")
    }
}
