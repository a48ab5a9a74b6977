import Foundation
import Reactor
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// echo-server behind a real HAProxy (`make scale-demo` at full size): the
/// PROXY v2 header HAProxy writes names the client, to the port. Runs where
/// HAProxy is installed (`apt-get install haproxy`; the demo installs it).
/// Where HAProxy is installed, if it is.
let installedHAProxy = ["/usr/sbin/haproxy", "/usr/bin/haproxy", "/usr/local/sbin/haproxy"]
    .first { FileManager.default.isExecutableFile(atPath: $0) }

@Suite("echo-server behind HAProxy", .enabled(if: installedHAProxy != nil, "haproxy is not installed"))
struct HAProxyInteropTests {
    @Test func sendProxyV2NamesTheClientToTheServer() throws {
        let (server, serverPort) = try ServerProcess.echoServer(
            ["--host", "127.0.0.2", "--loops", "1", "--proxy-protocol", "--verbose"])
        let frontendPort = try unusedPort()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("haproxy-\(getpid())-\(frontendPort)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let configuration = directory.appendingPathComponent("haproxy.cfg")
        // HAProxy's own connections come from 127.0.0.10, so the server's log tells them from the client's.
        try """
            global
                maxconn 100
            defaults
                mode tcp
                timeout connect 2s
                timeout client 10s
                timeout server 10s
            frontend echo
                bind 127.0.0.1:\(frontendPort)
                default_backend servers
            backend servers
                source 127.0.0.10
                server s1 127.0.0.2:\(serverPort) send-proxy-v2

            """.write(to: configuration, atomically: true, encoding: .utf8)
        let balancer = Process()
        balancer.executableURL = URL(fileURLWithPath: installedHAProxy!)
        balancer.arguments = ["-db", "-f", configuration.path]
        balancer.standardOutput = FileHandle.nullDevice
        balancer.standardError = FileHandle.nullDevice
        try balancer.run()
        defer {
            if balancer.isRunning { kill(balancer.processIdentifier, SIGTERM) }
            balancer.waitUntilExit()
        }
        #expect(eventually { (try? BlockingClient(port: frontendPort)) != nil }, "HAProxy listening")

        let client = try BlockingClient(port: frontendPort)
        let payload = patternBytes(count: 5000, seed: 15)
        try client.send(payload)
        #expect(try client.receive(exactly: payload.count) == payload)
        let clientPort = try #require(localPort(of: client.fd))
        client.close()

        server.signal(SIGTERM)
        #expect(server.waitForExit() == 0)
        let log = server.standardError()
        #expect(log.contains("from 127.0.0.1:\(clientPort),"), "\(log)")
        #expect(!log.contains("from 127.0.0.10:"), "no connection seen as HAProxy's own: \(log)")
    }

    private func localPort(of fd: Int32) -> UInt16? {
        var address = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let status = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return status == 0 ? UInt16(bigEndian: address.sin_port) : nil
    }
}
