import Logging
import Reactor

/// `--stats-interval`: one line per interval with connection totals and
/// throughput, and whatever else the server adds (`extra`).
final class StatisticsReporter: Sendable {
    private let server: Server
    private let interval: Duration
    private let logger: Logger
    private let loop: EventLoop
    private let extra: @Sendable () -> String

    init(server: Server, interval: Duration, logger: Logger, extra: @escaping @Sendable () -> String) {
        self.server = server
        self.interval = interval
        self.logger = logger
        self.loop = server.loops[0]
        self.extra = extra
    }

    func start() { tick(previous: server.statistics, at: monotonicNanoseconds()) }

    private func tick(previous: LoopStatistics.Snapshot, at then: UInt64) {
        loop.schedule(after: interval) { [self] in
            let now = monotonicNanoseconds()
            let current = server.statistics
            let seconds = Double(now - then) / 1e9
            let mebibytesPerSecond = Double(current.bytesReceived - previous.bytesReceived) / seconds / 1_048_576
            logger.info("""
                open \(server.connectionCount), accepted \(current.opened), closed \(current.closed), \
                refused \(current.refused), in \(current.bytesReceived) B, out \(current.bytesSent) B, \
                \((mebibytesPerSecond * 100).rounded() / 100) MiB/s in\(extra())
                """)
            tick(previous: current, at: now)
        }
    }
}
