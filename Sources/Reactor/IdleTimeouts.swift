/// Closes a loop's connections that have received nothing for `timeout`.
///
/// A lazy timing wheel: each connection sits in the slot of the tick its
/// deadline falls in, and a read only stores a timestamp. When a slot comes
/// due, connections whose deadline has since moved are re-filed; the rest are
/// closed. Cost: nothing per event, and per tick only the connections filed
/// there, whatever the total.
final class IdleTimeouts {
    let timeout: UInt64
    private let tick: UInt64
    private var slots: [[Connection]]
    private var nextTick: UInt64
    private unowned(unsafe) let loop: EventLoop // the loop owns this wheel

    init(timeout: Duration, loop: EventLoop) {
        self.timeout = max(timeout.nanoseconds, 1_000_000)
        // Eight ticks per timeout, no finer than 10 ms: closes within 1/8 of the timeout late.
        self.tick = max(self.timeout / 8, 10_000_000)
        self.slots = Array(repeating: [], count: Int(self.timeout / tick) + 2)
        self.loop = loop
        self.nextTick = loop.now / tick
        scheduleSweep()
    }

    func track(_ connection: Connection) {
        file(connection, deadline: connection.lastActivity + timeout, notBefore: nextTick)
    }

    /// Files into the slot of the deadline's tick, or of `notBefore` if that is
    /// later (a slot being swept must not receive what it should see again).
    private func file(_ connection: Connection, deadline: UInt64, notBefore: UInt64) {
        let due = max(deadline / tick, notBefore)
        slots[Int(due % UInt64(slots.count))].append(connection)
    }

    private func scheduleSweep() {
        let wait = (nextTick + 1) * tick - min(loop.now, (nextTick + 1) * tick)
        loop.scheduleOnLoop(after: .nanoseconds(Int64(wait))) { [self] in sweep() }
    }

    private func sweep() {
        let now = monotonicNanoseconds()
        while nextTick <= now / tick {
            let index = Int(nextTick % UInt64(slots.count))
            let due = slots[index]
            slots[index] = []
            for connection in due where !connection.isClosed {
                let deadline = connection.lastActivity + timeout
                if deadline <= now {
                    connection.close(reason: .idleTimeout)
                } else {
                    file(connection, deadline: deadline, notBefore: nextTick + 1)
                }
            }
            nextTick += 1
        }
        scheduleSweep()
    }
}
