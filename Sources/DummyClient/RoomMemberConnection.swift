import Reactor
import Rooms

/// One room member's connection, on its room's loop thread:
///
///     idle → connecting → entering → entered → finishing → closed
///
/// Connected, it sends C_ENTER and waits for S_ENTER (its member id). Once
/// every member has entered, the load starts: closed loop, it sends a chat
/// and the next once its own S_CHAT is back; open loop, the pacer says when
/// each is due. Every S_CHAT it receives is checked: S_ENTER came first, the
/// sender is a member of this room, the payload is byte for byte what that
/// sender sent with that sequence number, the sender's sequence numbers
/// arrive 0, 1, 2, ... and this member's k-th delivery is the room's k-th.
final class RoomMemberConnection: ConnectionHandler {
    enum State: UInt8 { case idle, connecting, entering, entered, finishing, closed }

    /// The worker owns its rooms and members and outlives them (Unmanaged: no retain per use).
    private let workerReference: Unmanaged<RoomWorker>
    @inline(__always) private var worker: RoomWorker { workerReference.takeUnretainedValue() }
    private unowned(unsafe) let room: ClientRoom
    /// This member's index in its room.
    let slot: Int
    /// Its index among the loop's members (the pacer's slot).
    let index: Int
    private let size: Int
    private let pattern: Pattern
    private let framer = LengthPrefixedFramer.packetHeader(maximumFrameSize: RoomPacket.maximumSize)
    private let openLoop: Bool
    private let roundPeriod: UInt64
    private let maxPendingOutput: Int

    @exclusivity(unchecked) private(set) var state = State.idle
    @exclusivity(unchecked) private var connection: Connection?
    private(set) var memberID: UInt32 = 0
    private var connectStartedAt: UInt64 = 0
    private var openedOnce = false
    private var settled = false
    /// The load has started for this member.
    @exclusivity(unchecked) private var running = false

    /// Chats sent; the next one's sequence number.
    @exclusivity(unchecked) private(set) var sent: UInt64 = 0
    /// By sender slot: the sequence number expected next.
    @exclusivity(unchecked) private var expected: [UInt64]
    /// Deliveries taken into the room's order check so far.
    @exclusivity(unchecked) private(set) var position = 0
    @exclusivity(unchecked) private var orderIntact = true
    /// It has closed its connection: what is left of the read is not its to check.
    private var closing = false
    /// From the end of the run: the room's chats (`ClientRoom.due`) it has yet to get.
    @exclusivity(unchecked) private var missing: UInt64 = 0
    /// Open loop: the intended time of chat 0, and chats due so far.
    @exclusivity(unchecked) private var firstIntendedAt: UInt64 = 0
    @exclusivity(unchecked) private var intended: UInt64 = 0

    init(worker: RoomWorker, room: ClientRoom, slot: Int, index: Int, membersInRoom: Int) {
        workerReference = .passUnretained(worker)
        self.room = room
        self.slot = slot
        self.index = index
        let configuration = worker.configuration
        size = configuration.size
        pattern = worker.pattern
        openLoop = configuration.mode == .open
        roundPeriod = configuration.roundPeriod
        maxPendingOutput = configuration.maxPendingOutput
        expected = [UInt64](repeating: 0, count: membersInRoom)
    }

    /// In the room and sending when the run ends.
    var isSending: Bool { state == .entered && !closing }
    /// Counts in the room's order check (and its log's trimming).
    var checksOrder: Bool { orderIntact && !closing && (state == .entered || state == .finishing) }
    private var name: String { "room \(room.number): member \(memberID)" }

    // MARK: Connecting and entering

    func connect(to address: SocketAddress) {
        guard state == .idle else { return }
        state = .connecting
        connectStartedAt = monotonicNanoseconds()
        let opened = worker.loop.connect(to: address, from: worker.configuration.sourceAddress, handler: self)
        if state == .connecting { connection = opened }
    }

    func connectionOpened(_ connection: Connection) {
        self.connection = connection
        openedOnce = true
        worker.connected()
        if state == .finishing { return connection.close() }
        state = .entering
        connection.write(RoomPacket.fixed(.clientEnter, [room.number]))
    }

    private func entered(_ body: UnsafeRawBufferPointer, at now: UInt64) {
        guard state == .entering, body.count == 12 else {
            return worker.violation(.badPacket, "\(name) got an S_ENTER with a \(body.count) B body while \(state)")
        }
        let roomNumber = UInt32(littleEndian: body.loadUnaligned(fromByteOffset: 0, as: UInt32.self))
        let id = UInt32(littleEndian: body.loadUnaligned(fromByteOffset: 4, as: UInt32.self))
        guard roomNumber == room.number else {
            return worker.violation(.badPacket, "room \(room.number): member \(id)'s S_ENTER names room \(roomNumber)")
        }
        memberID = id
        guard room.register(id, slot: slot) else {
            return worker.violation(.badPacket, "\(name): its S_ENTER gives an id another member of the room has")
        }
        state = .entered
        worker.entered(after: now - connectStartedAt)
        settle()
    }

    /// Ready (entered) or out (failed): once, for the start of the load.
    private func settle() {
        guard !settled else { return }
        settled = true
        worker.memberSettled()
    }

    /// The load starts: closed loop, the first chat goes out now.
    func beginLoad(at now: UInt64) {
        guard state == .entered else { return }
        running = true
        if !openLoop { sendChat(time: now, now: now) }
    }

    // MARK: Sending

    @inline(__always)
    private func sendChat(time: UInt64, now: UInt64) {
        guard let connection else { return }
        let sequence = sent
        sent &+= 1
        withUnsafeTemporaryAllocation(byteCount: RoomChat.prefixSize, alignment: 8) { prefix in
            RoomChat.writePrefix(size: size, sequence: sequence, time: time, into: prefix)
            let phase = RoomChat.fillerPhase(sender: memberID, sequence: sequence, time: time, pattern: pattern)
            connection.write(UnsafeRawBufferPointer(prefix),
                             pattern.bytes(phase: phase, offset: 0, count: size - RoomChat.fieldsSize))
        }
    }

    /// Open loop: chat `intended` of this member was due at `intendedAt`.
    @inline(__always)
    func chatDue(intendedAt: UInt64, now: UInt64) {
        guard running, state == .entered else { return }
        if intended == 0 { firstIntendedAt = intendedAt }
        intended &+= 1
        sendDueChats(at: now)
    }

    /// Open loop: sends every chat that is due, unless too much output is
    /// queued already; those go out later, still stamped with their intended time.
    @inline(__always)
    private func sendDueChats(at now: UInt64) {
        guard running, state == .entered, let connection else { return }
        while sent < intended, connection.pendingOutputBytes <= maxPendingOutput, !connection.isClosed {
            let intendedAt = firstIntendedAt &+ sent &* roundPeriod
            worker.sendLag(now >= intendedAt ? now - intendedAt : 0, at: now)
            sendChat(time: intendedAt, now: now)
        }
    }

    func connectionDrained(_ connection: Connection) {
        if openLoop { sendDueChats(at: monotonicNanoseconds()) }
    }

    // MARK: Receiving

    func connection(_ connection: Connection, received bytes: UnsafeRawBufferPointer) -> Int {
        let now = monotonicNanoseconds()
        let consumed = framer.frames(in: bytes, of: connection) { packet in
            guard state != .closed, !closing else { return }
            let id = UInt16(littleEndian: packet.loadUnaligned(fromByteOffset: 2, as: UInt16.self))
            let body = UnsafeRawBufferPointer(rebasing: packet[RoomPacket.headerSize...])
            switch RoomPacket.Kind(rawValue: id) {
            case .serverChat: received(body, at: now)
            case .serverEnter: entered(body, at: now)
            default:
                worker.violation(.badPacket, "\(name) got packet id \(id) (\(packet.count) B), which the load never asks for")
            }
        }
        if openLoop {
            worker.pacer?.poll(now: now) // send what fell due meanwhile, without waiting for the timer
            sendDueChats(at: now)
        }
        return consumed
    }

    @inline(__always)
    private func received(_ body: UnsafeRawBufferPointer, at now: UInt64) {
        guard state == .entered || state == .finishing else {
            return worker.violation(.chatBeforeEnter, "room \(room.number): a member got an S_CHAT before its S_ENTER")
        }
        guard body.count >= 4 else {
            return worker.violation(.badPacket, "\(name) got an S_CHAT with a \(body.count) B body")
        }
        let sender = UInt32(littleEndian: body.loadUnaligned(as: UInt32.self))
        let payload = UnsafeRawBufferPointer(rebasing: body[4...])
        worker.delivered(RoomPacket.headerSize + body.count, at: now)
        guard let senderSlot = room.slot(of: sender) else {
            return worker.violation(.foreignSender, "\(name) got an S_CHAT from sender \(sender), not a member of room \(room.number)")
        }
        guard let (sequence, time) = RoomChat.fields(of: payload) else {
            return worker.violation(.payload, "\(name) got a \(payload.count) B payload from sender \(sender) (\(size) B sent)")
        }
        if payload.count != size || time < worker.runStart || time > now
            || !pattern.matches(UnsafeRawBufferPointer(rebasing: payload[RoomChat.fieldsSize...]),
                                phase: RoomChat.fillerPhase(sender: sender, sequence: sequence, time: time, pattern: pattern),
                                offset: 0) {
            worker.violation(.payload, payloadProblem(payload, sender: sender, sequence: sequence, time: time, now: now))
        } else {
            worker.latency(now - time, at: now)
        }

        // Per sender: 0, 1, 2, ... with no gap and no repeat.
        let next = expected[senderSlot]
        defer { if state == .finishing { countTowardsTheEnd(sender: senderSlot, from: next) } }
        let fresh = sequence >= next
        if sequence == next {
            expected[senderSlot] = next &+ 1
        } else if sequence > next {
            worker.violation(.gap, "\(name) got sender \(sender)'s #\(sequence) after \(next == 0 ? "none" : "#\(next - 1)") (gap)")
            expected[senderSlot] = sequence &+ 1
        } else {
            worker.violation(.duplicate, "\(name) got sender \(sender)'s #\(sequence) after #\(next - 1) (duplicate or late)")
        }

        // The room's one order.
        if orderIntact {
            let entry = ClientRoom.entry(slot: senderSlot, sequence: sequence)
            if let roomEntry = room.check(entry, at: position) {
                orderIntact = false
                worker.violation(.order, """
                    \(name)'s delivery #\(position) is sender \(sender)'s #\(sequence), \
                    another member of the room got \(room.describe(roomEntry)) there (order)
                    """)
            } else {
                position += 1
            }
        }

        guard fresh, senderSlot == slot, sequence &+ 1 == sent else { return }
        // Its own chat came back.
        worker.broadcastCompleted(at: now)
        if state != .finishing, !openLoop, running { sendChat(time: now, now: now) }
    }

    /// While finishing: a delivery moved what is expected of `sender` on from
    /// `before`; once every chat due has come, the member closes.
    private func countTowardsTheEnd(sender: Int, from before: UInt64) {
        let due = room.due[sender]
        missing -= min(expected[sender], due) - min(before, due)
        if missing == 0, !closing { complete() }
    }

    private func complete() {
        room.completed += 1
        close()
    }

    /// Error path: what is wrong with a payload.
    private func payloadProblem(_ payload: UnsafeRawBufferPointer, sender: UInt32, sequence: UInt64, time: UInt64, now: UInt64) -> String {
        let what = "\(name) got sender \(sender)'s #\(sequence)"
        if payload.count != size { return "\(what) with a \(payload.count) B payload (\(size) B sent) (payload)" }
        if time < worker.runStart || time > now { return "\(what) stamped with a send time outside this run (payload)" }
        let filler = UnsafeRawBufferPointer(rebasing: payload[RoomChat.fieldsSize...])
        let phase = RoomChat.fillerPhase(sender: sender, sequence: sequence, time: time, pattern: pattern)
        let byte = pattern.firstMismatch(in: filler, phase: phase, offset: 0).map { $0.index + RoomChat.fieldsSize } ?? 0
        return "\(what) with payload byte \(byte) changed (payload)"
    }

    // MARK: Finishing

    /// Sends nothing more; closes once it has every chat the members of its
    /// room sent (`ClientRoom.due`), so deliveries lost at the very end are
    /// caught too.
    func finish() {
        switch state {
        case .idle:
            state = .closed
            settle()
            worker.memberEnded()
        case .connecting:
            state = .finishing // closed as soon as the connect completes
        case .entering:
            worker.notEntered("room \(room.number): a member had no S_ENTER by the end of the run")
            state = .finishing
            close()
        case .entered:
            state = .finishing
            missing = zip(room.due, expected).reduce(0) { $0 + ($1.0 > $1.1 ? $1.0 - $1.1 : 0) }
            if missing == 0 { complete() }
        case .finishing, .closed:
            break
        }
    }

    private func close() {
        closing = true
        connection?.close()
    }

    func connectionClosed(_ connection: Connection, reason: CloseReason) {
        let previous = state
        state = .closed
        self.connection = nil
        defer {
            settle()
            worker.memberEnded()
        }
        if previous == .connecting || (previous == .finishing && !openedOnce) {
            worker.connectFailed(previous == .finishing
                ? "connect \(worker.configuration.address): not established before the end of the run"
                : "\(reason)")
            return
        }
        worker.disconnected()
        if reason.isProtocolError {
            return worker.violation(.badPacket, "room \(room.number): member \(memberID)'s connection: \(reason)")
        }
        switch reason {
        case .local:
            break
        case .shutdown where previous == .finishing && missing > 0:
            // The drain ran out. If another member got everything, this one lost the rest.
            guard room.completed > 0 else { return worker.unfinished() }
            worker.violation(.gap, "\(name) never got \(missing) of the room's last chats, which \(room.completed) other members got (gap at the end)")
        case .shutdown:
            break
        case .reset:
            worker.countReset("room \(room.number): member \(memberID) reset by the server")
        default:
            if previous == .finishing, missing == 0 { break }
            worker.countDisconnect("room \(room.number): member \(memberID): \(reason) \(previous == .entering ? "before its S_ENTER" : "during the run")")
        }
    }
}
