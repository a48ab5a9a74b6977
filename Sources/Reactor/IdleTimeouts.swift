/// Closes a loop's connections that have received nothing for `timeout`.
///
/// A read only stores the loop's tick in the connection's slot. Eight times
/// per timeout a sweep walks the loop's connection table and closes the
/// connections idle that long, so a connection is closed at most 1/8 of the
/// timeout late. Nothing per event, nothing per connection (no list to keep),
/// and a sweep costs a few nanoseconds per slot of the table.
final class IdleTimeouts {
    /// The timeout and the sweep interval, in loop ticks (`EventLoop.tick`, about 1 ms).
    let timeout: UInt32
    private let interval: UInt32
    private unowned(unsafe) let loop: EventLoop // loops are never freed

    init(timeout: Duration, loop: EventLoop) {
        precondition(timeout <= .seconds(86_400 * 7), "idle timeout over a week")
        self.timeout = max(EventLoop.tick(timeout.nanoseconds), 1)
        self.interval = max(self.timeout / 8, 10)
        self.loop = loop
        scheduleSweep()
    }

    private func scheduleSweep() {
        loop.scheduleOnLoop(after: .nanoseconds(Int64(interval) << 20)) { [self] in sweep() }
    }

    private func sweep() {
        let now = EventLoop.tick(monotonicNanoseconds())
        loop.connections.initializedSlots.forEachOpen { token, lastActivity in
            // Wrapping difference: right across the 32-bit tick wrap (every ~50 days).
            if now &- lastActivity >= timeout { loop.close(token, reason: .idleTimeout) }
        }
        scheduleSweep()
    }
}
