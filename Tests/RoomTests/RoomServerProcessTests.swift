import Reactor
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The room-server binary as a user runs it: flags, exit codes, signals.
@Suite("room-server process")
struct RoomServerProcessTests {
    @Test(arguments: [
        (["--port", "0"], "--port"),
        (["--max-packet", "7"], "--max-packet"),
        (["--max-packet", "65536"], "--max-packet"),
        (["--slow-member-bytes", "10"], "--slow-member-bytes"),
        (["--loops", "0"], "--loops"),
    ])
    func badFlagExits64NamingTheFlag(arguments: [String], flag: String) throws {
        let result = try runProgram("room-server", arguments)
        #expect(result.status == 64)
        #expect(result.standardError.contains(flag), "\(result.standardError)")
    }

    @Test func servesARoomAndStopsOnSIGTERMWithStatus0() throws {
        let port = try unusedPort()
        let server = try ServerProcess("room-server", arguments: ["--port", "\(port)", "--loops", "2"])
        try server.waitUntilListening()
        #expect(server.listeningLine.contains("room-server listening on 127.0.0.1:\(port)"))
        let members = try (0..<2).map { _ in try RoomClient(port: port) }
        for member in members { try member.enter(42) }
        try members[1].chat(Array("over the wire".utf8))
        for member in members { #expect(try member.readChat().payload == Array("over the wire".utf8)) }
        server.signal(SIGTERM)
        for member in members { #expect(try member.socket.receiveUntilEOF(limit: 0).isEmpty) }
        #expect(server.waitForExit() == 0)
    }

    /// Behind a proxy: the PROXY header is read before the room protocol sees
    /// a byte, and a member without one is refused while the room goes on.
    @Test func proxyProtocolHeaderComesBeforeThePackets() throws {
        let port = try unusedPort()
        let server = try ServerProcess("room-server", arguments: ["--port", "\(port)", "--loops", "1", "--proxy-protocol"])
        try server.waitUntilListening()
        let members = try (0..<2).map { _ in try RoomClient(port: port) }
        for (index, member) in members.enumerated() {
            try member.socket.send(Array("PROXY TCP4 192.0.2.\(index + 1) 192.0.2.100 4000\(index) 7931\r\n".utf8))
            try member.enter(9)
        }
        let unproxied = try BlockingClient(port: port)
        try unproxied.send(RoomClient.enterPacket(9))
        _ = try? unproxied.receiveUntilEOF(limit: 0) // refused: FIN, or a reset over the unread packet
        try members[0].chat(Array("still here".utf8))
        for member in members { #expect(try member.readChat().payload == Array("still here".utf8)) }
        server.signal(SIGTERM)
        #expect(server.waitForExit() == 0)
        let log = server.standardError()
        #expect(log.contains("refused: not a PROXY protocol header"), "\(log)")
        #expect(log.contains("1 PROXY headers refused"), "\(log)")
    }
}
