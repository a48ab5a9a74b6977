import Reactor

/// What an open-loop pacer drives: one loop's connections (flood) or room
/// members, numbered `0..<slots`.
protocol PacedSlots: AnyObject, Sendable {
    var loop: EventLoop { get }
    /// Slot `slot`'s next round (or chat) was due at `intendedAt`.
    func slotDue(_ slot: Int, intendedAt: UInt64, now: UInt64)
}

/// Open loop: decides when each connection of one loop sends, at `--rate`
/// rounds per second per connection, whatever the server does.
///
/// The loop's connections take turns in a fixed cycle of one period: slot `i`
/// of `n` is due at `cycleStart + i * period / n`, so sends are spread evenly
/// and the next due slot is always the cursor's, found in O(1) with no heap.
/// A connection's round `k` is intended at its first slot time plus `k`
/// periods, and its latency is measured from that intended time: a server
/// that stalls cannot hide by slowing the client down (no coordinated omission).
///
/// Woken by a timer (the loop's timers have millisecond resolution, so a send
/// may go out up to a millisecond after its slot: that lateness is part of the
/// recorded latency) and polled on every read, which sends what fell due
/// meanwhile without waiting for the timer.
///
/// `@unchecked Sendable` only so its timer closure may capture it: it is made,
/// polled and fired on its loop's thread alone.
final class OpenLoopPacer<Target: PacedSlots>: @unchecked Sendable {
    /// The target owns the pacer and outlives it (Unmanaged: no retain per use).
    private let targetReference: Unmanaged<Target>
    @inline(__always) private var target: Target { targetReference.takeUnretainedValue() }
    private let period: UInt64
    private let slots: Int
    private var cycleStart: UInt64
    private var slot = 0
    private var nextDue: UInt64
    private var timerArmed = false
    private var stopped = false
    /// Made once and re-armed for every wake-up: no allocation per timer.
    private var timerFired: (@Sendable () -> Void)?

    /// Slots visited per poll at most, so catching up after a stall cannot starve reads.
    private static var maximumVisitsPerPoll: Int { 65_536 }

    init(target: Target, slots: Int, start: UInt64, period: UInt64) {
        targetReference = .passUnretained(target)
        self.period = period
        self.slots = slots
        self.cycleStart = start
        self.nextDue = start
        timerFired = { [weak self] in
            guard let pacer = self else { return }
            pacer.timerArmed = false
            let now = monotonicNanoseconds()
            pacer.poll(now: now)
            pacer.arm(now: now) // poll arms only when something was due
        }
        arm(now: monotonicNanoseconds())
    }

    func stop() { stopped = true }

    /// Lets every slot due by `now` send its round.
    @inline(__always)
    func poll(now: UInt64) {
        guard now >= nextDue, !stopped, slots > 0 else { return }
        var visits = 0
        while nextDue <= now, visits < Self.maximumVisitsPerPoll {
            target.slotDue(slot, intendedAt: nextDue, now: now)
            visits += 1
            slot += 1
            if slot == slots {
                slot = 0
                cycleStart &+= period
            }
            nextDue = cycleStart &+ UInt64(slot) &* period / UInt64(slots)
        }
        arm(now: now)
    }

    private func arm(now: UInt64) {
        guard !timerArmed, !stopped, let timerFired else { return }
        timerArmed = true
        let delay = nextDue > now ? nextDue - now : 0
        target.loop.schedule(after: .nanoseconds(Int64(delay)), timerFired)
    }
}
