import Reactor
import Synchronization

/// The rooms' state on one event loop: this loop is the job queue of the
/// rooms it owns (room id modulo the number of loops) and the home of its
/// own members.
///
/// - Owning a room means sequencing it: every C_CHAT of the room, from any
///   loop, is handed here and goes out from here in one order (guarantee 1),
///   and membership counts are kept here.
/// - A delivery to members on another loop goes into that loop's batch; a
///   batch leaves once per loop iteration, as one hop per target loop, not
///   one per member. Entry confirmations travel in the same batches, so a
///   member is added to its loop's delivery list exactly between the
///   broadcasts sequenced before and after its entry (guarantees 2 and 3).
///
/// @unchecked Sendable: everything here is touched only on `loop`'s thread,
/// except `peers`, written once before the loops start.
final class RoomLoop: @unchecked Sendable {
    let loop: EventLoop
    let index: Int
    /// Every loop's rooms, by loop index; set before the loops start.
    var peers: [RoomLoop] = []
    let counters = RoomCounters()
    /// Cuts every member's packets here: one framer per loop, not one per member.
    let framer: LengthPrefixedFramer
    private let log: @Sendable (String) -> Void

    /// The rooms this loop owns: their member counts and where the members live.
    private struct OwnedRoom {
        var members = 0
        /// Members per loop index, for the loops that have any.
        var membersByLoop: [Int: Int] = [:]
    }
    // @exclusivity(unchecked) on what every chat touches: only this loop's
    // thread does, never in overlapping accesses.
    @exclusivity(unchecked) private var owned: [UInt32: OwnedRoom] = [:]
    /// This loop's members of each room: whom a delivery here goes to.
    @exclusivity(unchecked) private var local: [UInt32: Set<Connection>] = [:]

    /// What an owner sends another loop, in order.
    enum Message {
        case chat(room: UInt32, packet: SharedBuffer)
        case entered(room: UInt32, member: RoomMember, members: Int)
    }
    @exclusivity(unchecked) private var outgoing: [[Message]] = []
    @exclusivity(unchecked) private var flushScheduled = false

    init(loop: EventLoop, index: Int, framer: LengthPrefixedFramer, log: @escaping @Sendable (String) -> Void) {
        self.loop = loop
        self.index = index
        self.framer = framer
        self.log = log
    }

    func attach(_ peers: [RoomLoop]) {
        self.peers = peers
        outgoing = Array(repeating: [], count: peers.count)
    }

    func owner(of room: UInt32) -> RoomLoop { peers[Int(room % UInt32(peers.count))] }

    /// What a member's loop asks of a room's owner.
    private enum OwnerRequest {
        case admit(RoomMember, room: UInt32, home: Int)
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

    func enter(_ member: RoomMember, room: UInt32) {
        ask(ownerOf: room, .admit(member, room: room, home: index))
    }

    func chat(_ packet: SharedBuffer, room: UInt32) {
        counters.broadcasts.add(1, ordering: .relaxed)
        ask(ownerOf: room, .broadcast(packet, room: room))
    }

    /// A member leaves `room`, or a connection is gone whose entry the owner may still confirm.
    func leave(_ member: RoomMember, room: UInt32) {
        local[room]?.remove(member.connection)
        if local[room]?.isEmpty == true { local[room] = nil }
        ask(ownerOf: room, .release(room: room, home: index))
    }

    // MARK: As the owner of a room

    private func admit(_ member: RoomMember, to room: UInt32, from home: Int) {
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

    private func receive(_ message: Message) {
        switch message {
        case .chat(let room, let packet):
            guard let members = local[room] else { return }
            for connection in members where !connection.enqueue(packet) { disconnectSlow(connection) }
            counters.deliveries.add(UInt64(members.count), ordering: .relaxed)
        case .entered(let room, let member, let members):
            guard member.confirmEntry(to: room, members: members) else { return }
            local[room, default: []].insert(member.connection)
        }
    }

    /// Deliveries are enqueued, not written: a member's deliveries of one
    /// loop iteration go out in one send after it. A member past the slow
    /// mark is disconnected: it costs at most the mark plus one packet, and
    /// the room goes on.
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
