import ArgumentParser
import Reactor

/// The flags every server executable here shares: where to listen, how many
/// loops, the limits, shutdown, statistics and logging.
public struct ServerOptions: ParsableArguments {
    @Option(help: "Address to listen on; 0.0.0.0 or :: exposes the server beyond this machine.")
    public var host = "127.0.0.1"
    @Option(help: "TCP port (1-65535).")
    public var port = 7777
    @Option(help: "Event loops, one thread each (1-1024; default: one per core).")
    public var loops = Server.coreCount
    @Option(help: "Listen backlog (1-65535).")
    public var backlog = 1024
    @Option(help: "Connections beyond this are accepted and closed at once (1-10000000).")
    public var maxConnections = 10_000
    @Option(help: "Kernel send and receive buffer per connection; 0 keeps the kernel's autotuning (0-67108864 bytes).")
    public var socketBuffer = 0
    @Option(help: "Close connections silent this many seconds; 0 disables (0-86400).")
    public var idleTimeout = 600.0
    @Option(help: "On SIGINT/SIGTERM, seconds to let pending output drain (0-3600).")
    public var shutdownTimeout = 5.0
    @Option(help: "Print a statistics line every this many seconds; 0 disables (0-86400).")
    public var statsInterval = 0.0
    @Option(help: "Answer GET /metrics (Prometheus text) on 127.0.0.1 at this port; 0 disables (0-65535).")
    public var metricsPort = 0
    @Flag(help: "Behind a load balancer: every connection starts with a PROXY protocol header (v1 or v2); the client it names is the connection's peer.")
    public var proxyProtocol = false
    @Option(help: "With --proxy-protocol, close a connection whose header is not all there after this many seconds (0.001-3600).")
    public var proxyHeaderTimeout = 2.0
    @Flag(help: "Log every connection's open and close.")
    public var verbose = false

    public init() {}

    public func validate() throws {
        try check("--port", port, 1...65535)
        try check("--loops", loops, 1...1024)
        try check("--backlog", backlog, 1...65535)
        try check("--max-connections", maxConnections, 1...10_000_000)
        try check("--socket-buffer", socketBuffer, 0...(64 << 20))
        try check("--idle-timeout", idleTimeout, 0...86_400)
        try check("--shutdown-timeout", shutdownTimeout, 0...3_600)
        try check("--stats-interval", statsInterval, 0...86_400)
        try check("--metrics-port", metricsPort, 0...65535)
        try check("--proxy-header-timeout", proxyHeaderTimeout, 0.001...3_600)
        do {
            _ = try SocketAddress(host: host, port: UInt16(port))
        } catch {
            throw ValidationError("--host: \(error)")
        }
    }

    /// The server configuration these flags describe, with `backpressure` as
    /// its output limits. A socket passed as systemd passes it (`LISTEN_FDS`:
    /// socket activation, or the process upgrading to this one) is served
    /// instead of binding `--host` and `--port`; one named "metrics" is the
    /// `--metrics-port` endpoint's.
    public func configuration(backpressure: Backpressure) -> Server.Configuration {
        var configuration = Server.Configuration()
        configuration.listeningSocket = SocketActivation.passedSockets.first { $0.name != MetricsSocket.name }?.fd
        configuration.host = host
        configuration.port = UInt16(port)
        configuration.loops = loops
        configuration.backlog = Int32(backlog)
        configuration.maxConnections = maxConnections
        configuration.backpressure = backpressure
        configuration.idleTimeout = idleTimeout > 0 ? .seconds(idleTimeout) : nil
        configuration.socketBufferSize = socketBuffer > 0 ? socketBuffer : nil
        if proxyProtocol {
            var proxy = Server.ProxyProtocol()
            proxy.headerTimeout = .seconds(proxyHeaderTimeout)
            configuration.proxyProtocol = proxy
        }
        return configuration
    }
}
