import Histogram
#if canImport(Glibc)
import Glibc
#endif

/// CPU time this process has used (getrusage: every thread, user and kernel).
struct CPUTime: Sendable {
    var user = 0.0
    var system = 0.0

    static func now() -> CPUTime {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        func seconds(_ time: timeval) -> Double { Double(time.tv_sec) + Double(time.tv_usec) / 1e6 }
        return CPUTime(user: seconds(usage.ru_utime), system: seconds(usage.ru_stime))
    }

    static func - (lhs: CPUTime, rhs: CPUTime) -> CPUTime {
        CPUTime(user: lhs.user - rhs.user, system: lhs.system - rhs.system)
    }
}

/// The outcome of a run: what the summary and `--json` print, and the exit status.
///
/// Traffic figures (rounds, messages, bytes, rates, latency) cover the measured
/// window only, from the end of `--warmup` to the end of `--duration` (or
/// Ctrl-C); error counts cover the whole run, warm-up and drain included.
struct Report: Sendable {
    struct Latency: Sendable {
        var count: UInt64 = 0
        var p50 = 0.0, p90 = 0.0, p99 = 0.0, p999 = 0.0, max = 0.0, mean = 0.0, min = 0.0

        /// Percentiles of a nanosecond histogram, in microseconds.
        init(_ histogram: LatencyHistogram) {
            count = histogram.totalCount
            guard count > 0 else { return }
            func us(_ nanoseconds: UInt64) -> Double { Double(nanoseconds) / 1000 }
            p50 = us(histogram.valueAtPercentile(50))
            p90 = us(histogram.valueAtPercentile(90))
            p99 = us(histogram.valueAtPercentile(99))
            p999 = us(histogram.valueAtPercentile(99.9))
            max = us(histogram.max)
            min = us(histogram.min)
            mean = histogram.mean / 1000
        }

        /// The `latency_us` object of `--json` (runs and merge alike).
        var json: String {
            func us(_ value: Double) -> String { Format.fixed(value, 1) }
            return """
                {"p50":\(us(p50)),"p90":\(us(p90)),"p99":\(us(p99)),"p999":\(us(p999)),"max":\(us(max)),"mean":\(us(mean))}
                """
        }

        /// The summaries' latency figures: "p50 84 us, p90 ..., max 512 us (mean 90.1 us)".
        var summary: String {
            func us(_ value: Double) -> String { value < 10 ? Format.fixed(value, 1) : Format.fixed(value, 0) }
            return "p50 \(us(p50)) us, p90 \(us(p90)) us, p99 \(us(p99)) us, p99.9 \(us(p999)) us, max \(us(max)) us (mean \(Format.fixed(mean, 1)) us)"
        }
    }

    var mode: LoadMode
    var host: String
    var port: Int
    var connections: Int
    var threads: Int
    var size: Int
    /// Messages per round; 1 in stream mode, where a round is one `--size` chunk.
    var burst: Int
    var window: Int
    var rate: Double
    var coalesce: Bool
    var warmupSeconds: Double
    var durationSeconds: Double
    var rounds: UInt64
    var messages: UInt64
    var bytesSent: UInt64
    var bytesEchoed: UInt64
    var latency: Latency
    /// What `--histogram-out` writes: the histogram `latency` comes from.
    var latencyLog: HistogramLog.Window
    var connect: Latency
    /// Open loop: how late rounds went out after their intended send time.
    var sendLag: Latency
    /// Connections opened over the run, replacements included.
    var connected: Int
    /// `--rounds-per-connection` or `--reconnect`: connections that end are replaced.
    var replacesConnections: Bool
    var reconnect: Bool
    var closedByPlan: Int
    var closedByServer: Int
    var reconnected: Int
    /// Rounds (stream: chunks) whose connection failed, or was closed by the server, before their echo.
    var roundsCut: UInt64
    var mismatches: Int
    var shortEchoes: Int
    var resets: Int
    var connectFailures: Int
    var unfinished: Int
    var cpu: CPUTime
    var interrupted: Bool
    var firstConnectError: String?
    var firstError: String?
    var firstMismatch: String?

    var messagesPerSecond: Double { durationSeconds > 0 ? Double(messages) / durationSeconds : 0 }
    var mebibytesPerSecond: Double { durationSeconds > 0 ? Double(bytesEchoed) / durationSeconds / 1_048_576 : 0 }
    /// Connections that failed: connect failures, resets, short echoes (each ends its connection).
    var failedConnections: Int { shortEchoes + resets + connectFailures }
    var errorCount: Int { mismatches + failedConnections }
    /// The errors that fail the run: with `--reconnect`, failed connections were
    /// replaced, so only wrong bytes.
    var fatalErrorCount: Int { reconnect ? mismatches : errorCount }
    /// Everything verified, and something was: the run proved the server echoes.
    var succeeded: Bool { fatalErrorCount == 0 && (rounds > 0 || interrupted) }

    /// Sums the loops' totals and merges their histograms (after their threads have been joined).
    init(configuration: RunConfiguration, workers: [LoopWorker], windowStart: UInt64, end: UInt64,
         cpu: CPUTime, interrupted: Bool) {
        var totals = LoopTotals()
        var latency = LatencyHistogram.latency()
        var connectTimes = LatencyHistogram.latency()
        var sendLags = LatencyHistogram.latency()
        for worker in workers {
            let loop = worker.totals
            totals.units += loop.units
            totals.bytesSent += loop.bytesSent
            totals.bytesEchoed += loop.bytesEchoed
            totals.connected += loop.connected
            totals.mismatches += loop.mismatches
            totals.shortEchoes += loop.shortEchoes
            totals.resets += loop.resets
            totals.connectFailures += loop.connectFailures
            totals.unfinished += loop.unfinished
            totals.closedByPlan += loop.closedByPlan
            totals.closedByServer += loop.closedByServer
            totals.reconnected += loop.reconnected
            totals.unitsCut += loop.unitsCut
            totals.firstConnectError = totals.firstConnectError ?? loop.firstConnectError
            totals.firstError = totals.firstError ?? loop.firstError
            totals.firstMismatch = totals.firstMismatch ?? loop.firstMismatch
            latency.add(worker.latency)
            connectTimes.add(worker.connectTimes)
            sendLags.add(worker.sendLags)
        }
        mode = configuration.mode
        host = configuration.address.host
        port = Int(configuration.address.port)
        connections = configuration.connections
        threads = configuration.threads
        size = configuration.size
        burst = configuration.messagesPerUnit
        window = configuration.window
        rate = configuration.rate
        coalesce = configuration.coalesce
        warmupSeconds = Double(configuration.warmup) / 1e9
        durationSeconds = end > windowStart ? Double(end - windowStart) / 1e9 : 0
        rounds = totals.units
        messages = totals.units * UInt64(configuration.messagesPerUnit)
        bytesSent = totals.bytesSent
        bytesEchoed = totals.bytesEchoed
        self.latency = Latency(latency)
        latencyLog = HistogramLog.Window(
            tag: configuration.ping == nil ? "flood" : "ping", startSinceEpoch: HistogramLog.epochSeconds(atMonotonic: min(windowStart, end)),
            lengthSeconds: durationSeconds, histogram: latency)
        connect = Latency(connectTimes)
        sendLag = Latency(sendLags)
        connected = totals.connected
        replacesConnections = configuration.replacesConnections
        reconnect = configuration.reconnect
        closedByPlan = totals.closedByPlan
        closedByServer = totals.closedByServer
        reconnected = totals.reconnected
        roundsCut = totals.unitsCut
        mismatches = totals.mismatches
        shortEchoes = totals.shortEchoes
        resets = totals.resets
        connectFailures = totals.connectFailures
        unfinished = totals.unfinished
        self.cpu = cpu
        self.interrupted = interrupted
        firstConnectError = totals.firstConnectError
        firstError = totals.firstError
        firstMismatch = totals.firstMismatch
    }

    // MARK: Output

    /// One JSON object with the documented, stable field names.
    func json() -> String {
        func us(_ value: Double) -> String { Format.fixed(value, 1) }
        return """
            {"mode":"\(mode.rawValue)","host":\(Format.jsonString(host)),"port":\(port),\
            "connections":\(connections),"threads":\(threads),"size":\(size),"burst":\(burst),\
            "duration_s":\(Format.fixed(durationSeconds, 3)),"rounds":\(rounds),"messages":\(messages),\
            "bytes_sent":\(bytesSent),"bytes_echoed":\(bytesEchoed),\
            "msgs_per_sec":\(Format.fixed(messagesPerSecond, 1)),"mib_per_sec":\(Format.fixed(mebibytesPerSecond, 2)),\
            "latency_us":\(latency.json),\
            "connect_us":{"p50":\(us(connect.p50)),"p99":\(us(connect.p99)),"max":\(us(connect.max))},\
            "connections_opened":\(connected),"connections_closed_by_plan":\(closedByPlan),\
            "connections_closed_by_server":\(closedByServer),"connections_failed":\(failedConnections),\
            "connections_reconnected":\(reconnected),"rounds_cut":\(roundsCut),\
            "errors":{"mismatches":\(mismatches),"short_echoes":\(shortEchoes),"resets":\(resets),\
            "connect_failures":\(connectFailures)},\
            "client_cpu_s":{"user":\(Format.fixed(cpu.user, 3)),"system":\(Format.fixed(cpu.system, 3))}}
            """
    }

    private var modeDescription: String {
        switch mode {
        case .closed: "closed loop, \(burst) x \(size) B per round\(coalesce ? " (one write per round)" : "")"
        case .open: "open loop at \(Format.fixed(rate, rate < 10 ? 2 : 0)) rounds/s per connection, \(burst) x \(size) B per round\(coalesce ? " (one write per round)" : "")"
        case .stream: "stream, \(Format.grouped(window)) B in flight per connection in \(size) B chunks\(coalesce ? " (one write per refill)" : "")"
        }
    }

    /// The readable summary of a flood run.
    func summary() -> String {
        func us(_ value: Double) -> String { value < 10 ? Format.fixed(value, 1) : Format.fixed(value, 0) }
        let percentOfCore = durationSeconds > 0 ? (cpu.user + cpu.system) / durationSeconds * 100 : 0
        let unit = mode == .stream ? "per chunk" : "per round"
        let onThreads = "on \(threads) thread\(threads == 1 ? "" : "s")"
        var lines: [String] = [
            "dummy-client flood: \(host):\(port), \(modeDescription)",
            replacesConnections
                ? "  connections  \(Format.grouped(connections)) at a time \(onThreads): \(Format.grouped(connected)) opened, " +
                  "\(Format.grouped(closedByPlan)) closed by plan, \(Format.grouped(closedByServer)) closed by server, " +
                  "\(Format.grouped(failedConnections)) failed, \(Format.grouped(reconnected)) reconnected"
                : "  connections  \(Format.grouped(connected)) of \(Format.grouped(connections)) connected, \(onThreads)",
            "  duration     \(Format.fixed(durationSeconds, 2)) s measured, after \(Format.fixed(warmupSeconds, 2)) s warm-up\(interrupted ? " (interrupted)" : "")",
            "  rounds       \(Format.grouped(rounds)) (\(Format.grouped(messages)) messages; \(Format.grouped(bytesSent)) B sent, \(Format.grouped(bytesEchoed)) B echoed)",
            "  throughput   \(Format.grouped(messagesPerSecond)) msgs/s, \(Format.fixed(mebibytesPerSecond, 2)) MiB/s echoed",
            "  latency      \(latency.summary) \(unit)\(mode == .open ? ", from the intended send time" : "")",
            mode == .open
                ? "  send lag     p50 \(us(sendLag.p50)) us, p99 \(us(sendLag.p99)) us, max \(us(sendLag.max)) us after the intended send time (part of the latency above)"
                : nil,
            "  connect      p50 \(us(connect.p50)) us, p99 \(us(connect.p99)) us, max \(us(connect.max)) us",
            "  errors       \(mismatches) mismatches, \(shortEchoes) short echoes, \(resets) resets, \(connectFailures) connect failures"
                + (reconnect && failedConnections > 0 ? " (failed connections were replaced: only mismatches fail the run)" : ""),
            roundsCut > 0
                ? "  cut          \(Format.grouped(roundsCut)) \(mode == .stream ? "chunks" : "rounds") sent but cut by a failed connection or the server's close (not lost or wrong bytes)"
                : nil,
            "  client CPU   \(Format.fixed(cpu.user, 2)) s user, \(Format.fixed(cpu.system, 2)) s system (\(Format.fixed(percentOfCore, 0))% of one core over the measured window)",
        ]
        .compactMap { $0 }
        if unfinished > 0 {
            lines.append("  note         \(unfinished) connections still had echoes outstanding when the 2 s drain ran out (not counted as errors)")
        }
        return lines.joined(separator: "\n")
    }

    /// The closing lines of a ping run.
    func pingSummary() -> String {
        func us(_ value: Double) -> String { value < 10 ? Format.fixed(value, 1) : Format.fixed(value, 0) }
        let verdict = errorCount == 0 ? "all verified" : "\(errorCount) error\(errorCount == 1 ? "" : "s")"
        var lines = ["--- \(host):\(port): \(rounds) round\(rounds == 1 ? "" : "s"), \(bytesSent) B sent, \(bytesEchoed) B echoed, \(verdict)"]
        if latency.count > 0 {
            lines.append("round trip min \(us(latency.min)) us, p50 \(us(latency.p50)) us, p99 \(us(latency.p99)) us, max \(us(latency.max)) us")
        }
        return lines.joined(separator: "\n")
    }

    /// What went wrong, one line each, for stderr.
    var problems: [String] {
        var lines: [String] = []
        if let firstConnectError {
            lines.append(connectFailures > 1 ? "\(firstConnectError) (\(connectFailures) connect failures)" : firstConnectError)
        }
        if mismatches > 0, let firstMismatch {
            lines.append("mismatch: \(firstMismatch) (\(mismatches) mismatched \(mode == .stream ? "chunks" : "rounds"))")
        }
        if resets + shortEchoes > 0, let firstError {
            lines.append("\(firstError) (\(resets) resets, \(shortEchoes) short echoes)")
        }
        if fatalErrorCount == 0, rounds == 0, !interrupted {
            lines.append("no round completed: nothing was verified")
        }
        return lines
    }
}
