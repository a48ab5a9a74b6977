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

    /// A consistent-enough copy of the counters (each read is atomic).
    public var snapshot: Snapshot {
        Snapshot(
            opened: opened.load(ordering: .relaxed),
            closed: closed.load(ordering: .relaxed),
            refused: refused.load(ordering: .relaxed),
            protocolErrors: protocolErrors.load(ordering: .relaxed),
            bytesReceived: bytesReceived.load(ordering: .relaxed),
            bytesSent: bytesSent.load(ordering: .relaxed))
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

        /// Connections open when the snapshot was taken: `opened` less `closed`.
        public var open: UInt64 { opened &- closed }

        /// The two snapshots added up, field by field: totals over loops.
        public static func + (lhs: Snapshot, rhs: Snapshot) -> Snapshot {
            Snapshot(
                opened: lhs.opened + rhs.opened, closed: lhs.closed + rhs.closed,
                refused: lhs.refused + rhs.refused, protocolErrors: lhs.protocolErrors + rhs.protocolErrors,
                bytesReceived: lhs.bytesReceived + rhs.bytesReceived,
                bytesSent: lhs.bytesSent + rhs.bytesSent)
        }
    }
}

/// Single-writer increment: the owner thread is the only one that stores.
@inline(__always)
func increment(_ counter: borrowing Atomic<UInt64>, by amount: UInt64 = 1) {
    counter.store(counter.load(ordering: .relaxed) &+ amount, ordering: .relaxed)
}
