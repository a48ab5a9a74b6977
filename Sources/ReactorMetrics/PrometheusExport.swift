import Metrics
import Prometheus
import Reactor

/// swift-metrics bootstrapped with a swift-prometheus registry, a server's
/// `ServerMetrics` and a `MetricsEndpoint` answering `GET /metrics` with
/// the registry's text: what `--metrics-port` turns on.
public final class PrometheusExport: Sendable {
    public let registry: PrometheusCollectorRegistry
    public let metrics: ServerMetrics
    public let endpoint: MetricsEndpoint

    /// Bootstraps `MetricsSystem` (once per process) and binds the endpoint
    /// on 127.0.0.1:`port` (or serves `listeningSocket`, one passed to this
    /// process); `start()` serves it and starts the timer.
    public init(server: Server, port: UInt16, listeningSocket: Int32? = nil, prefix: String = "reactor",
                errors: @escaping @Sendable (any Error) -> Void = { _ in }) throws {
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets["\(prefix)_connection_lifetime_seconds"] = ServerMetrics.lifetimeBuckets
        MetricsSystem.bootstrap(factory)
        self.registry = registry
        metrics = ServerMetrics(server: server, prefix: prefix)
        endpoint = try MetricsEndpoint(port: port, listeningSocket: listeningSocket, errors: errors) { [metrics] in
            metrics.update()
            var text: [UInt8] = []
            registry.emit(into: &text)
            return String(decoding: text, as: UTF8.self)
        }
    }

    public func start() throws {
        try endpoint.start()
        // On the endpoint's loop: replaying lifetimes into the histogram is per close, not for the server's loops.
        metrics.start(on: endpoint.server.loops[0])
    }
}
