/// The measured part of a run: from the load's start plus the warm-up, for
/// the duration, or until the run is stopped earlier. Times are monotonic
/// nanoseconds; sums that overflow saturate ("never").
struct MeasuredWindow {
    private(set) var start = UInt64.max
    private(set) var end = UInt64.max

    /// Not started yet: nothing falls in it.
    init() {}

    init(loadStart: UInt64, warmup: UInt64, duration: UInt64) {
        start = Self.saturatingSum(loadStart, warmup)
        end = Self.saturatingSum(start, duration)
    }

    @inline(__always)
    func contains(_ time: UInt64) -> Bool { time >= start && time < end }

    /// The run stopped at `time`: nothing after it counts.
    mutating func stop(at time: UInt64) { end = min(end, time) }

    private static func saturatingSum(_ a: UInt64, _ b: UInt64) -> UInt64 {
        let (sum, overflowed) = a.addingReportingOverflow(b)
        return overflowed ? .max : sum
    }
}
