/// Closes a loop's connections that have received nothing for `timeout`.
///
/// A lazy timing wheel: each connection sits in the slot of the tick its
/// deadline falls in, and a read only stores a timestamp. When a slot comes
/// due, connections whose deadline has since moved are re-filed; the rest are
/// closed. Cost: nothing per event, and per tick only the connections filed
/// there, whatever the total.
final class IdleTimeouts {
    /// The timeout and the wheel's tick, in loop ticks (`EventLoop.tick`, about 1 ms).
    let timeout: UInt32
    private let tick: UInt32
    /// Connection IDs (8 bytes each, not 16-byte handles: the loop is implied).
    private var slots: [[Connection.ID]]
    /// The slot swept next, and the loop tick at which its turn began.
    private var cursor = 0
    private var cursorStart: UInt32
    private unowned(unsafe) let loop: EventLoop // the loop owns this wheel

    init(timeout: Duration, loop: EventLoop) {
        precondition(timeout <= .seconds(86_400 * 7), "idle timeout over a week")
        self.timeout = max(EventLoop.tick(timeout.nanoseconds), 1)
        // Eight wheel ticks per timeout, no finer than ~10 ms: closes at most 1/8 of the timeout late.
        self.tick = max(self.timeout / 8, 10)
        self.slots = Array(repeating: [], count: Int(self.timeout / tick) + 2)
        self.loop = loop
        self.cursorStart = EventLoop.tick(monotonicNanoseconds())
        scheduleSweep()
    }

    func track(_ connection: Connection) {
        file(connection.id, remaining: timeout)
    }

    /// Files into the slot `remaining` loop ticks ahead, never the slot being
    /// swept (it must not receive what it should see again). Relative times
    /// keep this right when the 32-bit tick counter wraps (every ~50 days).
    private func file(_ id: Connection.ID, remaining: UInt32) {
        let due = (cursor + Int(max(remaining / tick, 1))) % slots.count
        slots[due].append(id)
    }

    private func scheduleSweep() {
        loop.scheduleOnLoop(after: .nanoseconds(Int64(tick) << 20)) { [self] in sweep() }
    }

    private func sweep() {
        let now = EventLoop.tick(monotonicNanoseconds())
        var turns = 0
        while now &- cursorStart >= tick {
            let due = slots[cursor]
            slots[cursor] = []
            cursor = (cursor + 1) % slots.count
            cursorStart &+= tick
            for id in due {
                let connection = Connection(loop: loop, id: id)
                guard let lastActivity = connection.lastActivity else { continue } // closed
                let idle = now &- lastActivity
                if idle >= timeout {
                    connection.close(reason: .idleTimeout, on: loop)
                } else {
                    file(id, remaining: timeout - idle)
                }
            }
            turns += 1
            if turns == slots.count { cursorStart = now } // stalled a whole turn: every slot seen once
        }
        scheduleSweep()
    }
}
