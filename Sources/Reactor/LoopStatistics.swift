import Synchronization

/// Counters one loop keeps, readable from any thread without stopping it.
///
/// Only the loop's own thread writes them, so an increment is a relaxed load
/// and store (plain moves on x86), not a locked read-modify-write. A
/// noncopyable struct stored in its loop, not an object of its own: a counter
/// is then an add at an offset from the loop, with no pointer to load first.
public struct LoopStatistics: ~Copyable, Sendable {
    let opened = Atomic<UInt64>(0)
    let closed = Atomic<UInt64>(0)
    let refused = Atomic<UInt64>(0)
    let protocolErrors = Atomic<UInt64>(0)
    let bytesReceived = Atomic<UInt64>(0)
    let bytesSent = Atomic<UInt64>(0)
    let backpressurePauses = Atomic<UInt64>(0)
    let proxyHeadersRejected = Atomic<UInt64>(0)
    /// Closes by `CloseReason.Kind`, in the order of `allCases`.
    let closedByKind: InlineArray<9, Atomic<UInt64>> = InlineArray { _ in Atomic(0) }
    /// Connection lifetimes: see `Snapshot.lifetimes`.
    let lifetimes: InlineArray<24, Atomic<UInt64>> = InlineArray { _ in Atomic(0) }

    /// A consistent-enough copy of the counters (each read is atomic).
    public var snapshot: Snapshot {
        var snapshot = Snapshot(
            opened: opened.load(ordering: .relaxed),
            closed: closed.load(ordering: .relaxed),
            refused: refused.load(ordering: .relaxed),
            protocolErrors: protocolErrors.load(ordering: .relaxed),
            bytesReceived: bytesReceived.load(ordering: .relaxed),
            bytesSent: bytesSent.load(ordering: .relaxed))
        snapshot.backpressurePauses = backpressurePauses.load(ordering: .relaxed)
        snapshot.proxyHeadersRejected = proxyHeadersRejected.load(ordering: .relaxed)
        for index in snapshot.closedByKind.indices { snapshot.closedByKind[index] = closedByKind[index].load(ordering: .relaxed) }
        for index in snapshot.lifetimes.indices { snapshot.lifetimes[index] = lifetimes[index].load(ordering: .relaxed) }
        return snapshot
    }

    /// Counts a close after `ticks` loop ticks (2^20 ns) of life.
    func countClose(_ kind: CloseReason.Kind, lifetimeTicks ticks: UInt32) {
        increment(closed)
        increment(closedByKind[kind.ordinal])
        increment(lifetimes[Self.lifetimeBucket(ticks)])
    }

    /// Bucket i holds lifetimes under 2^i ticks (and at least 2^(i-1)); the last, any longer.
    static func lifetimeBucket(_ ticks: UInt32) -> Int {
        min(ticks == 0 ? 0 : UInt32.bitWidth - ticks.leadingZeroBitCount, lifetimeBucketCount - 1)
    }

    public static let lifetimeBucketCount = 24

    /// The upper bound of lifetime bucket `index` (nil for the last, unbounded one).
    public static func lifetimeBound(_ index: Int) -> Duration? {
        index < lifetimeBucketCount - 1 ? .nanoseconds(Int64(1) << (20 + index)) : nil
    }

    /// The counters' values at one moment. `Server.statistics` adds up its loops'.
    public struct Snapshot: Sendable, Equatable {
        /// Connections established: accepted by a server or connected by a client.
        public var opened: UInt64 = 0
        /// Connections closed after being opened (refused ones are not counted here).
        public var closed: UInt64 = 0
        /// Connections accepted and closed at once because of `maxConnections`.
        public var refused: UInt64 = 0
        /// Connections closed because their peer broke the protocol (`.framing`, `.protocolError`).
        public var protocolErrors: UInt64 = 0
        /// Bytes read from peers.
        public var bytesReceived: UInt64 = 0
        /// Bytes handed to the kernel for peers.
        public var bytesSent: UInt64 = 0
        /// Times a connection's pending output went above the high-water mark (reading paused).
        public var backpressurePauses: UInt64 = 0
        /// Connections from a proxy closed before being opened because their
        /// PROXY header was missing, malformed, oversized or too slow.
        public var proxyHeadersRejected: UInt64 = 0
        /// Closes by kind, in the order of `CloseReason.Kind.allCases`.
        public var closedByKind = [UInt64](repeating: 0, count: CloseReason.Kind.allCases.count)
        /// Closed connections by how long they lived: entry i counts lifetimes
        /// under `LoopStatistics.lifetimeBound(i)` (about 2^i ms) and not under
        /// the bound before; the last entry, any longer.
        public var lifetimes = [UInt64](repeating: 0, count: LoopStatistics.lifetimeBucketCount)

        /// Connections open when the snapshot was taken: `opened` less `closed`.
        public var open: UInt64 { opened &- closed }

        /// The two snapshots added up, field by field: totals over loops.
        public static func + (lhs: Snapshot, rhs: Snapshot) -> Snapshot {
            var sum = Snapshot(
                opened: lhs.opened + rhs.opened, closed: lhs.closed + rhs.closed,
                refused: lhs.refused + rhs.refused, protocolErrors: lhs.protocolErrors + rhs.protocolErrors,
                bytesReceived: lhs.bytesReceived + rhs.bytesReceived,
                bytesSent: lhs.bytesSent + rhs.bytesSent)
            sum.backpressurePauses = lhs.backpressurePauses + rhs.backpressurePauses
            sum.proxyHeadersRejected = lhs.proxyHeadersRejected + rhs.proxyHeadersRejected
            sum.closedByKind = zip(lhs.closedByKind, rhs.closedByKind).map(+)
            sum.lifetimes = zip(lhs.lifetimes, rhs.lifetimes).map(+)
            return sum
        }
    }
}

/// Single-writer increment: the owner thread is the only one that stores.
@inline(__always)
func increment(_ counter: borrowing Atomic<UInt64>, by amount: UInt64 = 1) {
    counter.store(counter.load(ordering: .relaxed) &+ amount, ordering: .relaxed)
}

extension LoopStatistics.Snapshot {
    /// Every counter at zero: where counting starts.
    public static let zero = LoopStatistics.Snapshot()
}
