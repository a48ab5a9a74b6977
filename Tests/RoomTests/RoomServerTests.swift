import Reactor
import Rooms
import TestSupport
import Testing

/// The room protocol's guarantees (../shared/protocols/room.md), on real sockets.
@Suite("Room server")
struct RoomServerTests {
    @Test func membersEnterChatAndLeave() throws {
        try withRoomServer { service in
            let first = try RoomClient(port: service.server.port)
            let (firstID, firstCount) = try first.enter(7)
            #expect(firstCount == 1)
            let second = try RoomClient(port: service.server.port)
            let (secondID, secondCount) = try second.enter(7)
            #expect(secondCount == 2)
            #expect(firstID != secondID)
            try first.chat(Array("hello".utf8))
            for member in [first, second] {
                let chat = try member.readChat()
                #expect(chat.sender == firstID)
                #expect(chat.payload == Array("hello".utf8))
            }
            try second.socket.send(RoomClient.leavePacket)
            let left = try second.read()
            #expect(left.kind == .serverLeave && left.words == [7])
            try first.chat([])
            #expect(try first.readChat().payload.isEmpty, "an empty payload is a chat too")
            #expect(eventually { service.statistics.deliveries == 3 })
        }
    }

    /// Rooms 1 and 2 are owned by different loops; neither hears the other.
    @Test func twoRoomsNeverLeakIntoEachOther() throws {
        try withRoomServer { service in
            let rooms: [UInt32] = [1, 2]
            let members = try rooms.map { room in
                try (0..<3).map { _ in
                    let member = try RoomClient(port: service.server.port)
                    try member.enter(room)
                    return member
                }
            }
            for round in 0..<20 {
                for (index, room) in rooms.enumerated() {
                    try members[index][round % 3].chat(Array("room \(room) round \(round)".utf8))
                }
                for (index, room) in rooms.enumerated() {
                    for member in members[index] {
                        #expect(try member.readChat().payload == Array("room \(room) round \(round)".utf8))
                    }
                }
            }
        }
    }

    /// Enter, leave, enter again: nothing arrives while out; S_ENTER counts
    /// right; a chat or leave from outside any room is dropped, unanswered.
    @Test func enterLeaveAndEnterAgain() throws {
        try withRoomServer { service in
            let stayer = try RoomClient(port: service.server.port)
            try stayer.enter(3)
            let wanderer = try RoomClient(port: service.server.port)
            let (wandererID, _) = try wanderer.enter(3)
            try wanderer.socket.send(RoomClient.leavePacket)
            #expect(try wanderer.read().words == [3])
            try wanderer.chat(Array("from nowhere".utf8)) // dropped
            try wanderer.socket.send(RoomClient.leavePacket) // dropped
            try stayer.chat(Array("while away".utf8))
            #expect(try stayer.readChat().payload == Array("while away".utf8))
            let (again, count) = try wanderer.enter(3)
            #expect(again == wandererID && count == 2, "S_ENTER is the next packet: nothing of the room while away")
            try stayer.chat(Array("back".utf8))
            #expect(try wanderer.readChat().payload == Array("back".utf8))
            #expect(try stayer.readChat().payload == Array("back".utf8))
            // C_ENTER while in a room: S_LEAVE for the old room, then S_ENTER for the new one.
            try wanderer.socket.send(RoomClient.enterPacket(4))
            #expect(try wanderer.read().words == [3])
            let entered = try wanderer.read()
            #expect(entered.kind == .serverEnter && entered.words == [4, wandererID, 1])
            #expect(service.statistics.dropped == 2)
        }
    }

    /// Six members on two loops each send 40 chats as fast as they can:
    /// every member receives all 240 exactly once, in one and the same
    /// order, and each sender's in the order it sent them.
    @Test func oneOrderForEveryMemberAndEachSendersOwn() throws {
        try withRoomServer { service in
            let members = try (0..<6).map { _ in try RoomClient(port: service.server.port) }
            var ids: [UInt32] = []
            for member in members { ids.append(try member.enter(9).member) }
            let perSender = 40
            let senders = try members.enumerated().map { index, member in
                let stream = (0..<perSender).flatMap { RoomClient.chatPacket([UInt8(index), UInt8($0)]) }
                return try member.socket.sendInBackground(stream, piece: 7) // pieces split packets
            }
            var orders: [[[UInt8]]] = []
            for member in members {
                var order: [[UInt8]] = []
                for _ in 0..<(perSender * members.count) {
                    let chat = try member.readChat()
                    #expect(chat.sender == ids[Int(chat.payload[0])])
                    order.append(chat.payload)
                }
                orders.append(order)
            }
            for sender in senders { sender.join() }
            for order in orders.dropFirst() { #expect(order == orders[0]) }
            for index in members.indices {
                #expect(orders[0].filter { $0[0] == UInt8(index) }.map { Int($0[1]) } == Array(0..<perSender))
            }
        }
    }

    /// A packet split at every byte boundary into two sends is one packet.
    @Test func packetsSplitAnywhereAreWhole() throws {
        try withRoomServer(loops: 1) { service in
            let member = try RoomClient(port: service.server.port)
            try member.enter(5)
            let stream = RoomClient.chatPacket(Array("split".utf8)) + RoomClient.chatPacket(Array("me".utf8))
            for split in 0...stream.count {
                try member.socket.send(Array(stream[..<split]))
                try member.socket.send(Array(stream[split...]))
                #expect(try member.readChat().payload == Array("split".utf8), "split at \(split)")
                #expect(try member.readChat().payload == Array("me".utf8), "split at \(split)")
            }
        }
    }

    /// A member that stops reading is disconnected at the mark; the others
    /// get every delivery meanwhile.
    @Test func stalledMemberIsDisconnectedAndTheRoomGoesOn() throws {
        try withRoomServer(configure: {
            $0.backpressure = Backpressure(highWaterMark: 64 * 1024, lowWaterMark: 16 * 1024)
            $0.socketBufferSize = 16 * 1024
        }) { service in
            let stalled = try RoomClient(port: service.server.port, receiveBufferSize: 4_096)
            try stalled.enter(11)
            let others = try (0..<3).map { _ in try RoomClient(port: service.server.port) }
            for other in others { try other.enter(11) }
            let payload = patternBytes(count: 4_000, seed: 8)
            for round in 0..<200 {
                try others[round % 3].chat(payload)
                for other in others { #expect(try other.readChat().payload == payload, "round \(round)") }
            }
            #expect(service.statistics.slowMembers == 1)
            var drained = 0
            #expect(eventually {
                let chunk = (try? stalled.socket.receiveSome(maximum: 65_536)) ?? []
                drained += chunk.count
                return chunk.isEmpty
            }, "the stalled member's connection ends")
            #expect(drained < 200 * 4_008, "it was cut off, not served everything")
        }
    }

    @Test(arguments: [
        ([3, 0, 3, 0], "frame length 3 B is shorter than its 4 B header"),
        ([4, 0, 99, 0], "protocol error: packet id 99 is not a client packet"),
        ([7, 0, 1, 0, 1, 2, 3], "protocol error: C_ENTER with a 3 B body (4 B expected)"),
        ([5, 0, 5, 0, 0], "protocol error: C_LEAVE with a 1 B body (empty expected)"),
        ([0x01, 0x10, 3, 0], "frame of 4097 B over the limit of 4096 B"),
    ])
    func badPacketClosesOnlyItsConnection(packet: [UInt8], reason: String) throws {
        let log = Recorded<String>()
        try withRoomServer(loops: 1, maximumPacket: 4_096, log: log) { service in
            let good = try RoomClient(port: service.server.port)
            try good.enter(1)
            let bad = try RoomClient(port: service.server.port)
            try bad.enter(1)
            try bad.socket.send(packet)
            #expect(try bad.socket.receiveUntilEOF(limit: 0).isEmpty, "closed: \(reason)")
            #expect(eventually { service.server.statistics.protocolErrors == 1 })
            try good.chat(Array("still here".utf8))
            #expect(try good.readChat().payload == Array("still here".utf8))
            #expect(service.server.connectionCount == 1)
        }
        #expect(log.values.contains { $0.hasSuffix(reason) }, "logged: \(log.values)")
    }
}
