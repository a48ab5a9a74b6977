import Foundation
import Reactor
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// Handing the listening socket to another process: echo-server's SIGUSR2
/// upgrade, and systemd's socket activation, which the upgrade speaks too.
@Suite("Zero-downtime upgrade and socket activation")
struct UpgradeTests {
    /// SIGUSR2: a successor serves the same socket (and the metrics
    /// endpoint's), the old process drains, its open connection keeps
    /// echoing until its peer closes it, and no connection made around the
    /// hand-over is lost.
    @Test func sigusr2HandsTheSocketToASuccessorAndDrains() throws {
        let metricsPort = try unusedPort()
        let (old, port) = try ServerProcess.echoServer(
            ["--loops", "2", "--shutdown-timeout", "30", "--metrics-port", "\(metricsPort)"])
        let held = try BlockingClient(port: port)
        try held.send([1])
        #expect(try held.receive(exactly: 1) == [1])

        old.signal(SIGUSR2)
        // Connections opened while the hand-over happens: each is served by one of the two.
        var around: [BlockingClient] = []
        for _ in 0..<50 { around.append(try BlockingClient(port: port)) }
        let successorLine = try old.nextOutputLine()
        let successor = try #require(pid(in: successorLine), "\(successorLine)")
        defer { stop(successor) }
        #expect(successor != old.pid)
        #expect(successorLine.contains("127.0.0.1:\(port)"))
        for (index, client) in around.enumerated() {
            try client.send(Array("around \(index)".utf8))
            #expect(try client.receive(exactly: "around \(index)".utf8.count) == Array("around \(index)".utf8))
            client.close()
        }

        // The old process drains: its held connection is still served, and it
        // exits once that closes, long before its 30 s.
        for round in 2...20 {
            try held.send([UInt8(round)])
            #expect(try held.receive(exactly: 1) == [UInt8(round)])
        }
        held.close()
        #expect(old.waitForExit() == 0)

        let after = try BlockingClient(port: port)
        try after.send(Array("after".utf8))
        #expect(try after.receive(exactly: 5) == Array("after".utf8))
        let scrape = try BlockingClient(port: metricsPort)
        try scrape.send(Array("GET /metrics HTTP/1.0\r\n\r\n".utf8))
        let answer = String(decoding: try scrape.receiveUntilEOF(limit: 1 << 20), as: UTF8.self)
        #expect(answer.hasPrefix("HTTP/1.0 200") || answer.hasPrefix("HTTP/1.1 200"), "\(answer.prefix(200))")
        #expect(answer.contains("reactor_connections_opened_total"), "the successor's own metrics")
        stop(successor) // it shares the old process's stderr: read that once both are gone
        let log = old.standardError()
        #expect(log.contains("upgrade: pid \(successor) serves; draining"), "\(log)")
    }

    /// Once SIGTERM has closed the listening socket there is nothing to hand
    /// over: SIGUSR2 then starts no successor, and the shutdown goes on.
    @Test func sigusr2DuringAShutdownStartsNoSuccessor() throws {
        let (server, port) = try ServerProcess.echoServer(["--loops", "1", "--shutdown-timeout", "2"])
        // A peer that sends and never reads holds the shutdown open with its unflushed echo.
        let stalled = try BlockingClient(port: port, receiveBufferSize: 4096)
        _ = stalled.sendWithoutBlocking(ArraySlice(patternBytes(count: 4 << 20, seed: 3)))
        server.signal(SIGTERM)
        #expect(eventually { (try? BlockingClient(port: port)) == nil }, "the listener closes at SIGTERM")
        server.signal(SIGUSR2)
        #expect(server.waitForExit() == 0)
        #expect((try? BlockingClient(port: port)) == nil, "no successor took the port")
        let log = server.standardError()
        #expect(log.contains("upgrade: shutting down, nothing to hand over"), "\(log)")
        #expect(!log.contains("upgrade: started"), "\(log)")
    }

    /// systemd's way: the socket as fd 3 with LISTEN_FDS and LISTEN_PID, and
    /// READY=1 on NOTIFY_SOCKET once the server serves it.
    @Test func echoServerServesASocketPassedAsSystemdPassesIt() throws {
        let (listener, port) = try listeningSocket()
        defer { close(listener) }
        let readiness = try SocketActivation.ReadinessSocket()
        let path = ServerProcess.productsDirectory.appendingPathComponent("echo-server").path
        // --port names another port: the inherited socket wins over binding one.
        let child = try SuccessorProcess.spawn(
            path, arguments: ["--loops", "1", "--port", "1"], sockets: [.init(fd: listener, name: "echo.socket")],
            notifySocket: readiness.name)
        defer { stop(child) }
        var status: Int32 = 0
        #expect(readiness.waitForReady(timeout: .seconds(20)) { waitpid(child, &status, WNOHANG) == child })
        let client = try BlockingClient(port: port)
        try client.send(Array("activated".utf8))
        #expect(try client.receive(exactly: 9) == Array("activated".utf8))
        kill(child, SIGTERM)
        #expect(waitpid(child, &status, 0) == child)
        #expect(status == 0, "exit status \(status)")
    }

    @Test func anInheritedFdThatIsNotListeningIsRefusedNamingIt() throws {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(fd) }
        var configuration = Server.Configuration()
        configuration.listeningSocket = fd
        #expect {
            _ = try Server(configuration: configuration, handler: EchoHandler())
        } throws: { error in
            "\(error)" == "listen inherited fd \(fd) (not a listening stream socket): Invalid argument"
        }
    }

    private func pid(in line: String) -> pid_t? {
        line.split(separator: " ").last.map { $0.trimmingCharacters(in: CharacterSet(charactersIn: ")\n")) }
            .flatMap { pid_t($0) }
    }

    /// Stops a process this test started (directly or through the server it
    /// started), by pid, and waits until it is gone.
    private func stop(_ pid: pid_t) {
        guard kill(pid, SIGTERM) == 0 else { return }
        var status: Int32 = 0
        _ = waitpid(pid, &status, 0) // ours: reaped here; the server's: reaped by init
        _ = eventually(within: 10) { kill(pid, 0) != 0 }
    }

    private func listeningSocket() throws -> (Int32, UInt16) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(fd, $0, length) == 0 && listen(fd, 64) == 0 && getsockname(fd, $0, &length) == 0
            }
        }
        guard bound else { throw SystemError("bind") }
        return (fd, UInt16(bigEndian: address.sin_port))
    }
}
