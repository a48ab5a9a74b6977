import Reactor
#if canImport(Glibc)
import Glibc
#endif

/// One line per second on stderr while a flood or room run goes: elapsed
/// time, live connections, msgs/s (deliveries/s) and MiB/s over the last
/// second, p99 so far (measured window), errors. On a terminal the line updates in place (`\r`); into a
/// file or pipe each second is a line of its own. Main thread only.
final class Progress {
    private let workers: [any RunWorker]
    private let unit: String
    private let start: UInt64
    private let control: RunControl
    private let warmup: UInt64
    private let isTerminal = isatty(STDERR_FILENO) != 0
    private var lastTime: UInt64
    private var lastMessages: UInt64 = 0
    private var lastBytes: UInt64 = 0
    private var printed = false

    init(workers: [any RunWorker], unit: String, start: UInt64, control: RunControl, warmup: UInt64) {
        self.workers = workers
        self.unit = unit
        self.start = start
        self.control = control
        self.warmup = warmup
        lastTime = start
    }

    func tick(now: UInt64) {
        var messages: UInt64 = 0
        var bytes: UInt64 = 0
        var open = 0
        var errors = 0
        var latency = LatencyHistogram.latency()
        for worker in workers {
            messages += worker.live.messages.load(ordering: .relaxed)
            bytes += worker.live.bytesEchoed.load(ordering: .relaxed)
            open += worker.live.open.load(ordering: .relaxed)
            errors += worker.live.errors.load(ordering: .relaxed)
            worker.published.withLock { latency.add($0) }
        }
        let seconds = Double(now - lastTime) / 1e9
        let messageRate = seconds > 0 ? Double(messages - lastMessages) / seconds : 0
        let mebibytes = seconds > 0 ? Double(bytes - lastBytes) / seconds / 1_048_576 : 0
        (lastTime, lastMessages, lastBytes) = (now, messages, bytes)
        let p99 = latency.totalCount > 0 ? "\(Format.microseconds(latency.valueAtPercentile(99))) us" : "-"
        let loadStart = control.loadStartTime.load(ordering: .relaxed)
        let phase = loadStart == 0 ? " entering" : now < loadStart &+ warmup ? " warm-up" : ""
        let line = """
            [\(Format.fixed(Double(now - start) / 1e9, 0)) s\(phase)] \(Format.grouped(open)) conns, \
            \(Format.grouped(messageRate)) \(unit), \(Format.fixed(mebibytes, 2)) MiB/s, p99 \(p99), errors \(errors)
            """
        Output.standardError(isTerminal ? "\r\(line)\u{1B}[K" : "\(line)\n")
        printed = true
    }

    /// Ends the updating line so what follows starts on a fresh one.
    func finish() {
        if isTerminal, printed { Output.standardError("\n") }
    }
}
