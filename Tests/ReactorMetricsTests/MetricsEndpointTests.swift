import Reactor
import ReactorMetrics
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite("Metrics endpoint")
struct MetricsEndpointTests {
    static let request = Array("GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: */*\r\n\r\n".utf8)

    /// A head split anywhere is incomplete until its blank line, then whole.
    @Test func requestHeadAtEverySplitPoint() {
        for split in 0..<Self.request.count {
            let parse = Self.request[..<split].withUnsafeBytes { HTTPRequestHead.parse($0) }
            #expect(parse == .incomplete, "split at \(split)")
        }
        let whole = (Self.request + Array("extra".utf8)).withUnsafeBytes { HTTPRequestHead.parse($0) }
        #expect(whole == .complete(HTTPRequestHead(method: "GET", path: "/metrics"), length: Self.request.count))
    }

    @Test(arguments: ["GET\r\n\r\n", "GET /metrics\r\n\r\n", "GET metrics HTTP/1.1\r\n\r\n", "get /metrics HTTP/1.1\r\n\r\n",
                      "GET /metrics HTTP/2.0\r\n\r\n", "GET /me trics HTTP/1.1\r\n\r\n", "\r\n\r\n"])
    func malformedHeadsAreRefused(_ text: String) {
        guard case .malformed = Array(text.utf8).withUnsafeBytes({ HTTPRequestHead.parse($0) }) else {
            Issue.record("accepted \(text.debugDescription)")
            return
        }
    }

    @Test func anOversizedHeadIsRefused() {
        let long = Array("GET /metrics HTTP/1.1\r\nX: ".utf8) + [UInt8](repeating: 65, count: 9_000)
        #expect(long.withUnsafeBytes { HTTPRequestHead.parse($0) } == .malformed("request head over 8192 B"))
    }

    private func ask(_ port: UInt16, _ bytes: [UInt8]) throws -> String {
        let client = try BlockingClient(port: port)
        try client.send(bytes)
        return String(decoding: try client.receiveUntilEOF(limit: 1 << 20), as: UTF8.self)
    }

    /// 200 with the text, 404, 405 and 400 answers, each then closed; a
    /// client that never finishes its head is timed out.
    @Test func answersAndRefusals() throws {
        let endpoint = try MetricsEndpoint(port: 0, requestTimeout: .milliseconds(300)) { "up 1\n" }
        try endpoint.start()
        defer { endpoint.shutdown() }
        let port = endpoint.server.localAddress.port
        let ok = try ask(port, Self.request)
        #expect(ok.hasPrefix("HTTP/1.1 200 OK\r\n") && ok.hasSuffix("\r\n\r\nup 1\n"), "\(ok)")
        #expect(ok.contains("Content-Length: 5\r\n") && ok.contains("text/plain; version=0.0.4"))
        #expect(try ask(port, Array("GET / HTTP/1.1\r\n\r\n".utf8)).hasPrefix("HTTP/1.1 404 "))
        #expect(try ask(port, Array("POST /metrics HTTP/1.1\r\n\r\n".utf8)).hasPrefix("HTTP/1.1 405 "))
        #expect(try ask(port, Array("HELLO\r\n\r\n".utf8)).hasPrefix("HTTP/1.1 400 "))
        #expect(try ask(port, [UInt8](repeating: 65, count: 9_000)).hasPrefix("HTTP/1.1 400 "))
        let slow = try BlockingClient(port: port)
        try slow.send(Array("GET /metr".utf8))
        #expect(try slow.receiveUntilEOF(limit: 0) == [], "timed out, closed without an answer")
    }

    /// echo-server --metrics-port holding 1,000 connections: the scrape
    /// parses, and says 1,000 open over its loops; bad requests to the
    /// metrics port do not disturb the echo.
    @Test func scrapeOfAServerHolding1000Connections() throws {
        FileDescriptorLimit.raiseToMaximum()
        let metricsPort = try unusedPort()
        let (server, port) = try ServerProcess.echoServer(["--loops", "2", "--metrics-port", "\(metricsPort)"], fileLimit: 4_096)
        let clients = try (0..<1_000).map { _ in try BlockingClient(port: port) }
        try clients[0].send([1, 2, 3])
        #expect(try clients[0].receive(exactly: 3) == [1, 2, 3])
        #expect(try ask(metricsPort, Array("BAD\r\n\r\n".utf8)).hasPrefix("HTTP/1.1 400 "))
        var samples: [String: Double] = [:]
        #expect(try eventually {
            samples = try Self.samples(of: try ask(metricsPort, Self.request))
            return samples["reactor_connections_open", default: 0] == 1_000
        }, "\(samples)")
        #expect(samples["reactor_connections_opened_total"] == 1_000)
        #expect(samples["reactor_loops"] == 2)
        #expect(samples["reactor_bytes_received_total"] == 3)
        try clients[999].send([9])
        #expect(try clients[999].receive(exactly: 1) == [9])
        for client in clients { client.close() }
        server.signal(SIGTERM)
        #expect(server.waitForExit() == 0)
    }

    /// The Prometheus text's samples, summed over labels, by metric name;
    /// every line must be a comment or `name{labels} value`.
    static func samples(of response: String) throws -> [String: Double] {
        guard let bodyStart = response.range(of: "\r\n\r\n") else { throw TestFailure("no body: \(response)") }
        var sums: [String: Double] = [:]
        for line in response[bodyStart.upperBound...].split(separator: "\n") where !line.hasPrefix("#") {
            let parts = line.split(separator: " ")
            guard parts.count == 2, let value = Double(parts[1]) else { throw TestFailure("bad sample line: \(line)") }
            let name = parts[0].split(separator: "{").first.map(String.init) ?? ""
            guard !name.isEmpty, name.allSatisfy({ $0.isLetter || $0.isNumber || $0 == "_" }) else {
                throw TestFailure("bad metric name: \(line)")
            }
            sums[name, default: 0] += value
        }
        return sums
    }
}
