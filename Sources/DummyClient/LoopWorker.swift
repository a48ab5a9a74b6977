import Histogram
import Reactor
import Synchronization

typealias LatencyHistogram = Histogram<UInt64>

extension Histogram where Count == UInt64 {
    /// Longest latency kept apart; longer ones are recorded as this.
    static var longestLatency: UInt64 { 100_000_000_000 }

    /// Nanoseconds, three significant digits, up to 100 s: every loop's
    /// histogram has this layout, so they merge.
    static func latency() -> LatencyHistogram {
        LatencyHistogram(lowestDiscernibleValue: 1, highestTrackableValue: longestLatency, numberOfSignificantValueDigits: .three)
    }
}

/// What one loop's connections did: traffic in the measured window, errors over the whole run.
struct LoopTotals {
    var units: UInt64 = 0
    var bytesSent: UInt64 = 0
    var bytesEchoed: UInt64 = 0
    var connected = 0
    var mismatches = 0
    var shortEchoes = 0
    var resets = 0
    var connectFailures = 0
    /// Connections still waiting for echoes when the drain period ran out (not an error).
    var unfinished = 0
    var firstConnectError: String?
    var firstError: String?
    var firstMismatch: String?
}

/// Counters the progress line reads from the main thread while the loop runs.
/// The loop thread is the only writer, so an update is a relaxed load and
/// store (plain moves), not a locked read-modify-write.
final class LiveCounters: Sendable {
    let messages = Atomic<UInt64>(0)
    let bytesEchoed = Atomic<UInt64>(0)
    let open = Atomic<Int>(0)
    let errors = Atomic<Int>(0)
}

@inline(__always)
private func bump(_ counter: borrowing Atomic<UInt64>, by amount: UInt64) {
    counter.store(counter.load(ordering: .relaxed) &+ amount, ordering: .relaxed)
}

@inline(__always)
private func bump(_ counter: borrowing Atomic<Int>, by amount: Int) {
    counter.store(counter.load(ordering: .relaxed) &+ amount, ordering: .relaxed)
}

/// One event loop's share of the run: its connections (ids `index`,
/// `index + threads`, ...), their latency histograms and counters, the
/// connect pacing, and, in open loop, the send pacer.
///
/// `@unchecked Sendable`: built on the main thread and handed to its loop
/// before that loop's thread starts; from then on every `var` is touched only
/// on that loop's thread, and by the main thread again only after joining it.
/// What the main thread reads meanwhile is `live` (atomics) and `published` (a mutex).
final class LoopWorker: @unchecked Sendable {
    let index: Int
    let loop: EventLoop
    let configuration: RunConfiguration
    let pattern: Pattern
    let control: RunControl
    let live = LiveCounters()
    /// A copy of `latency`, refreshed once a second for the progress line.
    let published = Locked(LatencyHistogram.latency())

    var ping: PingSession?
    private(set) var pacer: OpenLoopPacer?
    private(set) var clients: [ClientConnection] = []
    private let clientIDs: [Int]
    // @exclusivity(unchecked) on what every round updates: only the loop's
    // thread touches these, never in overlapping accesses, and the dynamic
    // checks would cost calls into the runtime every round.
    @exclusivity(unchecked) private(set) var latency = LatencyHistogram.latency()
    private(set) var connectTimes = LatencyHistogram.latency()
    /// Open loop: how late each round went out after its intended send time.
    @exclusivity(unchecked) private(set) var sendLags = LatencyHistogram.latency()
    @exclusivity(unchecked) private(set) var totals = LoopTotals()

    @exclusivity(unchecked) private var windowStart = UInt64.max
    @exclusivity(unchecked) private var windowEnd = UInt64.max
    private var remaining = 0
    private var nextToConnect = 0
    private var connectStartedAt: UInt64 = 0
    private var finishing = false

    init(index: Int, loop: EventLoop, configuration: RunConfiguration, pattern: Pattern, control: RunControl) {
        self.index = index
        self.loop = loop
        self.configuration = configuration
        self.pattern = pattern
        self.control = control
        clientIDs = Array(stride(from: index, to: configuration.connections, by: configuration.threads))
    }

    // MARK: Starting and finishing (loop thread)

    /// Opens this loop's connections, at once or at the connect rate; `start`
    /// is when the whole run started (the warm-up counts from it).
    func start(at start: UInt64) {
        let (windowStart, overflow) = start.addingReportingOverflow(configuration.warmup)
        self.windowStart = overflow ? .max : windowStart
        let (windowEnd, overflowEnd) = self.windowStart.addingReportingOverflow(configuration.duration)
        self.windowEnd = overflowEnd ? .max : windowEnd
        clients = clientIDs.map { ClientConnection(id: $0, worker: self) }
        remaining = clients.count
        guard remaining > 0 else { return control.loopFinished() }
        if configuration.mode == .open {
            pacer = OpenLoopPacer(worker: self, start: start, period: configuration.roundPeriod)
        }
        connectStartedAt = start
        if configuration.ping == nil { publishEverySecond() }
        connectMore()
    }

    /// Connects what is due: everything (512 per turn of the loop, so the
    /// first connections' traffic is not held up), or `--connect-rate`'s share.
    private func connectMore() {
        guard !finishing else { return }
        let now = monotonicNanoseconds()
        var due = clients.count
        let rate = configuration.connectRate.map { $0 / Double(configuration.threads) }
        if let rate {
            due = min(due, Int(Double(now - connectStartedAt) * rate / 1e9) + 1)
        }
        let batchEnd = min(due, nextToConnect + 512)
        while nextToConnect < batchEnd, !finishing {
            let client = clients[nextToConnect]
            nextToConnect += 1
            client.connect(to: configuration.address)
        }
        guard nextToConnect < clients.count, !finishing else { return }
        if nextToConnect < due {
            loop.execute { [self] in connectMore() }
        } else if let rate {
            let dueAt = connectStartedAt + UInt64(Double(nextToConnect) / rate * 1e9)
            loop.schedule(after: .nanoseconds(Int64(dueAt > now ? dueAt - now : 0))) { [self] in connectMore() }
        }
    }

    /// Ends the run on this loop: no round starts after `end`, what is in
    /// flight is awaited (and verified), then every connection closes.
    func finish(windowEnd end: UInt64) {
        guard !finishing else { return }
        finishing = true
        windowEnd = min(windowEnd, end)
        pacer?.stop()
        for client in clients { client.finish() }
    }

    private func publishEverySecond() {
        loop.schedule(after: .seconds(1)) { [self] in
            let snapshot = latency
            published.withLock { $0 = snapshot }
            if !finishing { publishEverySecond() }
        }
    }

    // MARK: Accounting (loop thread; the hot ones allocate nothing)

    @inline(__always)
    private func inWindow(_ now: UInt64) -> Bool { now >= windowStart && now < windowEnd }

    @inline(__always)
    func sent(_ count: Int, at now: UInt64) {
        if inWindow(now) { totals.bytesSent &+= UInt64(count) }
    }

    @inline(__always)
    func echoed(_ count: Int, at now: UInt64) {
        bump(live.bytesEchoed, by: UInt64(count))
        if inWindow(now) { totals.bytesEchoed &+= UInt64(count) }
    }

    @inline(__always)
    func unitCompleted(latency nanoseconds: UInt64, at now: UInt64) {
        bump(live.messages, by: UInt64(configuration.messagesPerUnit))
        if inWindow(now) {
            totals.units &+= 1
            latency.record(min(nanoseconds, LatencyHistogram.longestLatency))
        }
    }

    @inline(__always)
    func sendLag(_ nanoseconds: UInt64, at now: UInt64) {
        if inWindow(now) { sendLags.record(min(nanoseconds, LatencyHistogram.longestLatency)) }
    }

    func connected(after nanoseconds: UInt64) {
        totals.connected += 1
        connectTimes.record(min(nanoseconds, LatencyHistogram.longestLatency))
        bump(live.open, by: 1)
    }

    func disconnected() { bump(live.open, by: -1) }

    /// A connection has ended (or was never started); the loop is done after the last.
    func clientEnded() {
        remaining -= 1
        if remaining == 0 { control.loopFinished() }
    }

    func connectFailed(_ message: String) {
        totals.connectFailures += 1
        if totals.firstConnectError == nil { totals.firstConnectError = message }
        bump(live.errors, by: 1)
    }

    func countMismatch() {
        totals.mismatches += 1
        bump(live.errors, by: 1)
    }

    func noteMismatch(_ message: @autoclosure () -> String) {
        if totals.firstMismatch == nil { totals.firstMismatch = message() }
    }

    func countReset(_ message: @autoclosure () -> String) {
        totals.resets += 1
        if totals.firstError == nil { totals.firstError = message() }
        bump(live.errors, by: 1)
    }

    func countShortEcho(_ message: @autoclosure () -> String) {
        totals.shortEchoes += 1
        if totals.firstError == nil { totals.firstError = message() }
        bump(live.errors, by: 1)
    }

    func unfinished() { totals.unfinished += 1 }
}

/// What the main thread and the loops share about the run's end.
final class RunControl: Sendable {
    /// Every loop has finished, or Ctrl-C: the main thread stops waiting.
    let stop = Completion()
    /// Every loop has finished: the drain is over.
    let finished = Completion()
    let interrupted = Atomic<Bool>(false)
    private let loopsLeft: Atomic<Int>

    init(loops: Int) { loopsLeft = Atomic(loops) }

    /// A loop's last connection has ended. Any loop thread.
    func loopFinished() {
        if loopsLeft.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 {
            finished.signal()
            stop.signal()
        }
    }

    func interrupt() {
        interrupted.store(true, ordering: .relaxed)
        stop.signal()
    }
}
