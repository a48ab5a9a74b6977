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
    private var slots: [[Connection]]
    private var nextTick: UInt32
    private unowned(unsafe) let loop: EventLoop // the loop owns this wheel

    init(timeout: Duration, loop: EventLoop) {
        precondition(timeout <= .seconds(86_400 * 7), "idle timeout over a week")
        self.timeout = max(EventLoop.tick(timeout.nanoseconds), 1)
        // Eight wheel ticks per timeout, no finer than ~10 ms: closes at most 1/8 of the timeout late.
        self.tick = max(self.timeout / 8, 10)
        self.slots = Array(repeating: [], count: Int(self.timeout / tick) + 2)
        self.loop = loop
        self.nextTick = EventLoop.tick(monotonicNanoseconds()) / tick
        scheduleSweep()
    }

    func track(_ connection: Connection) {
        guard let lastActivity = connection.lastActivity else { return }
        file(connection, deadline: lastActivity &+ timeout, notBefore: nextTick)
    }

    /// Files into the slot of the deadline's wheel tick, or of `notBefore` if
    /// that is later (a slot being swept must not receive what it should see again).
    private func file(_ connection: Connection, deadline: UInt32, notBefore: UInt32) {
        let due = max(deadline / tick, notBefore)
        slots[Int(due % UInt32(slots.count))].append(connection)
    }

    private func scheduleSweep() {
        loop.scheduleOnLoop(after: .nanoseconds(Int64(tick) << 20)) { [self] in sweep() }
    }

    private func sweep() {
        let now = EventLoop.tick(monotonicNanoseconds())
        while nextTick <= now / tick {
            let index = Int(nextTick % UInt32(slots.count))
            let due = slots[index]
            slots[index] = []
            for connection in due {
                guard let lastActivity = connection.lastActivity else { continue } // closed
                let deadline = lastActivity &+ timeout
                if deadline <= now {
                    connection.close(reason: .idleTimeout, on: loop)
                } else {
                    file(connection, deadline: deadline, notBefore: nextTick + 1)
                }
            }
            nextTick += 1
        }
        scheduleSweep()
    }
}
