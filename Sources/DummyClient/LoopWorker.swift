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
struct LoopTotals: ErrorTotals {
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
    /// `--rounds-per-connection`: connections closed after their last round.
    var closedByPlan = 0
    /// Connections the server closed between rounds, replaced (not an error).
    var closedByServer = 0
    /// Connections opened in place of one that failed or that the server closed.
    var reconnected = 0
    /// Units sent whose echo never came: their connection failed or was closed by the server.
    var unitsCut: UInt64 = 0
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
func bump(_ counter: borrowing Atomic<UInt64>, by amount: UInt64) {
    counter.store(counter.load(ordering: .relaxed) &+ amount, ordering: .relaxed)
}

@inline(__always)
func bump(_ counter: borrowing Atomic<Int>, by amount: Int) {
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
final class LoopWorker: RunWorker, PacedSlots, @unchecked Sendable {
    let index: Int
    let loop: EventLoop
    let configuration: RunConfiguration
    let pattern: Pattern
    let control: RunControl
    let live = LiveCounters()
    /// A copy of `latency`, refreshed once a second for the progress line.
    let published = Locked(LatencyHistogram.latency())

    var ping: PingSession?
    private(set) var pacer: OpenLoopPacer<LoopWorker>?
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

    @exclusivity(unchecked) private var window = MeasuredWindow()
    private var remaining = 0
    private var connector: ConnectPacer?
    /// The run is ending on this loop: connections that end are not replaced.
    private(set) var isFinishing = false

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
        window = MeasuredWindow(loadStart: start, warmup: configuration.warmup, duration: configuration.duration)
        clients = clientIDs.map { ClientConnection(id: $0, worker: self) }
        remaining = clients.count
        guard remaining > 0 else { return control.loopFinished() }
        if configuration.mode == .open {
            pacer = OpenLoopPacer(target: self, slots: clients.count, start: start, period: configuration.roundPeriod)
        }
        if configuration.ping == nil { publishEverySecond { [unowned self] in isFinishing ? nil : latency } }
        connector = ConnectPacer(loop: loop, count: clients.count, totalRate: configuration.connectRate,
                                 loops: configuration.threads, startedAt: start) { [unowned self] index in
            clients[index].connect(to: configuration.address)
        }
        connector?.connectMore()
    }

    /// Ends the run on this loop: no round starts after `end`, what is in
    /// flight is awaited (and verified), then every connection closes.
    func finish(windowEnd end: UInt64) {
        guard !isFinishing else { return }
        isFinishing = true
        window.stop(at: end)
        pacer?.stop()
        connector?.stop()
        for client in clients { client.finish() }
    }

    /// Opens a fresh connection for client `id` (one of this loop's) after `delay`, in place of its last.
    func reopen(clientID id: Int, after delay: Duration) {
        let slot = (id - index) / configuration.threads
        loop.schedule(after: delay) { [unowned self] in clients[slot].connect(to: configuration.address) }
    }

    /// Open loop: the pacer says slot `slot`'s round was due at `intendedAt`.
    @inline(__always)
    func slotDue(_ slot: Int, intendedAt: UInt64, now: UInt64) {
        clients[slot].roundDue(intendedAt: intendedAt, now: now)
    }

    // MARK: Accounting (loop thread; the hot ones allocate nothing)

    @inline(__always)
    func sent(_ count: Int, at now: UInt64) {
        if window.contains(now) { totals.bytesSent &+= UInt64(count) }
    }

    @inline(__always)
    func echoed(_ count: Int, at now: UInt64) {
        bump(live.bytesEchoed, by: UInt64(count))
        if window.contains(now) { totals.bytesEchoed &+= UInt64(count) }
    }

    @inline(__always)
    func unitCompleted(latency nanoseconds: UInt64, at now: UInt64) {
        bump(live.messages, by: UInt64(configuration.messagesPerUnit))
        if window.contains(now) {
            totals.units &+= 1
            latency.record(min(nanoseconds, LatencyHistogram.longestLatency))
        }
    }

    @inline(__always)
    func sendLag(_ nanoseconds: UInt64, at now: UInt64) {
        if window.contains(now) { sendLags.record(min(nanoseconds, LatencyHistogram.longestLatency)) }
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
        totals.count(\.resets, message)
        bump(live.errors, by: 1)
    }

    func countShortEcho(_ message: @autoclosure () -> String) {
        totals.count(\.shortEchoes, message)
        bump(live.errors, by: 1)
    }

    func unfinished() { totals.unfinished += 1 }

    func closedByPlan() { totals.closedByPlan += 1 }

    func closedByServer() { totals.closedByServer += 1 }

    func reconnected() { totals.reconnected += 1 }

    func cut(_ units: UInt64) { totals.unitsCut += units }
}

/// What the main thread and the loops share about the run's start and end.
final class RunControl: Sendable {
    /// Every loop has finished, or Ctrl-C: the main thread stops waiting.
    let stop = Completion()
    /// Every loop has finished: the drain is over.
    let finished = Completion()
    /// The load has started (`loadStartTime`), or the run is over before it did.
    let loadStarted = Completion()
    /// When the load started (monotonic nanoseconds); 0 until then.
    let loadStartTime = Atomic<UInt64>(0)
    let interrupted = Atomic<Bool>(false)
    private let loopsLeft: Atomic<Int>
    /// Room mode: members still to enter (or to fail) before the load starts.
    private let participantsLeft: Atomic<Int>

    init(loops: Int, participants: Int = 0) {
        loopsLeft = Atomic(loops)
        participantsLeft = Atomic(participants)
    }

    /// A loop's last connection has ended. Any loop thread.
    func loopFinished() {
        if loopsLeft.subtract(1, ordering: .acquiringAndReleasing).newValue == 0 {
            finished.signal()
            stop.signal()
            loadStarted.signal()
        }
    }

    func interrupt() {
        interrupted.store(true, ordering: .relaxed)
        stop.signal()
        loadStarted.signal()
    }

    /// Starts the load's clock (the warm-up counts from here). Any thread, once.
    func startLoad(at time: UInt64) {
        loadStartTime.store(max(time, 1), ordering: .releasing)
        loadStarted.signal()
    }

    /// One participant is ready (or has failed); true for the last one, whose
    /// caller then starts the load. Any loop thread.
    func participantSettled() -> Bool {
        participantsLeft.subtract(1, ordering: .acquiringAndReleasing).newValue == 0
    }
}
