import CommandLineSupport
import Reactor
#if canImport(Glibc)
import Glibc
#endif

/// Runs one configuration start to end on the main thread's behalf: starts
/// one event loop per thread, each owning its share of the connections; waits
/// for the end of the duration, for every connection to end, or for Ctrl-C,
/// printing progress meanwhile; lets the loops drain what is in flight; stops
/// and joins them; and sums up what they did.
enum Runner {
    /// How long the end of a run waits for echoes still in flight.
    static let drainPeriod: UInt64 = 2_000_000_000

    static func run(_ configuration: RunConfiguration, progress showProgress: Bool) throws -> Report {
        let pattern = configuration.ping != nil ? Pattern.hello(size: configuration.size) : Pattern.flood()
        let control = RunControl(loops: configuration.threads)
        try Interrupts.forward(to: control)
        var workers: [LoopWorker] = []
        for index in 0..<configuration.threads {
            let worker = LoopWorker(index: index, loop: try EventLoop(backpressure: ClientConnection.alwaysRead), configuration: configuration,
                                    pattern: pattern, control: control)
            if let settings = configuration.ping { worker.ping = PingSession(worker: worker, settings: settings) }
            workers.append(worker)
        }

        let cpuBefore = CPUTime.now()
        let start = monotonicNanoseconds()
        var threads: [LoopThread] = []
        for worker in workers {
            worker.loop.execute { worker.start(at: start) }
            threads.append(try LoopThread(name: "client-\(worker.index)") { worker.loop.run() })
        }

        let (windowStart, overflow) = start.addingReportingOverflow(configuration.warmup)
        let (plannedEnd, overflowEnd) = windowStart.addingReportingOverflow(configuration.duration)
        let end = overflow || overflowEnd ? UInt64.max : plannedEnd
        let progress = showProgress ? Progress(workers: workers, start: start, windowStart: windowStart) : nil
        var nextTick = start + 1_000_000_000
        // CPU time counts over the measured window, like the traffic.
        var cpuAtWindowStart: CPUTime? = configuration.warmup == 0 ? cpuBefore : nil
        while true {
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
        return Report(configuration: configuration, workers: workers, windowStart: windowStart, end: stoppedAt,
                      cpu: cpu, interrupted: control.interrupted.load(ordering: .relaxed))
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
