import CoreMetrics
import Reactor

/// A server's loop counters as swift-metrics: read from the loops' own
/// counters on a timer (once per `interval`, on a loop of the caller's
/// choice: the metrics endpoint's, so the server's own loops do none of
/// it), never per event, so metrics cost the connections nothing.
///
/// Per loop (dimension `loop`): `<prefix>_connections_opened_total`,
/// `<prefix>_connections_closed_total` (dimension `reason`, a
/// `CloseReason.Kind`), `<prefix>_connections_refused_total`,
/// `<prefix>_connections_open`, `<prefix>_bytes_received_total`,
/// `<prefix>_bytes_sent_total`, `<prefix>_backpressure_pauses_total`,
/// `<prefix>_protocol_errors_total`, `<prefix>_proxy_headers_rejected_total`. Per server: `<prefix>_loops`, and the
/// timer `<prefix>_connection_lifetime_seconds` (each closed connection's
/// lifetime, rounded up to a power of two of milliseconds, as the loops
/// bucket it: use `lifetimeBuckets` as the histogram's buckets).
public final class ServerMetrics: Sendable {
    private let server: Server
    private let interval: Duration
    private let perLoop: [LoopMetrics]
    private let lifetime: Timer
    private let state = Locked([LoopStatistics.Snapshot]())

    /// The bounds the lifetime timer's values fall on.
    public static var lifetimeBuckets: [Duration] {
        (0..<LoopStatistics.lifetimeBucketCount).compactMap(LoopStatistics.lifetimeBound)
    }

    public init(server: Server, prefix: String = "reactor", interval: Duration = .seconds(1)) {
        self.server = server
        self.interval = interval
        perLoop = server.loops.indices.map { LoopMetrics(prefix: prefix, loop: $0) }
        lifetime = Timer(label: "\(prefix)_connection_lifetime_seconds", preferredDisplayUnit: .seconds)
        Gauge(label: "\(prefix)_loops").record(server.loops.count)
        state.withLock { $0 = Array(repeating: .zero, count: server.loops.count) }
    }

    /// Starts the timer on `loop` (by default the server's loop 0); it stops with the loop.
    public func start(on loop: EventLoop? = nil) {
        let loop = loop ?? server.loops[0]
        loop.schedule(after: interval) { [self] in
            update()
            start(on: loop)
        }
    }

    /// Brings every metric up to the loops' counters now. Any thread.
    public func update() {
        state.withLock { previous in
            for (index, loop) in server.loops.enumerated() {
                let now = loop.stats.snapshot
                perLoop[index].advance(from: previous[index], to: now)
                for bucket in now.lifetimes.indices where now.lifetimes[bucket] > previous[index].lifetimes[bucket] {
                    // The bucket's upper bound (the last one's lower bound, doubled): where a histogram with these buckets counts it.
                    let value = Int64(1) << (20 + bucket)
                    for _ in 0..<(now.lifetimes[bucket] - previous[index].lifetimes[bucket]) {
                        lifetime.recordNanoseconds(value)
                    }
                }
                previous[index] = now
            }
        }
    }
}

/// One loop's metrics, and how its counters advance them.
struct LoopMetrics: Sendable {
    let opened, refused, bytesReceived, bytesSent, pauses, protocolErrors, proxyHeadersRejected: Counter
    let closed: [Counter]
    let open: Gauge

    init(prefix: String, loop: Int) {
        let loop = [("loop", "\(loop)")]
        opened = Counter(label: "\(prefix)_connections_opened_total", dimensions: loop)
        refused = Counter(label: "\(prefix)_connections_refused_total", dimensions: loop)
        bytesReceived = Counter(label: "\(prefix)_bytes_received_total", dimensions: loop)
        bytesSent = Counter(label: "\(prefix)_bytes_sent_total", dimensions: loop)
        pauses = Counter(label: "\(prefix)_backpressure_pauses_total", dimensions: loop)
        protocolErrors = Counter(label: "\(prefix)_protocol_errors_total", dimensions: loop)
        proxyHeadersRejected = Counter(label: "\(prefix)_proxy_headers_rejected_total", dimensions: loop)
        closed = CloseReason.Kind.allCases.map {
            Counter(label: "\(prefix)_connections_closed_total", dimensions: loop + [("reason", $0.rawValue)])
        }
        open = Gauge(label: "\(prefix)_connections_open", dimensions: loop)
    }

    func advance(from old: LoopStatistics.Snapshot, to new: LoopStatistics.Snapshot) {
        func add(_ counter: Counter, _ before: UInt64, _ after: UInt64) {
            if after > before { counter.increment(by: Int64(after - before)) }
        }
        add(opened, old.opened, new.opened)
        add(refused, old.refused, new.refused)
        add(bytesReceived, old.bytesReceived, new.bytesReceived)
        add(bytesSent, old.bytesSent, new.bytesSent)
        add(pauses, old.backpressurePauses, new.backpressurePauses)
        add(protocolErrors, old.protocolErrors, new.protocolErrors)
        add(proxyHeadersRejected, old.proxyHeadersRejected, new.proxyHeadersRejected)
        for kind in closed.indices { add(closed[kind], old.closedByKind[kind], new.closedByKind[kind]) }
        open.record(Int64(new.open))
    }
}
