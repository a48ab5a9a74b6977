import Rooms

/// A room-mode chat payload, every byte checkable by every receiver:
///
/// | offset | field |
/// | --- | --- |
/// | 0 | sender's sequence number, u64 LE (0, 1, 2, ... per member) |
/// | 8 | send time, u64 LE (monotonic ns; the intended time in open loop) |
/// | 16 | filler: `Pattern.flood()` bytes from a phase derived from (sender, sequence, send time) |
///
/// The filler depends on the header fields too, so a flipped bit anywhere
/// (the time included) shows as a mismatch; nothing is generated per chat.
enum RoomChat {
    static let fieldsSize = 16
    /// The C_CHAT's header and fields, written with the filler in one gathering send.
    static let prefixSize = RoomPacket.headerSize + fieldsSize

    static func fillerPhase(sender: UInt32, sequence: UInt64, time: UInt64, pattern: Pattern) -> Int {
        var mix = UInt64(sender) &* 0x9E37_79B9_7F4A_7C15
        mix ^= sequence &* 0xC2B2_AE3D_27D4_EB4F
        mix ^= time &* 0x1656_67B1_9E37_79F9
        mix ^= mix >> 29
        return Int(mix % UInt64(pattern.period))
    }

    /// The C_CHAT's first `prefixSize` bytes (header, sequence, time) into `prefix`.
    static func writePrefix(size: Int, sequence: UInt64, time: UInt64, into prefix: UnsafeMutableRawBufferPointer) {
        RoomPacket.writeHeader(.clientChat, size: RoomPacket.headerSize + size, into: prefix)
        prefix.storeBytes(of: sequence.littleEndian, toByteOffset: RoomPacket.headerSize, as: UInt64.self)
        prefix.storeBytes(of: time.littleEndian, toByteOffset: RoomPacket.headerSize + 8, as: UInt64.self)
    }

    /// The payload's fields; nil when it is too short to hold them.
    static func fields(of payload: UnsafeRawBufferPointer) -> (sequence: UInt64, time: UInt64)? {
        guard payload.count >= fieldsSize else { return nil }
        return (UInt64(littleEndian: payload.loadUnaligned(fromByteOffset: 0, as: UInt64.self)),
                UInt64(littleEndian: payload.loadUnaligned(fromByteOffset: 8, as: UInt64.self)))
    }
}

/// What the room checks count, one kind each (the JSON's `errors` keys).
enum RoomViolation: Int, CaseIterable, Sendable {
    /// An S_CHAT before the member's own S_ENTER (guarantee 3).
    case chatBeforeEnter
    /// An S_CHAT whose sender is not a member of the receiver's room (guarantee 2).
    case foreignSender
    /// A payload of the wrong size, a changed byte, or an impossible send time (guarantee 2).
    case payload
    /// A sender's sequence number skipped ahead: deliveries lost (guarantees 1 and 2).
    case gap
    /// A sender's sequence number again or back: duplicated or reordered (guarantees 1 and 2).
    case duplicate
    /// A member's k-th delivery differs from the room's k-th (guarantee 1).
    case order
    /// A malformed or unexpected server packet (a bad S_ENTER, an unknown id, a framing error).
    case badPacket

    var key: String {
        switch self {
        case .chatBeforeEnter: "chat_before_enter"
        case .foreignSender: "foreign_sender"
        case .payload: "payload"
        case .gap: "gap"
        case .duplicate: "duplicate"
        case .order: "order"
        case .badPacket: "bad_packet"
        }
    }

    var label: String {
        switch self {
        case .chatBeforeEnter: "S_CHAT before S_ENTER"
        case .foreignSender: "foreign sender"
        case .payload: "payload"
        case .gap: "gap"
        case .duplicate: "duplicate or late"
        case .order: "room order"
        case .badPacket: "bad packet"
        }
    }
}
