import Reactor

/// A member's side of the protocol: the loop's rooms are the handler of
/// every connection on the loop, and a member's state is its entry in
/// `members`.
///
/// A C_ENTER waits for the room's owner to count the member in (S_ENTER
/// carries the count): until then the member's reading is paused and its
/// later packets stay unconsumed, so every answer goes out in the order of
/// the requests; they are offered again when the entry is confirmed.
extension RoomLoop: ConnectionHandler {
    func connectionOpened(_ connection: Connection) {
        members.opened(connection, id: makeMemberID())
    }

    func connection(_ connection: Connection, received bytes: UnsafeRawBufferPointer) -> Int {
        var waitingFrom: Int?
        let consumed = framer.frames(in: bytes, of: connection) { packet in
            guard waitingFrom == nil, !connection.isClosed else { return }
            handle(packet, from: connection)
            if members[connection].status == .entering {
                waitingFrom = packet.baseAddress! - bytes.baseAddress! + packet.count
            }
        }
        return waitingFrom ?? consumed
    }

    private func handle(_ packet: UnsafeRawBufferPointer, from member: Connection) {
        switch RoomPacket.request(from: packet) {
        case .failure(let error):
            member.close(reason: .protocolError(error.description))
        case .success(.enter(let room)):
            leaveRoom(member)
            members[member].room = room
            members[member].status = .entering
            member.pauseReading()
            enter(member, room: room)
        case .success(.chat(let payload)):
            guard members[member].status == .inside else { return drop() }
            chat(RoomPacket.serverChat(from: members[member].id, payload: payload), room: members[member].room)
        case .success(.leave):
            guard members[member].status == .inside else { return drop() }
            leaveRoom(member)
        }
    }

    private func drop() {
        counters.dropped.add(1, ordering: .relaxed)
    }

    /// Leaves the current room, answering S_LEAVE (not while still entering:
    /// reading is paused then, so no request can come).
    private func leaveRoom(_ member: Connection) {
        guard members[member].status == .inside else { return }
        let room = members[member].room
        leave(member, room: room)
        member.write(RoomPacket.fixed(.serverLeave, [room]))
    }

    /// The owner counted `member` into `room`: answer S_ENTER and read on.
    /// False when the connection is gone meanwhile, or is no longer entering it.
    func confirmEntry(of member: Connection, to room: UInt32, members count: Int) -> Bool {
        guard !member.isClosed, members[member].status == .entering, members[member].room == room else { return false }
        member.write(RoomPacket.fixed(.serverEnter, [room, members[member].id, UInt32(truncatingIfNeeded: count)]))
        member.resumeReading()
        return true
    }

    func connectionWritabilityChanged(_ connection: Connection, isWritable: Bool) {
        if !isWritable { disconnectSlow(connection) }
    }

    func connectionClosed(_ connection: Connection, reason: CloseReason) {
        if reason.isProtocolError { noteProtocolError(connection, reason) }
        if members[connection].status != .outside { leave(connection, room: members[connection].room) }
    }
}
