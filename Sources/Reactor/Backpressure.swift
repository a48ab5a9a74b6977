/// How much unsent output a connection may hold before it stops reading.
///
/// Pending output is counted as the memory it holds: its bytes, plus, for
/// each queued `SharedBuffer`, that buffer's allocation overhead, so that a
/// peer sent many small shared messages is held to the mark in memory too.
public struct Backpressure: Sendable, Equatable {
    /// Above this many pending output bytes the connection stops reading from
    /// the peer, and its handler hears it is no longer writable.
    public var highWaterMark: Int
    /// At or below this many it reads again, and is writable again.
    public var lowWaterMark: Int

    /// Limits of `highWaterMark` and `lowWaterMark` bytes, 256 KiB and 64 KiB by default;
    /// the low-water mark may not exceed the high one.
    public init(highWaterMark: Int = 256 * 1024, lowWaterMark: Int = 64 * 1024) {
        precondition(highWaterMark > 0 && lowWaterMark >= 0 && lowWaterMark <= highWaterMark)
        self.highWaterMark = highWaterMark
        self.lowWaterMark = lowWaterMark
    }
}
