import Reactor

/// One client of the room server: its connection's handler, on its loop.
///
/// A C_ENTER waits for the room's owner to count the member in (S_ENTER
/// carries the count): until then the member's reading is paused and its
/// later packets stay unconsumed, so every answer goes out in the order of
/// the requests; they are offered again when the entry is confirmed.
///
/// @unchecked Sendable: it travels to the owning loop and back inside a
/// hop, but only its own loop's thread reads or changes its state.
final class RoomMember: ConnectionHandler, @unchecked Sendable {
    let id: UInt32
    private let home: RoomLoop
    private(set) var connection: Connection!
    /// The room it is in, or is entering (`entering`).
    private var room: UInt32?
    private var entering = false

    init(id: UInt32, home: RoomLoop) {
        self.id = id
        self.home = home
    }

    func connectionOpened(_ connection: Connection) {
        self.connection = connection
    }

    func connection(_ connection: Connection, received bytes: UnsafeRawBufferPointer) -> Int {
        var waitingFrom: Int?
        let consumed = home.framer.frames(in: bytes, of: connection) { packet in
            guard waitingFrom == nil, !connection.isClosed else { return }
            handle(packet)
            if entering { waitingFrom = packet.baseAddress! - bytes.baseAddress! + packet.count }
        }
        return waitingFrom ?? consumed
    }

    private func handle(_ packet: UnsafeRawBufferPointer) {
        switch RoomPacket.request(from: packet) {
        case .failure(let error):
            connection.close(reason: .protocolError(error.description))
        case .success(.enter(let newRoom)):
            leaveRoom()
            room = newRoom
            entering = true
            connection.pauseReading()
            home.enter(self, room: newRoom)
        case .success(.chat(let payload)):
            guard let room else { return drop() }
            home.chat(RoomPacket.serverChat(from: id, payload: payload), room: room)
        case .success(.leave):
            guard room != nil else { return drop() }
            leaveRoom()
        }
    }

    private func drop() {
        home.counters.dropped.add(1, ordering: .relaxed)
    }

    /// Leaves the current room, answering S_LEAVE (not while still entering:
    /// reading is paused then, so no request can come).
    private func leaveRoom() {
        guard let room else { return }
        self.room = nil
        home.leave(self, room: room)
        connection.write(RoomPacket.fixed(.serverLeave, [room]))
    }

    /// The owner counted this member into `room`: answer S_ENTER and read
    /// on. False when the connection is gone meanwhile.
    func confirmEntry(to room: UInt32, members: Int) -> Bool {
        guard entering, self.room == room, !connection.isClosed else { return false }
        entering = false
        connection.write(RoomPacket.fixed(.serverEnter, [room, id, UInt32(truncatingIfNeeded: members)]))
        connection.resumeReading()
        return true
    }

    func connectionWritabilityChanged(_ connection: Connection, isWritable: Bool) {
        if !isWritable { home.disconnectSlow(connection) }
    }

    func connectionClosed(_ connection: Connection, reason: CloseReason) {
        if reason.isProtocolError { home.noteProtocolError(connection, reason) }
        if let room { home.leave(self, room: room) }
        room = nil
    }
}
