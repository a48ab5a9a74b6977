import Reactor
import TestSupport
import Testing

/// Its loop's one handler (`Server(configuration:loopHandlers:)`): keeps the
/// loop's connections, and for each byte any of them sends, broadcasts
/// `buffer` to all of them with the loop-level enqueue.
///
/// @unchecked Sendable: `members` is touched only on the loop's thread; the
/// test reads the `Recorded` values, which lock.
final class BroadcastingHandler: ConnectionHandler, @unchecked Sendable {
    let buffer: SharedBuffer
    private var members: [Connection] = []
    let opened = Recorded<Connection.ID>()
    let aboveMark = Recorded<Connection.ID>()

    init(buffer: SharedBuffer) { self.buffer = buffer }

    func connectionOpened(_ connection: Connection) {
        members.append(connection)
        opened.append(connection.id)
    }

    func connection(_ connection: Connection, received bytes: UnsafeRawBufferPointer) -> Int {
        for _ in 0..<bytes.count {
            connection.eventLoop.enqueue(buffer, to: members) { aboveMark.append($0.id) }
        }
        return bytes.count
    }

    func connectionClosed(_ connection: Connection, reason: CloseReason) {
        members.removeAll { $0 == connection }
    }
}

@Suite("Broadcast")
struct BroadcastTests {
    /// Three members, one of which stops reading: each broadcast reaches
    /// the two readers whole, only the stalled one is reported above the
    /// mark, and once it reads it gets every broadcast too, in order.
    @Test func broadcastReachesEveryMemberAndReportsOnlyTheStalledOne() throws {
        let payload = patternBytes(count: 64 * 1024, seed: 9)
        let handler = BroadcastingHandler(buffer: SharedBuffer(payload))
        let rounds = 8
        try withStarted(loops: 1, configure: {
            $0.backpressure = Backpressure(highWaterMark: 256 * 1024, lowWaterMark: 64 * 1024)
            $0.socketBufferSize = 16 * 1024
        }, { try Server(configuration: $0, loopHandlers: [handler]) }, server: { $0 }) { server in
            var clients: [BlockingClient] = []
            for count in 1...3 {
                clients.append(try BlockingClient(port: server.port, receiveBufferSize: count == 3 ? 4_096 : nil))
                #expect(eventually { handler.opened.count == count })
            }
            let stalled = handler.opened.values[2]
            for round in 0..<rounds {
                try clients[0].send([1])
                for reader in clients[0..<2] {
                    #expect(try reader.receive(exactly: payload.count) == payload, "round \(round)")
                }
            }
            #expect(!handler.aboveMark.values.isEmpty, "8 x 64 KiB unread is over the 256 KiB mark")
            #expect(Set(handler.aboveMark.values) == [stalled])
            for round in 0..<rounds {
                #expect(try clients[2].receive(exactly: payload.count) == payload, "stalled member, round \(round)")
            }
        }
    }
}
