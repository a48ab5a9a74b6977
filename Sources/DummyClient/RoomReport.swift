/// The outcome of a room run: its summary, `--json`, the stderr lines and
/// the exit status. Deliveries, broadcasts and latency cover the measured
/// window; errors and violations the whole run.
struct RoomReport: Sendable {
    var openLoop: Bool
    var host: String
    var port: Int
    var rooms: Int
    var members: Int
    var threads: Int
    var size: Int
    var rate: Double
    var warmupSeconds: Double
    var durationSeconds: Double
    var deliveries: UInt64
    var broadcasts: UInt64
    var latency: Report.Latency
    /// What `--histogram-out` writes: the histogram `latency` comes from.
    var latencyLog: HistogramLog.Window
    var connect: Report.Latency
    var sendLag: Report.Latency
    var totals: RoomTotals
    var cpu: CPUTime
    var interrupted: Bool

    init(configuration: RunConfiguration, workers: [RoomWorker], times: RunTimes) {
        var totals = RoomTotals()
        var latency = LatencyHistogram.latency()
        var connectTimes = LatencyHistogram.latency()
        var sendLags = LatencyHistogram.latency()
        for worker in workers {
            totals.add(worker.totals)
            latency.add(worker.latency)
            connectTimes.add(worker.connectTimes)
            sendLags.add(worker.sendLags)
        }
        let settings = configuration.room!
        openLoop = configuration.mode == .open
        host = configuration.address.host
        port = Int(configuration.address.port)
        rooms = settings.rooms
        members = settings.members
        threads = configuration.threads
        size = configuration.size
        rate = configuration.rate
        warmupSeconds = Double(configuration.warmup) / 1e9
        durationSeconds = times.end > times.windowStart ? Double(times.end - times.windowStart) / 1e9 : 0
        deliveries = totals.deliveries
        broadcasts = totals.broadcasts
        self.latency = Report.Latency(latency)
        latencyLog = HistogramLog.Window(
            tag: "room", startSinceEpoch: HistogramLog.epochSeconds(atMonotonic: min(times.windowStart, times.end)),
            lengthSeconds: durationSeconds, histogram: latency)
        connect = Report.Latency(connectTimes)
        sendLag = Report.Latency(sendLags)
        self.totals = totals
        cpu = times.cpu
        interrupted = times.interrupted
    }

    var deliveriesPerSecond: Double { durationSeconds > 0 ? Double(deliveries) / durationSeconds : 0 }
    var broadcastsPerSecond: Double { durationSeconds > 0 ? Double(broadcasts) / durationSeconds : 0 }
    var violationCount: Int { totals.violations.reduce(0, +) }
    var errorCount: Int { violationCount + totals.connectFailures + totals.resets + totals.disconnects + totals.notEntered }
    /// Every delivery checked out, and there were some.
    var succeeded: Bool { errorCount == 0 && deliveries > 0 }

    func json() -> String {
        func us(_ value: Double) -> String { Format.fixed(value, 1) }
        let violations = RoomViolation.allCases.map { "\"\($0.key)\":\(totals.violations[$0.rawValue])" }.joined(separator: ",")
        return """
            {"mode":"room","load":"\(openLoop ? "open" : "closed")","host":\(Format.jsonString(host)),"port":\(port),\
            "rooms":\(rooms),"members":\(members),"threads":\(threads),"size":\(size),"rate":\(Format.fixed(rate, 2)),\
            "duration_s":\(Format.fixed(durationSeconds, 3)),"deliveries":\(deliveries),\
            "deliveries_per_sec":\(Format.fixed(deliveriesPerSecond, 1)),"broadcasts":\(broadcasts),\
            "broadcasts_per_sec":\(Format.fixed(broadcastsPerSecond, 1)),\
            "connected":\(totals.connected),"entered":\(totals.entered),\
            "latency_us":\(latency.json),\
            "connect_us":{"p50":\(us(connect.p50)),"p99":\(us(connect.p99)),"max":\(us(connect.max))},\
            "errors":{"connect_failures":\(totals.connectFailures),"resets":\(totals.resets),\
            "disconnects":\(totals.disconnects),"not_entered":\(totals.notEntered),\(violations)},\
            "violations":\(violationCount),\
            "client_cpu_s":{"user":\(Format.fixed(cpu.user, 3)),"system":\(Format.fixed(cpu.system, 3))}}
            """
    }

    func summary() -> String {
        func us(_ value: Double) -> String { value < 10 ? Format.fixed(value, 1) : Format.fixed(value, 0) }
        let percentOfCore = durationSeconds > 0 ? (cpu.user + cpu.system) / durationSeconds * 100 : 0
        let load = openLoop
            ? "open loop at \(Format.fixed(rate, rate < 10 ? 2 : 0)) chats/s per member"
            : "closed loop (each member's next chat once its own is back)"
        let total = rooms * members
        let violations = RoomViolation.allCases.filter { totals.violations[$0.rawValue] > 0 }
            .map { "\(totals.violations[$0.rawValue]) \($0.label)" }
        var lines: [String?] = [
            "dummy-client room: \(host):\(port), \(Format.grouped(rooms)) room\(rooms == 1 ? "" : "s") x \(Format.grouped(members)) member\(members == 1 ? "" : "s"), \(size) B chats, \(load)",
            "  members      \(Format.grouped(totals.connected)) of \(Format.grouped(total)) connected, \(Format.grouped(totals.entered)) entered, on \(threads) thread\(threads == 1 ? "" : "s")",
            "  duration     \(Format.fixed(durationSeconds, 2)) s measured, after \(Format.fixed(warmupSeconds, 2)) s warm-up from the last S_ENTER\(interrupted ? " (interrupted)" : "")",
            "  deliveries   \(Format.grouped(deliveries)) S_CHATs received by all members (\(Format.grouped(broadcasts)) broadcasts back at their senders)",
            "  throughput   \(Format.grouped(deliveriesPerSecond)) deliveries/s, \(Format.grouped(broadcastsPerSecond)) broadcasts/s",
            "  latency      \(latency.summary) per delivery, from the \(openLoop ? "intended " : "")send time in the payload",
            openLoop
                ? "  send lag     p50 \(us(sendLag.p50)) us, p99 \(us(sendLag.p99)) us, max \(us(sendLag.max)) us after the intended send time (part of the latency above)"
                : nil,
            "  connect      p50 \(us(connect.p50)) us, p99 \(us(connect.p99)) us, max \(us(connect.max)) us (connect to S_ENTER, the C_ENTER round trip included)",
            "  checks       every delivery: S_ENTER first, sender in the room, payload byte for byte, per-sender sequence, one order per room: \(violations.isEmpty ? "0 violations" : violations.joined(separator: ", "))",
            "  errors       \(totals.connectFailures) connect failures, \(totals.resets) resets, \(totals.disconnects) disconnects, \(totals.notEntered) not entered",
            "  client CPU   \(Format.fixed(cpu.user, 2)) s user, \(Format.fixed(cpu.system, 2)) s system (\(Format.fixed(percentOfCore, 0))% of one core over the measured window)",
        ]
        if totals.unfinished > 0 {
            lines.append("  note         \(totals.unfinished) members were still missing chats when the 2 s drain ran out, and no member of their room had them all (not counted as errors)")
        }
        return lines.compactMap { $0 }.joined(separator: "\n")
    }

    /// What went wrong, one line each (the first of each kind), for stderr.
    var problems: [String] {
        var lines: [String] = []
        if let first = totals.firstConnectError {
            lines.append(totals.connectFailures > 1 ? "\(first) (\(totals.connectFailures) connect failures)" : first)
        }
        for kind in RoomViolation.allCases where totals.violations[kind.rawValue] > 0 {
            let count = totals.violations[kind.rawValue]
            lines.append("\(kind.label) violation: \(totals.firstViolations[kind.rawValue] ?? "") (\(count) in all)")
        }
        if totals.resets + totals.disconnects + totals.notEntered > 0, let first = totals.firstError {
            lines.append("\(first) (\(totals.resets) resets, \(totals.disconnects) disconnects, \(totals.notEntered) not entered)")
        }
        if errorCount == 0, deliveries == 0 {
            lines.append("no delivery completed in the measured window: nothing was verified")
        }
        return lines
    }
}
