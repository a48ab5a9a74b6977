import Reactor

// The README's handler examples, verbatim, so that they compile and are
// tested (ReadmeExamplesTests).

/// The course's packets: `struct PacketHeader { u16 size; u16 id }`, then the
/// body. Each packet is answered with the same body and id + 1: header and
/// body in one gathering send.
final class PacketEchoHandler: ConnectionHandler, Sendable {
    let framer = LengthPrefixedFramer.packetHeader(maximumFrameSize: 4_096)

    func connection(_ connection: Connection, received bytes: UnsafeRawBufferPointer) -> Int {
        framer.frames(in: bytes, of: connection) { packet in
            let id = UInt16(littleEndian: packet.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
            let header = [UInt16(packet.count).littleEndian, (id &+ 1).littleEndian]
            header.withUnsafeBytes { connection.write($0, UnsafeRawBufferPointer(rebasing: packet[4...])) }
        }
    }
}

/// Every line a member sends goes to every member, itself included: built
/// once as a shared buffer, written to all without a copy per member.
final class ChatRoom: ConnectionHandler, @unchecked Sendable {
    // @unchecked Sendable: the room serves a one-loop server, so everything
    // here runs on that loop's thread.
    private let framer = LineFramer(maximumLineLength: 1_024)
    private var members: Set<Connection> = []

    func connectionOpened(_ connection: Connection) { members.insert(connection) }
    func connectionClosed(_ connection: Connection, reason: CloseReason) { members.remove(connection) }

    func connection(_ connection: Connection, received bytes: UnsafeRawBufferPointer) -> Int {
        framer.frames(in: bytes, of: connection) { line in
            let message = SharedBuffer(count: line.count + 1) { buffer in
                buffer.copyMemory(from: line)
                buffer[line.count] = UInt8(ascii: "\n")
            }
            for member in members { member.write(message) }
        }
    }
}
