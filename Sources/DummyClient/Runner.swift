import CommandLineSupport
import Reactor
#if canImport(Glibc)
import Glibc
#endif

/// What the runner needs of one event loop's share of a run (flood's
/// `LoopWorker`, room's `RoomWorker`): its loop, what the progress line
/// reads, and how it starts and ends. `start` and `finish` run on the loop.
protocol RunWorker: AnyObject, Sendable {
    var index: Int { get }
    var loop: EventLoop { get }
    var live: LiveCounters { get }
    var published: Locked<LatencyHistogram> { get }
    func start(at start: UInt64)
    func finish(windowEnd end: UInt64)
}

extension RunWorker {
    /// For the progress line: copies `snapshot()` (the loop's latency so far)
    /// into `published` once a second, until it returns nil. Loop thread.
    func publishEverySecond(_ snapshot: @escaping @Sendable () -> LatencyHistogram?) {
        loop.schedule(after: .seconds(1)) { [self] in
            guard let histogram = snapshot() else { return }
            published.withLock { $0 = histogram }
            publishEverySecond(snapshot)
        }
    }
}

/// When a run's traffic counted, and what it cost.
struct RunTimes: Sendable {
    var windowStart: UInt64
    var end: UInt64
    var cpu: CPUTime
    var interrupted: Bool
}

/// Runs one configuration start to end on the main thread's behalf: starts
/// one event loop per thread, each owning its share of the connections; waits
/// for the load to start (at once in flood and ping; once every member has
/// entered in room mode), then for the end of the duration, for every
/// connection to end, or for Ctrl-C, printing progress meanwhile; lets the
/// loops drain what is in flight; stops and joins them; and sums up what they did.
enum Runner {
    /// How long the end of a run waits for echoes still in flight.
    static let drainPeriod: UInt64 = 2_000_000_000

    static func run(_ configuration: RunConfiguration, progress showProgress: Bool) throws -> Report {
        let pattern = configuration.ping != nil ? Pattern.hello(size: configuration.size) : Pattern.flood()
        let control = RunControl(loops: configuration.threads)
        var workers: [LoopWorker] = []
        for index in 0..<configuration.threads {
            let worker = LoopWorker(index: index, loop: try EventLoop(backpressure: ClientConnection.alwaysRead), configuration: configuration,
                                    pattern: pattern, control: control)
            if let settings = configuration.ping { worker.ping = PingSession(worker: worker, settings: settings) }
            workers.append(worker)
        }
        let times = try drive(workers, control: control, configuration: configuration, progress: showProgress, unit: "msgs/s",
                              loadStartsAtOnce: true)
        return Report(configuration: configuration, workers: workers, windowStart: times.windowStart, end: times.end,
                      cpu: times.cpu, interrupted: times.interrupted)
    }

    /// The shared run: loop threads, the wait for the load to start (by
    /// `entryDeadline` at the latest), the measured window, progress, drain, join.
    static func drive<Worker: RunWorker>(
        _ workers: [Worker], control: RunControl, configuration: RunConfiguration, progress showProgress: Bool,
        unit: String, loadStartsAtOnce: Bool, entryDeadline: UInt64 = .max
    ) throws -> RunTimes {
        try Interrupts.forward(to: control)
        let cpuBefore = CPUTime.now()
        let start = monotonicNanoseconds()
        if loadStartsAtOnce { control.startLoad(at: start) }
        var threads: [LoopThread] = []
        for worker in workers {
            worker.loop.execute { worker.start(at: start) }
            threads.append(try LoopThread(name: "client-\(worker.index)") { worker.loop.run() })
        }
        let progress = showProgress ? Progress(workers: workers, unit: unit, start: start, control: control, warmup: configuration.warmup) : nil
        var nextTick = start + 1_000_000_000

        // Room mode: members connect and enter first; the clock starts when the last has.
        let entryEnd = start &+ entryDeadline < start ? UInt64.max : start &+ entryDeadline
        while !control.loadStarted.wait(until: min(entryEnd, progress == nil ? .max : nextTick)) {
            let now = monotonicNanoseconds()
            if now >= entryEnd { break }
            if now >= nextTick {
                progress?.tick(now: now)
                nextTick += 1_000_000_000
            }
        }
        let loadStart = control.loadStartTime.load(ordering: .acquiring)
        let stopped = loadStart == 0 || control.stop.wait(until: 0)
        let loadAt = loadStart == 0 ? monotonicNanoseconds() : loadStart
        var window = MeasuredWindow(loadStart: loadAt, warmup: configuration.warmup, duration: configuration.duration)
        if stopped { window.stop(at: loadAt) }
        let (windowStart, end) = (window.start, window.end)
        // CPU time counts over the measured window, like the traffic.
        var cpuAtWindowStart: CPUTime? = configuration.warmup == 0 ? (loadStartsAtOnce ? cpuBefore : CPUTime.now()) : nil
        while !stopped {
            var deadline = min(end, progress == nil ? .max : nextTick)
            if cpuAtWindowStart == nil { deadline = min(deadline, windowStart) }
            if control.stop.wait(until: deadline) { break }
            let now = monotonicNanoseconds()
            if cpuAtWindowStart == nil, now >= windowStart { cpuAtWindowStart = CPUTime.now() }
            if now >= end { break }
            if now >= nextTick {
                progress?.tick(now: now)
                nextTick += 1_000_000_000
            }
        }
        let stoppedAt = min(monotonicNanoseconds(), end)
        let cpu = CPUTime.now() - (cpuAtWindowStart ?? CPUTime.now())
        progress?.finish()

        for worker in workers { worker.loop.execute { worker.finish(windowEnd: stoppedAt) } }
        _ = control.finished.wait(until: monotonicNanoseconds() + drainPeriod)
        for worker in workers { worker.loop.stop() }
        for thread in threads { thread.join() }
        return RunTimes(windowStart: min(windowStart, stoppedAt), end: stoppedAt, cpu: cpu,
                        interrupted: control.interrupted.load(ordering: .relaxed))
    }
}

/// Ctrl-C (SIGINT) and SIGTERM end the run early and still print the summary;
/// a second one exits at once.
enum Interrupts {
    /// Blocks the signals (before any loop thread starts) and waits for them
    /// on a thread of its own.
    static func forward(to control: RunControl) throws {
        let blocked = blockStopSignals()
        _ = try LoopThread(name: "signals") {
            var signals = blocked
            var received: Int32 = 0
            sigwait(&signals, &received)
            control.interrupt()
            sigwait(&signals, &received)
            _exit(130)
        }
    }
}
