import Reactor
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// A server with `proxyProtocol` set, over loopback: the header is read
/// before the handler hears of the connection, and a bad one closes only
/// its own connection, counted and reported.
@Suite("PROXY protocol on accept")
struct ProxyProtocolServerTests {
    /// Echoes, and records each connection's addresses as its handler first sees them.
    final class AddressRecordingEcho: ConnectionHandler {
        let seen: Recorded<(remote: String, local: String)>
        init(_ seen: Recorded<(remote: String, local: String)>) { self.seen = seen }

        func connectionOpened(_ connection: Connection) {
            seen.append(("\(connection.remoteAddress!)", "\(connection.localAddress!)"))
        }

        func connection(_ connection: Connection, received bytes: UnsafeRawBufferPointer) -> Int {
            connection.write(bytes)
            return bytes.count
        }
    }

    private func withProxiedServer(
        headerTimeout: Duration = .seconds(10),
        _ body: (Server, Recorded<(remote: String, local: String)>, Recorded<String>) throws -> Void
    ) throws {
        let seen = Recorded<(remote: String, local: String)>(), errors = Recorded<String>()
        try withStarted(loops: 2, configure: {
            var proxy = Server.ProxyProtocol()
            proxy.headerTimeout = headerTimeout
            $0.proxyProtocol = proxy
        }, { configuration in
            try Server(configuration: configuration, errors: { errors.append("\($0)") }) { _ in AddressRecordingEcho(seen) }
        }, server: { $0 }) { server in
            try body(server, seen, errors)
        }
    }

    @Test(arguments: [1, 2])
    func handlerSeesTheClientNamedInTheHeaderAndNoHeaderByte(version: Int) throws {
        let client = proxyAddress("192.0.2.1", 56324), dialed = proxyAddress("2001:db8::7", 443)
        let client6 = proxyAddress("2001:db8::1", 40000)
        try withProxiedServer { server, seen, _ in
            for (source, destination) in [(client, proxyAddress("198.51.100.1", 443)), (client6, dialed)] {
                let header = version == 1 ? proxyV1(source, destination) : proxyV2(source, destination)
                let payload = patternBytes(count: 3000, seed: UInt64(version))
                let connection = try BlockingClient(port: server.port)
                try connection.send(header + payload) // one segment: header and data together
                #expect(try connection.receive(exactly: payload.count) == payload)
                connection.close()
            }
            #expect(seen.values.map(\.remote) == ["192.0.2.1:56324", "[2001:db8::1]:40000"])
            #expect(seen.values.map(\.local) == ["198.51.100.1:443", "[2001:db8::7]:443"])
        }
    }

    @Test func headerArrivingByteByByteIsStillReadWhole() throws {
        let header = proxyV2(proxyAddress("203.0.113.9", 1234), proxyAddress("203.0.113.1", 80), tlvs: [0x04, 0, 1, 9])
        try withProxiedServer { server, seen, _ in
            let connection = try BlockingClient(port: server.port)
            for byte in header { try connection.send([byte]) } // one segment each (TCP_NODELAY)
            try connection.send([42, 43])
            #expect(try connection.receive(exactly: 2) == [42, 43])
            #expect(seen.values.map(\.remote) == ["203.0.113.9:1234"])
        }
    }

    @Test func localCommandKeepsTheSocketsOwnAddresses() throws {
        try withProxiedServer { server, seen, _ in
            for header in [ProxyHeaderSample.signature + [0x20, 0, 0, 0], Array("PROXY UNKNOWN\r\n".utf8)] {
                let connection = try BlockingClient(port: server.port)
                try connection.send(header + [7])
                #expect(try connection.receive(exactly: 1) == [7])
                connection.close()
            }
            #expect(seen.values.allSatisfy { $0.remote.hasPrefix("127.0.0.1:") && $0.local == "127.0.0.1:\(server.port)" })
            #expect(seen.count == 2)
        }
    }

    @Test(arguments: [
        ("GET / HTTP/1.1\r\n\r\n", "not a PROXY protocol header"),
        ("PROXY TCP4 192.0.2.1 198.51.100.1 99999 443\r\n", "bad port"),
        ("PROXY UNKNOWN " + String(repeating: "x", count: 200), "longer than 107"),
    ])
    func badHeaderClosesOnlyItsConnectionCountedAndReported(text: String, reason: String) throws {
        try withProxiedServer { server, seen, errors in
            let before = try BlockingClient(port: server.port)
            try before.send(proxyV1(proxyAddress("192.0.2.1", 1), proxyAddress("192.0.2.2", 2)))
            let bad = try BlockingClient(port: server.port)
            try bad.send(Array(text.utf8))
            #expect(closedByServer(bad))
            try before.send([1, 2, 3])
            #expect(try before.receive(exactly: 3) == [1, 2, 3])
            #expect(server.statistics.proxyHeadersRejected == 1)
            #expect(errors.values.count == 1)
            #expect(errors.values.first?.contains("PROXY header from 127.0.0.1:") == true)
            #expect(errors.values.first?.contains(reason) == true, "\(errors.values)")
            #expect(seen.count == 1, "the handler never heard of the bad connection")
            before.close()
            #expect(eventually { server.connectionCount == 0 }, "the bad connection gave its place back")
        }
    }

    @Test func headerSlowerThanTheDeadlineIsClosedAndOthersAreServed() throws {
        try withProxiedServer(headerTimeout: .milliseconds(200)) { server, _, errors in
            let slow = try BlockingClient(port: server.port)
            try slow.send(Array("PROXY TCP4 ".utf8))
            let prompt = try BlockingClient(port: server.port)
            try prompt.send(proxyV1(proxyAddress("192.0.2.1", 1), proxyAddress("192.0.2.2", 2)) + [5])
            #expect(try prompt.receive(exactly: 1) == [5])
            #expect(closedByServer(slow))
            #expect(server.statistics.proxyHeadersRejected == 1)
            #expect(errors.values.first?.contains("no whole PROXY header within") == true, "\(errors.values)")
        }
    }

    @Test func peerLeavingBeforeAnyByteIsNotARejection() throws {
        try withProxiedServer { server, seen, errors in
            for _ in 0..<20 { try BlockingClient(port: server.port).close() } // a proxy's TCP health checks
            let after = try BlockingClient(port: server.port)
            try after.send(proxyV1(proxyAddress("192.0.2.1", 1), proxyAddress("192.0.2.2", 2)) + [9])
            #expect(try after.receive(exactly: 1) == [9])
            after.close()
            #expect(eventually { server.connectionCount == 0 })
            #expect(server.statistics.proxyHeadersRejected == 0)
            #expect(errors.values.isEmpty)
            #expect(seen.count == 1)
        }
    }

    /// Whether the server closed `client` without a byte: FIN, or a reset
    /// when it closed with the refused bytes unread.
    private func closedByServer(_ client: BlockingClient) -> Bool {
        do {
            return try client.receiveUntilEOF(limit: 0).isEmpty
        } catch let error as SystemError {
            return error.code == ECONNRESET
        } catch {
            return false
        }
    }
}
