import ArgumentParser
import CommandLineSupport
import Logging
import Reactor
#if canImport(Glibc)
import Glibc
#endif

@main
struct EchoServer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "echo-server",
        abstract: "A multi-client TCP echo server on the Reactor event loop.")

    @Option(help: "Address to listen on; 0.0.0.0 or :: exposes the server beyond this machine.")
    var host = "127.0.0.1"
    @Option(help: "TCP port (1-65535).")
    var port = 7777
    @Option(help: "Event loops, one thread each (1-1024; default: one per core).")
    var loops = Server.coreCount
    @Option(help: "Listen backlog (1-65535).")
    var backlog = 1024
    @Option(help: "Connections beyond this are accepted and closed at once (1-10000000).")
    var maxConnections = 10_000
    @Option(help: "Pending output per connection above which it stops reading (1024-1073741824 bytes).")
    var maxPendingBytes = Backpressure().highWaterMark
    @Option(help: "Kernel send and receive buffer per connection; 0 keeps the kernel's autotuning (0-67108864 bytes).")
    var socketBuffer = 0
    @Option(help: "Close connections silent this many seconds; 0 disables (0-86400).")
    var idleTimeout = 600.0
    @Option(help: "On SIGINT/SIGTERM, seconds to let pending output drain (0-3600).")
    var shutdownTimeout = 5.0
    @Option(help: "Print a statistics line every this many seconds; 0 disables (0-86400).")
    var statsInterval = 0.0
    @Flag(help: "Log every connection's open (peer, MSS) and close (reason, bytes, duration).")
    var verbose = false

    func validate() throws {
        try check("--port", port, 1...65535)
        try check("--loops", loops, 1...1024)
        try check("--backlog", backlog, 1...65535)
        try check("--max-connections", maxConnections, 1...10_000_000)
        try check("--max-pending-bytes", maxPendingBytes, 1024...(1 << 30))
        try check("--socket-buffer", socketBuffer, 0...(64 << 20))
        try check("--idle-timeout", idleTimeout, 0...86_400)
        try check("--shutdown-timeout", shutdownTimeout, 0...3_600)
        try check("--stats-interval", statsInterval, 0...86_400)
        do {
            _ = try SocketAddress(host: host, port: UInt16(port))
        } catch {
            throw ValidationError("--host: \(error)")
        }
    }

    func run() throws {
        LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
        var logger = Logger(label: "echo-server")
        logger.logLevel = verbose ? .debug : .info
        FileDescriptorLimit.raiseToMaximum()
        // Sockets send with MSG_NOSIGNAL; this covers the rest: a log reader
        // that goes away (a closed stderr pipe) must not kill the server.
        signal(SIGPIPE, SIG_IGN)
        // Signals arrive through a signalfd on loop 0: blocked before any
        // thread starts, so that no thread takes them the default way.
        _ = blockStopSignals()

        var configuration = Server.Configuration()
        configuration.host = host
        configuration.port = UInt16(port)
        configuration.loops = loops
        configuration.backlog = Int32(backlog)
        configuration.maxConnections = maxConnections
        configuration.backpressure = Backpressure(highWaterMark: maxPendingBytes, lowWaterMark: maxPendingBytes / 4)
        configuration.idleTimeout = idleTimeout > 0 ? .seconds(idleTimeout) : nil
        configuration.socketBufferSize = socketBuffer > 0 ? socketBuffer : nil

        let verbose = verbose
        let eventLogger = logger
        let server: Server
        do {
            let errors: @Sendable (SystemError) -> Void = { eventLogger.warning("\($0)") }
            server = verbose
                ? try Server(configuration: configuration, errors: errors) { _ in LoggingEchoHandler(logger: eventLogger) }
                : try Server(configuration: configuration, errors: errors, handler: EchoHandler())
            let gracePeriod = Duration.seconds(shutdownTimeout)
            var signalsSeen = 0
            try server.loops[0].watchSignals([SIGINT, SIGTERM]) { signal in
                signalsSeen += 1
                if signalsSeen > 1 { _exit(130) }
                eventLogger.info("signal \(signal): stopping (a second one exits at once)")
                server.shutdown(gracePeriod: gracePeriod)
            }
            print("echo-server listening on \(server.localAddress) (loops \(loops), pid \(getpid()))")
            fflush(nil) // stdout may be a pipe: the listening line must go out now
            if statsInterval > 0 { StatisticsReporter(server: server, interval: .seconds(statsInterval), logger: logger).start() }
            try server.run()
        } catch {
            logger.error("\(error)")
            throw ExitCode.failure
        }
        let totals = server.statistics
        logger.info("stopped: \(totals.opened) accepted, \(totals.refused) refused, \(totals.bytesReceived) B in, \(totals.bytesSent) B out")
    }
}
