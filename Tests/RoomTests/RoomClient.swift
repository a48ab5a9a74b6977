import Reactor
import Rooms
import TestSupport

/// A blocking room-protocol client for tests: sends requests, reads whole packets.
final class RoomClient {
    let socket: BlockingClient

    init(port: UInt16, receiveBufferSize: Int32? = nil) throws {
        socket = try BlockingClient(port: port, receiveBufferSize: receiveBufferSize)
    }

    static func enterPacket(_ room: UInt32) -> [UInt8] { RoomPacket.fixed(.clientEnter, [room]) }
    static let leavePacket = RoomPacket.fixed(.clientLeave, [])

    static func chatPacket(_ payload: [UInt8]) -> [UInt8] {
        var packet = [UInt8](repeating: 0, count: RoomPacket.headerSize + payload.count)
        packet.withUnsafeMutableBytes { RoomPacket.writeHeader(.clientChat, size: $0.count, into: $0) }
        packet.replaceSubrange(RoomPacket.headerSize..., with: payload)
        return packet
    }

    /// Enters `room` and returns the S_ENTER's member id and count.
    @discardableResult
    func enter(_ room: UInt32) throws -> (member: UInt32, count: UInt32) {
        try socket.send(Self.enterPacket(room))
        let answer = try read()
        guard answer.kind == .serverEnter, answer.words.count == 3, answer.words[0] == room else {
            throw TestFailure("expected S_ENTER for room \(room), got \(answer)")
        }
        return (answer.words[1], answer.words[2])
    }

    func chat(_ payload: [UInt8]) throws { try socket.send(Self.chatPacket(payload)) }

    struct Packet: CustomStringConvertible {
        let kind: RoomPacket.Kind?
        let body: [UInt8]
        /// The body as u32 LE words (S_ENTER, S_LEAVE).
        var words: [UInt32] {
            stride(from: 0, to: body.count - body.count % 4, by: 4).map { offset in
                body[offset..<offset + 4].reversed().reduce(0) { $0 << 8 | UInt32($1) }
            }
        }
        /// S_CHAT: sender and payload.
        var chat: (sender: UInt32, payload: [UInt8])? {
            guard kind == .serverChat, body.count >= 4 else { return nil }
            return (words.first!, Array(body[4...]))
        }
        var description: String { "\(kind.map { "\($0)" } ?? "unknown") with \(body.count) B" }
    }

    func read() throws -> Packet {
        let header = try socket.receive(exactly: RoomPacket.headerSize)
        let size = Int(header[0]) | Int(header[1]) << 8
        let id = UInt16(header[2]) | UInt16(header[3]) << 8
        let body = try socket.receive(exactly: size - RoomPacket.headerSize)
        return Packet(kind: RoomPacket.Kind(rawValue: id), body: body)
    }

    func readChat() throws -> (sender: UInt32, payload: [UInt8]) {
        let packet = try read()
        guard let chat = packet.chat else { throw TestFailure("expected S_CHAT, got \(packet)") }
        return chat
    }
}
