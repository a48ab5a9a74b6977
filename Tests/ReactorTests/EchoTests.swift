import Reactor
import Synchronization
import TestSupport
import Testing

@Suite("Echo over loopback")
struct EchoTests {
    @Test func oneClientGetsItsBytesBack() throws {
        try withServer { server in
            let client = try BlockingClient(port: server.port)
            let message = Array("Hello world".utf8)
            try client.send(message)
            #expect(try client.receive(exactly: message.count) == message)
        }
    }

    @Test func ipv6LoopbackEchoes() throws {
        try withServer(configure: { $0.host = "::1" }) { server in
            let client = try BlockingClient(port: server.port, host: "::1")
            try client.send([1, 2, 3])
            #expect(try client.receive(exactly: 3) == [1, 2, 3])
        }
    }

    /// 200 clients at once, each sending its own random bytes in random-sized
    /// pieces; every piece must come back exactly, on the right connection.
    @Test(arguments: EchoPath.allCases)
    func twoHundredConcurrentClientsEachGetExactEcho(path: EchoPath) throws {
        try withServer(echo: path) { server in
            let clients = try (0..<200).map { _ in try BlockingClient(port: server.port) }
            let payloads = (0..<200).map { patternBytes(count: 20_000 + $0 * 37, seed: UInt64($0) + 1) }
            var offsets = [Int](repeating: 0, count: 200)
            var generator = SystemRandomNumberGenerator()
            while offsets.enumerated().contains(where: { $0.element < payloads[$0.offset].count }) {
                var pieces: [Range<Int>] = []
                for index in clients.indices {
                    let start = offsets[index]
                    let end = min(payloads[index].count, start + Int.random(in: 1...4_096, using: &generator))
                    pieces.append(start..<end)
                    try clients[index].send(Array(payloads[index][start..<end]))
                    offsets[index] = end
                }
                for index in clients.indices where !pieces[index].isEmpty {
                    let echoed = try clients[index].receive(exactly: pieces[index].count)
                    #expect(echoed == Array(payloads[index][pieces[index]]), "client \(index)")
                }
            }
            #expect(server.statistics.bytesReceived == UInt64(payloads.map(\.count).reduce(0, +)))
        }
    }

    /// The course's DummyClient pattern at scale: 1,000 connections, each
    /// sending ten 100-byte messages back to back, then reading the echo.
    @Test func thousandClientsWithTheCoursePattern() throws {
        try withServer { server in
            let clients = try (0..<1_000).map { _ in try BlockingClient(port: server.port) }
            for round in 0..<3 {
                for (index, client) in clients.enumerated() {
                    let message = patternBytes(count: 100, seed: UInt64(index * 10 + round + 1))
                    for _ in 0..<10 { try client.send(message) }
                }
                for (index, client) in clients.enumerated() {
                    let message = patternBytes(count: 100, seed: UInt64(index * 10 + round + 1))
                    #expect(try client.receive(exactly: 1_000) == Array([[UInt8]](repeating: message, count: 10).joined()))
                }
            }
            #expect(server.connectionCount == 1_000)
        }
    }

    /// A client that resets mid-stream closes only its own connection.
    @Test func resetClientDoesNotDisturbOthers() throws {
        let handler = ObservingEcho()
        let reasons = handler.reasons
        try withServer(handler: { _ in handler }) { server in
            let steady = try BlockingClient(port: server.port)
            let resetting = try BlockingClient(port: server.port)
            try resetting.send(patternBytes(count: 50_000, seed: 3))
            try steady.send([42])
            #expect(try steady.receive(exactly: 1) == [42])
            resetting.reset()
            #expect(eventually { reasons.count == 1 })
            for round in 0..<100 {
                let message = patternBytes(count: 1_000, seed: UInt64(round) + 9)
                try steady.send(message)
                #expect(try steady.receive(exactly: message.count) == message)
            }
            #expect(reasons.values == [.reset])
            #expect(server.connectionCount == 1)
        }
    }
}
