import Reactor

/// Opens one loop's connections: all at once (512 per turn of the loop, so the
/// first connections' traffic is not held up), or at this loop's share of
/// `--connect-rate`. Shared by the flood and room workers.
///
/// `@unchecked Sendable` only so the loop's deferred calls may capture it: it
/// is made and used on its loop's thread alone.
final class ConnectPacer: @unchecked Sendable {
    private let loop: EventLoop
    private let count: Int
    /// Connections per second on this loop; nil: as fast as the loop turns.
    private let rate: Double?
    private let startedAt: UInt64
    private let connect: (Int) -> Void
    private var next = 0
    private var stopped = false

    /// `connect(i)` opens the loop's `i`-th connection, for `i` in `0..<count`.
    init(loop: EventLoop, count: Int, totalRate: Double?, loops: Int, startedAt: UInt64, connect: @escaping (Int) -> Void) {
        self.loop = loop
        self.count = count
        rate = totalRate.map { $0 / Double(loops) }
        self.startedAt = startedAt
        self.connect = connect
    }

    func stop() { stopped = true }

    /// Connects what is due, and schedules itself for the rest.
    func connectMore() {
        guard !stopped else { return }
        let now = monotonicNanoseconds()
        var due = count
        if let rate { due = min(due, Int(Double(now - startedAt) * rate / 1e9) + 1) }
        let batchEnd = min(due, next + 512)
        while next < batchEnd, !stopped {
            let index = next
            next += 1
            connect(index)
        }
        guard next < count, !stopped else { return }
        if next < due {
            loop.execute { [self] in connectMore() }
        } else if let rate {
            let dueAt = startedAt + UInt64(Double(next) / rate * 1e9)
            loop.schedule(after: .nanoseconds(Int64(dueAt > now ? dueAt - now : 0))) { [self] in connectMore() }
        }
    }
}
