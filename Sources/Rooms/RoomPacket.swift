import Reactor

/// The room protocol's packets (`../shared/protocols/room.md`): the course's
/// 4-byte `PacketHeader` (u16 LE size counting the header, u16 LE id), then a
/// body per kind. Shared by `room-server` and `dummy-client room`.
public enum RoomPacket {
    public static let headerSize = 4
    /// The largest packet the header can describe.
    public static let maximumSize = Int(UInt16.max)
    /// A chat payload as large as fits: the header and S_CHAT's sender field take 8 bytes.
    public static let maximumChatPayload = maximumSize - headerSize - 4

    public enum Kind: UInt16, Sendable {
        case clientEnter = 1
        case serverEnter = 2
        case clientChat = 3
        case serverChat = 4
        case clientLeave = 5
        case serverLeave = 6
    }

    /// Writes a header for a packet of `size` bytes (header included) at the start of `bytes`.
    public static func writeHeader(_ kind: Kind, size: Int, into bytes: UnsafeMutableRawBufferPointer) {
        precondition(size >= headerSize && size <= maximumSize && bytes.count >= headerSize)
        bytes.storeBytes(of: UInt16(size).littleEndian, toByteOffset: 0, as: UInt16.self)
        bytes.storeBytes(of: kind.rawValue.littleEndian, toByteOffset: 2, as: UInt16.self)
    }

    /// A packet whose body is `fields`, each a u32 LE (C_ENTER, S_ENTER, S_LEAVE, C_LEAVE).
    public static func fixed(_ kind: Kind, _ fields: [UInt32]) -> [UInt8] {
        var packet = [UInt8](repeating: 0, count: headerSize + 4 * fields.count)
        packet.withUnsafeMutableBytes { bytes in
            writeHeader(kind, size: bytes.count, into: bytes)
            for (index, field) in fields.enumerated() {
                bytes.storeBytes(of: field.littleEndian, toByteOffset: headerSize + 4 * index, as: UInt32.self)
            }
        }
        return packet
    }

    /// An S_CHAT from `sender` carrying `payload`, built once for every member: one allocation.
    public static func serverChat(from sender: UInt32, payload: UnsafeRawBufferPointer) -> SharedBuffer {
        SharedBuffer(count: headerSize + 4 + payload.count) { bytes in
            writeHeader(.serverChat, size: bytes.count, into: bytes)
            bytes.storeBytes(of: sender.littleEndian, toByteOffset: headerSize, as: UInt32.self)
            UnsafeMutableRawBufferPointer(rebasing: bytes[(headerSize + 4)...]).copyMemory(from: payload)
        }
    }

    /// What a client asked for, from one whole packet.
    public enum Request: Equatable {
        case enter(room: UInt32)
        case chat(payload: UnsafeRawBufferPointer)
        case leave

        public static func == (lhs: Request, rhs: Request) -> Bool {
            switch (lhs, rhs) {
            case let (.enter(a), .enter(b)): a == b
            case let (.chat(a), .chat(b)): a.elementsEqual(b)
            case (.leave, .leave): true
            default: false
            }
        }
    }

    /// Reads a whole client packet (its size already checked by the framer);
    /// a kind the server does not take, or a body of the wrong length, is a
    /// protocol error whose text names it.
    public static func request(from packet: UnsafeRawBufferPointer) -> Result<Request, RoomProtocolError> {
        let id = UInt16(littleEndian: packet.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
        let body = UnsafeRawBufferPointer(rebasing: packet[headerSize...])
        switch Kind(rawValue: id) {
        case .clientEnter:
            guard body.count == 4 else { return .failure(RoomProtocolError("C_ENTER with a \(body.count) B body (4 B expected)")) }
            return .success(.enter(room: UInt32(littleEndian: body.loadUnaligned(as: UInt32.self))))
        case .clientChat:
            return .success(.chat(payload: body))
        case .clientLeave:
            guard body.isEmpty else { return .failure(RoomProtocolError("C_LEAVE with a \(body.count) B body (empty expected)")) }
            return .success(.leave)
        case .serverEnter, .serverChat, .serverLeave, nil:
            return .failure(RoomProtocolError("packet id \(id) is not a client packet"))
        }
    }
}

/// Why a client packet was refused: the text is the logged close reason.
public struct RoomProtocolError: Error, Equatable, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}
