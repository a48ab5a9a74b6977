import Reactor
import TestSupport
import Testing

/// The README's examples do what it says they do.
@Suite("README examples")
struct ReadmeExamplesTests {
    private static func packet(id: UInt16, body: [UInt8]) -> [UInt8] {
        let size = UInt16(4 + body.count)
        return [UInt8(size & 0xFF), UInt8(size >> 8), UInt8(id & 0xFF), UInt8(id >> 8)] + body
    }

    @Test func packetEchoAnswersEachPacketWithTheNextID() throws {
        try withServer(loops: 1, sharing: PacketEchoHandler()) { server in
            let client = try BlockingClient(port: server.port)
            let bodies = (0..<20).map { patternBytes(count: $0 * 50, seed: UInt64($0) + 3) }
            let stream = bodies.enumerated().flatMap { Self.packet(id: UInt16($0.offset * 2), body: $0.element) }
            try client.send(Array(stream[..<777]))
            try client.send(Array(stream[777...]))
            let answers = try client.receive(exactly: stream.count)
            let expected = bodies.enumerated().flatMap { Self.packet(id: UInt16($0.offset * 2 + 1), body: $0.element) }
            #expect(answers == expected)
        }
    }

    @Test func chatRoomSendsEveryLineToEveryMember() throws {
        try withServer(loops: 1, sharing: ChatRoom()) { server in
            let members = try (0..<3).map { _ in try BlockingClient(port: server.port) }
            #expect(eventually { server.connectionCount == 3 })
            try members[1].send(Array("hello\r\nwor".utf8))
            try members[2].send(Array("second\n".utf8))
            try members[1].send(Array("ld\n".utf8))
            for (index, member) in members.enumerated() {
                let received = String(decoding: try member.receive(exactly: 19), as: UTF8.self)
                let lines = received.split(separator: "\n").map(String.init)
                #expect(Set(lines) == ["hello", "second", "world"], "member \(index)")
                #expect(lines.firstIndex(of: "hello")! < lines.firstIndex(of: "world")!, "member \(index): one member's lines in order")
        }
        let fourth = try BlockingClient(port: server.port)
        #expect(eventually { server.connectionCount == 4 })
        members[0].close()
        #expect(eventually { server.connectionCount == 3 })
        try fourth.send(Array("bye\n".utf8))
        #expect(try fourth.receive(exactly: 4) == Array("bye\n".utf8))
        #expect(try members[1].receive(exactly: 4) == Array("bye\n".utf8))
        }
    }
}
