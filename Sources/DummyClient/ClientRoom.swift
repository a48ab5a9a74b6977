/// One room as the client sees it, on the loop that holds all its members:
/// who is in it (member ids from their S_ENTERs) and the order its
/// deliveries must come in.
///
/// The order check: the room keeps a log of (sender, sequence), one entry
/// per position; the first member to reach a position writes it, every
/// other member's delivery at that position must equal it. A member whose
/// order diverged is counted once and checked no further for order (its
/// sequence numbers still are). The log's prefix is dropped once every member
/// still checked has passed it, so memory stays bounded by what is in flight.
final class ClientRoom {
    let number: UInt32
    /// By slot: the member connections of this room.
    var members: [RoomMemberConnection] = []
    /// Member id (from S_ENTER) to slot.
    private(set) var slots: [UInt32: Int] = [:]
    private var log: [UInt64] = []
    /// The position of `log[0]`.
    private var base = 0
    private var trimAt = ClientRoom.minimumTrim
    private static let minimumTrim = 4096
    /// By sender slot, from the end of the run: the chats every member must
    /// still get, all that sender sent (0 for one that was no longer in the
    /// room then: what it sent may not all have reached the server).
    private(set) var due: [UInt64] = []
    /// Members that got every chat due by the end.
    var completed = 0

    init(number: UInt32) { self.number = number }

    /// The run ends: nothing is sent from now on, so what each member must
    /// still receive is fixed.
    func finish() {
        due = members.map { $0.isSending ? $0.sent : 0 }
    }

    /// A member's S_ENTER gave its id; false when another member of this room has it already.
    func register(_ id: UInt32, slot: Int) -> Bool {
        if let other = slots[id], other != slot { return false }
        slots[id] = slot
        return true
    }

    @inline(__always)
    func slot(of sender: UInt32) -> Int? { slots[sender] }

    static func entry(slot: Int, sequence: UInt64) -> UInt64 { UInt64(slot) << 44 | (sequence & (1 << 44 - 1)) }

    /// What a member found at `position`: nil when it is the room's entry (or
    /// the first there); otherwise the room's entry, for the message.
    @inline(__always)
    func check(_ entry: UInt64, at position: Int) -> UInt64? {
        let index = position - base
        if index == log.count {
            log.append(entry)
            if log.count >= trimAt { trim() }
            return nil
        }
        precondition(index >= 0 && index < log.count, "room log position \(position) outside \(base)..<\(base + log.count)")
        return log[index] == entry ? nil : log[index]
    }

    /// Drops the entries every member still checked has passed.
    private func trim() {
        var lowest = base + log.count
        for member in members where member.checksOrder { lowest = min(lowest, member.position) }
        let drop = lowest - base
        if drop > 0 {
            log.removeFirst(drop)
            base = lowest
        }
        trimAt = max(Self.minimumTrim, 2 * log.count)
    }

    /// Describes entry `entry` for a message: "sender 12's #5".
    func describe(_ entry: UInt64) -> String {
        let slot = Int(entry >> 44)
        let sequence = entry & (1 << 44 - 1)
        let id = slot < members.count ? members[slot].memberID : 0
        return "sender \(id)'s #\(sequence)"
    }
}
