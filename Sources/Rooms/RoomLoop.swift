import Reactor
import Synchronization

/// The rooms' state on one event loop, and the handler of every connection
/// on it: this loop is the job queue of the rooms it owns (room id modulo
/// the number of loops) and the home of its own members.
///
/// - Owning a room means sequencing it: every C_CHAT of the room, from any
///   loop, is handed here and goes out from here in one order (guarantee 1),
///   and membership counts are kept here.
/// - A delivery to members on another loop goes into that loop's batch; a
///   batch leaves once per loop iteration, as one hop per target loop, not
///   one per member. Entry confirmations travel in the same batches, so a
///   member is added to its loop's delivery list exactly between the
///   broadcasts sequenced before and after its entry (guarantees 2 and 3).
/// - A member is an entry in `members` and one in its room's list here:
///   no object of its own (see `RoomMemberHandler.swift` for its packets).
///
/// @unchecked Sendable: everything here is touched only on `loop`'s thread,
/// except `peers` and `loop`, set once in `attach` before the loops start.
final class RoomLoop: @unchecked Sendable {
    let index: Int
    private(set) var loop: EventLoop!
    /// Every loop's rooms, by loop index.
    private(set) var peers: [RoomLoop] = []
    let counters = RoomCounters()
    /// Cuts every member's packets here: one framer per loop, not one per member.
    let framer: LengthPrefixedFramer
    private let log: @Sendable (String) -> Void

    // @exclusivity(unchecked) on what every chat touches: only this loop's
    // thread does, never in overlapping accesses.
    @exclusivity(unchecked) var members = MemberTable()
    /// The next member id made here: this loop's index plus a multiple of
    /// the number of loops, so no two loops make the same one (ids wrap
    /// after 2^32 of them).
    @exclusivity(unchecked) private var nextMemberID: UInt32

    /// The rooms this loop owns: their member counts and where the members live.
    private struct OwnedRoom {
        var members = 0
        /// Members per loop index, for the loops that have any.
        var membersByLoop: [Int: Int] = [:]
    }
    @exclusivity(unchecked) private var owned: [UInt32: OwnedRoom] = [:]
    /// This loop's members of each room, whom a delivery here goes to; a
    /// member's index here is its `position`.
    @exclusivity(unchecked) private var local: [UInt32: [Connection]] = [:]

    /// What an owner sends another loop, in order.
    enum Message {
        case chat(room: UInt32, packet: SharedBuffer)
        case entered(room: UInt32, member: Connection, members: Int)
    }
    @exclusivity(unchecked) private var outgoing: [[Message]] = []
    @exclusivity(unchecked) private var flushScheduled = false

    init(index: Int, framer: LengthPrefixedFramer, log: @escaping @Sendable (String) -> Void) {
        self.index = index
        self.framer = framer
        self.log = log
        nextMemberID = UInt32(index)
    }

    /// Before the loops start: the loop this serves, and every loop's rooms.
    func attach(to loop: EventLoop, peers: [RoomLoop]) {
        self.loop = loop
        self.peers = peers
        outgoing = Array(repeating: [], count: peers.count)
    }

    func makeMemberID() -> UInt32 {
        nextMemberID &+= UInt32(truncatingIfNeeded: peers.count)
        return nextMemberID
    }

    func owner(of room: UInt32) -> RoomLoop { peers[Int(room % UInt32(peers.count))] }

    /// What a member's loop asks of a room's owner.
    private enum OwnerRequest {
        case admit(Connection, room: UInt32, home: Int)
        case broadcast(SharedBuffer, room: UInt32)
        case release(room: UInt32, home: Int)
    }

    /// Hands `request` to the owner of `room`: at once when that is this
    /// loop (nothing allocated), else as a task on the owner's loop.
    private func ask(ownerOf room: UInt32, _ request: OwnerRequest) {
        let owner = owner(of: room)
        if owner === self { owner.handle(request) } else { owner.loop.execute { owner.handle(request) } }
    }

    private func handle(_ request: OwnerRequest) {
        switch request {
        case .admit(let member, let room, let home): admit(member, to: room, from: home)
        case .broadcast(let packet, let room): broadcast(packet, in: room)
        case .release(let room, let home): release(room, from: home)
        }
    }

    // MARK: Requests from this loop's members

    func enter(_ member: Connection, room: UInt32) {
        ask(ownerOf: room, .admit(member, room: room, home: index))
    }

    func chat(_ packet: SharedBuffer, room: UInt32) {
        counters.broadcasts.add(1, ordering: .relaxed)
        ask(ownerOf: room, .broadcast(packet, room: room))
    }

    /// A member leaves `room`, or a connection is gone whose entry the owner may still confirm.
    func leave(_ member: Connection, room: UInt32) {
        if members[member].status == .inside { removeFromList(member, room: room) }
        members[member].status = .outside
        ask(ownerOf: room, .release(room: room, home: index))
    }

    private func removeFromList(_ member: Connection, room: UInt32) {
        let position = Int(members[member].position)
        let last = local[room]!.removeLast()
        if last != member {
            local[room]![position] = last
            members[last].position = UInt32(position)
        }
        if local[room]!.isEmpty { local[room] = nil }
    }

    // MARK: As the owner of a room

    private func admit(_ member: Connection, to room: UInt32, from home: Int) {
        var state = owned[room, default: OwnedRoom()]
        state.members += 1
        state.membersByLoop[home, default: 0] += 1
        owned[room] = state
        send(.entered(room: room, member: member, members: state.members), to: home)
    }

    private func broadcast(_ packet: SharedBuffer, in room: UInt32) {
        guard let state = owned[room] else { return } // its last member left meanwhile
        for home in state.membersByLoop.keys { send(.chat(room: room, packet: packet), to: home) }
    }

    private func release(_ room: UInt32, from home: Int) {
        guard var state = owned[room] else { return }
        state.members -= 1
        state.membersByLoop[home, default: 1] -= 1
        if state.membersByLoop[home] == 0 { state.membersByLoop[home] = nil }
        owned[room] = state.members > 0 ? state : nil
    }

    /// This loop's part is done at once; another loop's joins its batch.
    private func send(_ message: Message, to home: Int) {
        guard home != index else { return receive(message) }
        outgoing[home].append(message)
        guard !flushScheduled else { return }
        flushScheduled = true
        loop.execute { [self] in flush() } // after what this iteration sequences
    }

    private func flush() {
        flushScheduled = false
        for home in outgoing.indices where !outgoing[home].isEmpty {
            let batch = outgoing[home]
            outgoing[home].removeAll(keepingCapacity: true)
            let target = peers[home]
            target.loop.execute { for message in batch { target.receive(message) } }
        }
    }

    // MARK: Deliveries to this loop's members

    /// Deliveries are enqueued, not written: a member's deliveries of one
    /// loop iteration go out in one send after it. A member past the slow
    /// mark is disconnected: it costs at most the mark plus one packet, and
    /// the room goes on.
    private func receive(_ message: Message) {
        switch message {
        case .chat(let room, let packet):
            guard let list = local[room] else { return }
            loop.enqueue(packet, to: list) { disconnectSlow($0) }
            counters.deliveries.add(UInt64(list.count), ordering: .relaxed)
        case .entered(let room, let member, let count):
            guard confirmEntry(of: member, to: room, members: count) else { return }
            members[member].position = UInt32(local[room]?.count ?? 0)
            members[member].status = .inside
            local[room, default: []].append(member)
        }
    }

    func disconnectSlow(_ connection: Connection) {
        let pending = connection.pendingOutputBytes
        counters.slowMembers.add(1, ordering: .relaxed)
        log("fd \(connection.fd): slow member disconnected with \(pending) B pending")
        connection.close(reason: .slowPeer(pendingBytes: pending))
    }

    func noteProtocolError(_ connection: Connection, _ reason: CloseReason) {
        log("fd \(connection.fd): \(reason)")
    }
}

/// What the room loops count, readable from any thread (each loop writes only its own).
final class RoomCounters: Sendable {
    let broadcasts = Atomic<UInt64>(0)
    let deliveries = Atomic<UInt64>(0)
    let slowMembers = Atomic<UInt64>(0)
    /// C_CHAT or C_LEAVE from a connection in no room: dropped, unanswered.
    let dropped = Atomic<UInt64>(0)
}
