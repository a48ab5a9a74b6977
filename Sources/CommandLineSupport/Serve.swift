import ArgumentParser
import Logging
import Reactor
import ReactorMetrics
#if canImport(Glibc)
import Glibc
#endif

/// What every server executable here does around its `Server`: logging to
/// stderr, the fd limit raised, SIGPIPE ignored, SIGINT/SIGTERM through loop
/// 0 (graceful shutdown; a second signal exits at once), the listening line,
/// `--stats-interval` lines, and the totals when it stops. A failed syscall
/// is logged with its errno text and exits 1.
///
/// `makeServer` builds the server from the errors callback it is given;
/// `statistics` adds to each statistics line and to the final one.
public func serve(
    _ name: String, options: ServerOptions,
    statistics: @escaping @Sendable () -> String = { "" },
    makeServer: (_ logger: Logger, _ errors: @escaping @Sendable (any Error) -> Void) throws -> Server
) throws {
    LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
    var logger = Logger(label: name)
    logger.logLevel = options.verbose ? .debug : .info
    FileDescriptorLimit.raiseToMaximum()
    // Sockets send with MSG_NOSIGNAL; this covers the rest: a log reader
    // that goes away (a closed stderr pipe) must not kill the server.
    signal(SIGPIPE, SIG_IGN)
    // Signals arrive through a signalfd on loop 0: blocked before any
    // thread starts, so that no thread takes them the default way.
    _ = blockStopSignals(also: [SIGUSR2])

    let eventLogger = logger
    let server: Server
    do {
        server = try makeServer(logger) { eventLogger.warning("\($0)") }
        let gracePeriod = Duration.seconds(options.shutdownTimeout)
        var export: PrometheusExport?
        if options.metricsPort > 0 {
            export = try PrometheusExport(
                server: server, port: UInt16(options.metricsPort), listeningSocket: SocketActivation.passedSocket(named: MetricsSocket.name),
                errors: { eventLogger.warning("metrics: \($0)") })
            try export?.start()
            logger.info("metrics on http://127.0.0.1:\(options.metricsPort)/metrics")
        }
        let upgrade = BinaryUpgrade(server: server, metrics: export?.endpoint.server, gracePeriod: gracePeriod, logger: eventLogger)
        var signalsSeen = 0
        try server.loops[0].watchSignals([SIGINT, SIGTERM]) { signal in
            signalsSeen += 1
            if signalsSeen > 1 { _exit(130) }
            eventLogger.info("signal \(signal): stopping (a second one exits at once)")
            upgrade.serverStopping()
            server.shutdown(gracePeriod: gracePeriod)
        }
        try server.loops[0].watchSignals([SIGUSR2]) { _ in upgrade.begin() }
        defer { export?.endpoint.shutdown() }
        print("\(name) listening on \(server.localAddress) (loops \(options.loops), pid \(getpid()))")
        fflush(nil) // stdout may be a pipe: the listening line must go out now
        SocketActivation.notifyReady() // to systemd (Type=notify), or to the process upgrading to this one
        if options.statsInterval > 0 {
            StatisticsReporter(server: server, interval: .seconds(options.statsInterval), logger: logger, extra: statistics).start()
        }
        try server.run()
    } catch {
        logger.error("\(error)")
        throw ExitCode.failure
    }
    let totals = server.statistics
    logger.info("""
        stopped: \(totals.opened) accepted, \(totals.refused) refused, \(totals.bytesReceived) B in, \
        \(totals.bytesSent) B out\(options.proxyProtocol ? ", \(totals.proxyHeadersRejected) PROXY headers refused" : "")\(statistics())
        """)
}
