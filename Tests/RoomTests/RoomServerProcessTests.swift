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
}
