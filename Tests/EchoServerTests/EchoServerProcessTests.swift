import Reactor
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The echo-server binary as a user runs it: flags, exit codes, signals, fds.
@Suite("echo-server process")
struct EchoServerProcessTests {
    private func startServer(fileLimit: Int? = nil) throws -> (ServerProcess, UInt16) {
        try ServerProcess.echoServer(["--loops", "2"], fileLimit: fileLimit)
    }

    @Test(arguments: [
        (["--port", "0"], "--port"),
        (["--port", "70000"], "--port"),
        (["--loops", "0"], "--loops"),
        (["--backlog", "0"], "--backlog"),
        (["--host", "no-such-host.invalid"], "--host"),
        (["--max-connections", "0"], "--max-connections"),
        (["--idle-timeout", "-1"], "--idle-timeout"),
        (["--socket-buffer", "-1"], "--socket-buffer"),
    ])
    func badFlagExits64NamingTheFlag(arguments: [String], flag: String) throws {
        let result = try runProgram("echo-server", arguments)
        #expect(result.status == 64)
        #expect(result.standardError.contains(flag), "\(result.standardError)")
    }

    @Test func listensOnLoopbackAndStopsOnSIGTERMWithStatus0() throws {
        let (server, port) = try startServer()
        #expect(server.listeningLine.contains("127.0.0.1:\(port)"))
        let client = try BlockingClient(port: port)
        try client.send(Array("Hello world".utf8))
        #expect(try client.receive(exactly: 11) == Array("Hello world".utf8))
        server.signal(SIGTERM)
        #expect(try client.receiveUntilEOF(limit: 0).isEmpty)
        #expect(server.waitForExit() == 0)
    }

    @Test func portInUseFailsWithTheCallAndErrnoText() throws {
        let (first, port) = try startServer()
        let second = try runProgram("echo-server", ["--port", "\(port)"])
        #expect(second.status == 1)
        #expect(second.standardError.contains("bind 127.0.0.1:\(port): Address already in use"), "\(second.standardError)")
        first.signal(SIGINT)
        #expect(first.waitForExit() == 0)
    }

    /// 1,000 connect/close cycles: the server's fd count returns to where it began.
    @Test func thousandConnectCloseCyclesLeakNoDescriptors() throws {
        let (server, port) = try startServer()
        let baseline = server.openFileCount
        for cycle in 0..<1_000 {
            let client = try BlockingClient(port: port)
            if cycle % 2 == 0 {
                try client.send([UInt8(truncatingIfNeeded: cycle)])
                #expect(try client.receive(exactly: 1) == [UInt8(truncatingIfNeeded: cycle)])
            }
            client.close()
        }
        #expect(eventually { server.openFileCount == baseline }, "fds: \(server.openFileCount) vs \(baseline)")
        server.signal(SIGTERM)
        #expect(server.waitForExit() == 0)
    }

    /// Behind a proxy: `--verbose` names the client from the PROXY header, and a
    /// connection without one is refused, logged and counted in the final line.
    @Test func proxyProtocolNamesTheClientAndCountsRefusedHeaders() throws {
        let (server, port) = try ServerProcess.echoServer(["--loops", "1", "--proxy-protocol", "--verbose"])
        let proxied = try BlockingClient(port: port)
        try proxied.send(Array("PROXY TCP6 2001:db8::1 ::1 40000 7777\r\nhello".utf8))
        #expect(try proxied.receive(exactly: 5) == Array("hello".utf8))
        let direct = try BlockingClient(port: port)
        try direct.send(Array("hello\r\n".utf8))
        _ = try? direct.receiveUntilEOF(limit: 0) // closed: FIN, or a reset over the unread bytes
        server.signal(SIGTERM)
        #expect(server.waitForExit() == 0)
        let log = server.standardError()
        #expect(log.contains("from [2001:db8::1]:40000"), "\(log)")
        #expect(log.contains("PROXY header from 127.0.0.1:"), "\(log)")
        #expect(log.contains("refused: not a PROXY protocol header"), "\(log)")
        #expect(log.contains("1 PROXY headers refused"), "\(log)")
    }

    /// Run out of fds (ulimit -n 64, 500 clients): the server neither dies nor
    /// spins, serves what it holds, and serves new clients once fds free up.
    @Test func survivesDescriptorExhaustion() throws {
        let (server, port) = try startServer(fileLimit: 64)
        var clients: [BlockingClient] = []
        for _ in 0..<500 { clients.append(try BlockingClient(port: port, timeoutSeconds: 2)) }
        // The first ones hold fds and are served.
        try clients[0].send([1, 2, 3])
        #expect(try clients[0].receive(exactly: 3) == [1, 2, 3])
        #expect(eventually { server.openFileCount >= 60 })
        let cpuShare = server.cpuShare(overSeconds: 1)
        #expect(cpuShare < 0.2, "server used \(cpuShare * 100)% CPU while out of fds")
        for client in clients { client.close() }
        clients.removeAll()
        let late = try BlockingClient(port: port)
        try late.send([9, 8, 7])
        #expect(try late.receive(exactly: 3) == [9, 8, 7])
        server.signal(SIGTERM)
        #expect(server.waitForExit() == 0)
    }
}
