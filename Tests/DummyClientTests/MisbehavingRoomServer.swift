import Reactor
import Rooms

/// A small room server that speaks the protocol and breaks one guarantee on
/// purpose, so the tests can see `dummy-client room` catch it. One loop only:
/// every member's handler and the shared rooms live on that loop's thread.
enum RoomFault: String, CaseIterable, Sendable {
    /// None: a correct server (the control).
    case none
    /// Every `period`-th broadcast: one byte of a victim's copy flipped.
    case corrupt
    /// Every `period`-th broadcast: a victim's copy held back and delivered after the next one.
    case reorder
    /// Every `period`-th broadcast: also delivered to a member of another room.
    case misroute
    /// Every `period`-th broadcast: a victim gets two copies.
    case duplicate
    /// Every `period`-th broadcast: a victim gets none.
    case drop
    /// From the `period`-th broadcast on, a victim gets nothing more: no
    /// later delivery shows a gap, only the end of the run can.
    case dropTail
    /// The first member to enter gets an S_CHAT before its S_ENTER.
    case chatBeforeEnter
}

/// The rooms of a `MisbehavingRoomMember` server.
///
/// `@unchecked Sendable`: the server runs one loop, and only that loop's
/// thread touches this state (the tests check `loops: 1`).
final class MisbehavingRooms: @unchecked Sendable {
    let fault: RoomFault
    let period = 50
    var rooms: [UInt32: [MisbehavingRoomMember]] = [:]
    var nextID: UInt32 = 100
    var broadcasts = 0
    var sentEarlyChat = false
    /// Drop tail: the member that gets nothing more.
    var silenced: MisbehavingRoomMember?
    /// Reorder: the victim and the copy held back for it.
    var held: (member: MisbehavingRoomMember, packet: [UInt8])?

    init(fault: RoomFault) { self.fault = fault }

    func broadcast(from sender: MisbehavingRoomMember, payload: UnsafeRawBufferPointer, room: UInt32) {
        let members = rooms[room] ?? []
        var packet = [UInt8](repeating: 0, count: RoomPacket.headerSize + 4 + payload.count)
        packet.withUnsafeMutableBytes { bytes in
            RoomPacket.writeHeader(.serverChat, size: bytes.count, into: bytes)
            bytes.storeBytes(of: sender.id.littleEndian, toByteOffset: RoomPacket.headerSize, as: UInt32.self)
            UnsafeMutableRawBufferPointer(rebasing: bytes[(RoomPacket.headerSize + 4)...]).copyMemory(from: payload)
        }
        broadcasts += 1
        let faulty = fault != .none && broadcasts % period == 0
        let victim = faulty ? members.first { $0 !== sender } : nil
        if fault == .dropTail, silenced == nil { silenced = victim }
        for member in members where member !== silenced {
            guard member === victim else {
                member.connection?.write(packet)
                if let held, held.member === member { // reorder: the held copy goes out after this newer one
                    self.held = nil
                    member.connection?.write(held.packet)
                }
                continue
            }
            switch fault {
            case .corrupt:
                var bad = packet
                bad[bad.count - 1] ^= 0x01
                member.connection?.write(bad)
            case .reorder where held == nil:
                held = (member, packet)
            case .duplicate:
                member.connection?.write(packet)
                member.connection?.write(packet)
            case .drop:
                break
            default:
                member.connection?.write(packet)
            }
        }
        if faulty, fault == .misroute,
           let other = rooms.first(where: { $0.key != room && !$0.value.isEmpty })?.value.first {
            other.connection?.write(packet)
        }
    }
}

final class MisbehavingRoomMember: ConnectionHandler {
    let id: UInt32
    private let rooms: MisbehavingRooms
    private let framer = LengthPrefixedFramer.packetHeader(maximumFrameSize: RoomPacket.maximumSize)
    private(set) var connection: Connection?
    private var room: UInt32?

    init(rooms: MisbehavingRooms) {
        self.rooms = rooms
        id = rooms.nextID
        rooms.nextID += 1
    }

    func connectionOpened(_ connection: Connection) { self.connection = connection }

    func connection(_ connection: Connection, received bytes: UnsafeRawBufferPointer) -> Int {
        framer.frames(in: bytes, of: connection) { packet in
            switch RoomPacket.request(from: packet) {
            case .success(.enter(let number)):
                if rooms.fault == .chatBeforeEnter, !rooms.sentEarlyChat {
                    rooms.sentEarlyChat = true
                    var early = [UInt8](repeating: 0, count: RoomPacket.headerSize + 4 + 16)
                    early.withUnsafeMutableBytes { RoomPacket.writeHeader(.serverChat, size: $0.count, into: $0) }
                    connection.write(early)
                }
                room = number
                rooms.rooms[number, default: []].append(self)
                let count = UInt32(rooms.rooms[number]!.count)
                connection.write(RoomPacket.fixed(.serverEnter, [number, id, count]))
            case .success(.chat(let payload)):
                if let room { rooms.broadcast(from: self, payload: payload, room: room) }
            case .success(.leave), .failure:
                connection.close()
            }
        }
    }

    func connectionClosed(_ connection: Connection, reason: CloseReason) {
        if let room { rooms.rooms[room]?.removeAll { $0 === self } }
        if rooms.held?.member === self { rooms.held = nil }
        if rooms.silenced === self { rooms.silenced = nil }
        self.connection = nil
    }
}
