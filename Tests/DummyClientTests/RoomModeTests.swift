import Foundation
import Reactor
import Rooms
import TestSupport
import Testing

/// `dummy-client room` against in-process room servers on 127.0.0.1: the
/// project's `RoomService`, and small servers that break one guarantee each.
@Suite struct RoomModeTests {
    static let violationKeys = ["chat_before_enter", "foreign_sender", "payload", "gap", "duplicate", "order", "bad_packet"]

    private func parse(_ result: ProgramResult) throws -> [String: Any] {
        try #require(
            try JSONSerialization.jsonObject(with: Data(result.standardOutput.utf8)) as? [String: Any],
            "\(result.transcript)")
    }

    @Test(arguments: [[String](), ["--rate", "200"], ["--threads", "2", "--size", "1000"]])
    func roomAgainstRoomServiceVerifiesEveryDelivery(_ flags: [String]) throws {
        let (result, served) = try withRoomServer(loops: 2) { service in
            let port = service.server.localAddress.port
            let result = try runProgram("dummy-client", [
                "room", "--port", "\(port)", "--rooms", "4", "--members", "5", "--duration", "0.5", "--warmup", "0.1",
                "--json", "--quiet",
            ] + flags)
            return (result, service.statistics)
        }
        #expect(result.status == 0, "\(result.transcript)")
        let report = try parse(result)
        for field in ["mode", "load", "host", "port", "rooms", "members", "threads", "size", "rate", "duration_s",
                      "deliveries", "deliveries_per_sec", "broadcasts", "broadcasts_per_sec", "connected", "entered",
                      "latency_us", "connect_us", "errors", "violations", "client_cpu_s"] {
            #expect(report[field] != nil, "missing \(field): \(result.transcript)")
        }
        #expect(report["mode"] as? String == "room")
        #expect(report["load"] as? String == (flags.contains("--rate") ? "open" : "closed"))
        #expect(report["rooms"] as? Int == 4)
        #expect(report["members"] as? Int == 5)
        #expect(report["connected"] as? Int == 20)
        #expect(report["entered"] as? Int == 20)
        let deliveries = try #require(report["deliveries"] as? Int)
        let broadcasts = try #require(report["broadcasts"] as? Int)
        #expect(deliveries > 0 && broadcasts > 0)
        // What the client verified, the server really sent (warm-up included on its side). How
        // many broadcasts straddle the window's edges depends on the latency, that is on the
        // machine's load, so deliveries against 5 x broadcasts is no bound; exactly once is
        // checked per delivery (violations below).
        #expect(UInt64(deliveries) <= served.deliveries, "client verified \(deliveries), server sent \(served.deliveries)")
        #expect(UInt64(broadcasts) <= served.broadcasts, "client saw \(broadcasts) back, server took \(served.broadcasts)")
        let latency = try #require(report["latency_us"] as? [String: Double])
        for field in ["p50", "p90", "p99", "p999", "max", "mean"] { #expect(latency[field] != nil, "latency_us.\(field)") }
        let p50 = try #require(latency["p50"]), max = try #require(latency["max"])
        #expect(p50 > 0 && p50 <= max)
        let connect = try #require(report["connect_us"] as? [String: Double])
        #expect(try #require(connect["max"]) > 0)
        let errors = try #require(report["errors"] as? [String: Int])
        var clean = ["connect_failures": 0, "resets": 0, "disconnects": 0, "not_entered": 0]
        for key in Self.violationKeys { clean[key] = 0 }
        #expect(errors == clean, "\(result.transcript)")
        #expect(report["violations"] as? Int == 0)
        let cpu = try #require(report["client_cpu_s"] as? [String: Double])
        #expect(cpu["user"] != nil && cpu["system"] != nil)
    }

    @Test func roomSummaryIsReadable() throws {
        let result = try withRoomServer(loops: 1) { service in
            try runProgram("dummy-client", ["room", "--port", "\(service.server.localAddress.port)", "--rooms", "2",
                                            "--members", "3", "--duration", "0.3", "--warmup", "0", "--quiet"])
        }
        #expect(result.status == 0, "\(result.transcript)")
        #expect(result.standardOutput.contains("2 rooms x 3 members, 32 B chats, closed loop"), "\(result.transcript)")
        #expect(result.standardOutput.contains("6 of 6 connected, 6 entered"), "\(result.transcript)")
        #expect(result.standardOutput.contains("one order per room: 0 violations"), "\(result.transcript)")
    }

    @Test(arguments: [
        (RoomFault.corrupt, "payload", "payload violation: room "),
        (.reorder, "order", "room order violation: room "),
        (.misroute, "foreign_sender", "not a member of room"),
        (.duplicate, "duplicate", "(duplicate or late)"),
        (.drop, "gap", "(gap)"),
        (.dropTail, "gap", "(gap at the end)"),
        (.chatBeforeEnter, "chat_before_enter", "S_CHAT before S_ENTER violation"),
    ])
    func roomCatchesAMisbehavingServer(_ fault: RoomFault, _ key: String, _ message: String) throws {
        let rooms = MisbehavingRooms(fault: fault)
        let result = try withServer(loops: 1, handler: { _ in MisbehavingRoomMember(rooms: rooms) }) { server in
            try runProgram("dummy-client", ["room", "--port", "\(server.port)", "--rooms", "3", "--members", "4",
                                            "--duration", "0.5", "--warmup", "0", "--json", "--quiet"])
        }
        #expect(result.status == 1, "\(result.transcript)")
        let report = try parse(result)
        let errors = try #require(report["errors"] as? [String: Int])
        #expect((errors[key] ?? 0) > 0, "\(result.transcript)")
        #expect(result.standardError.contains(message), "\(result.transcript)")
        #expect(try #require(report["violations"] as? Int) > 0)
    }

    @Test func theMisbehavingServerIsCorrectWithoutItsFault() throws {
        let rooms = MisbehavingRooms(fault: .none)
        let result = try withServer(loops: 1, handler: { _ in MisbehavingRoomMember(rooms: rooms) }) { server in
            try runProgram("dummy-client", ["room", "--port", "\(server.port)", "--rooms", "3", "--members", "4",
                                            "--duration", "0.3", "--warmup", "0", "--json", "--quiet"])
        }
        #expect(result.status == 0, "\(result.transcript)")
    }

    @Test(arguments: [
        (["room", "--rooms", "0"], "--rooms must be in 1...100000"),
        (["room", "--members", "100001"], "--members must be in 1...100000"),
        (["room", "--rooms", "1000", "--members", "101"], "--members must be in 1...100"),
        (["room", "--size", "15"], "--size must be in 16...65527"),
        (["room", "--size", "65528"], "--size must be in 16...65527"),
        (["room", "--rate", "0"], "--rate must be in 0.01...10000000"),
        (["room", "--threads", "0"], "--threads must be in 1...256"),
        (["room", "--duration", "0"], "--duration must be in 0.1...86400"),
        (["room", "--port", "0"], "--port must be in 1...65535"),
        (["room", "--connect-rate", "0"], "--connect-rate must be in 1.0...10000000.0"),
    ])
    func roomBadFlagsExit64NamingTheFlag(_ arguments: [String], _ message: String) throws {
        let result = try runProgram("dummy-client", arguments)
        #expect(result.status == 64, "\(result.transcript)")
        #expect(result.standardError.contains(message), "\(result.transcript)")
    }
}
