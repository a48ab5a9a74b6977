import Logging
import Reactor
#if canImport(Glibc)
import Glibc
#endif

/// nginx's binary upgrade, on SIGUSR2: the executable is started again (the
/// same path, read from disk anew, with the same arguments) and handed the
/// listening socket, and the metrics endpoint's, as systemd would hand them. Once the successor says it
/// serves (`READY=1`), this process drains: it stops accepting, lets its
/// connections finish within the shutdown timeout, and exits. The socket
/// never closes meanwhile, so no connection in its backlog is lost. A
/// successor that exits or stays silent for `readyTimeout` is stopped, and
/// this process goes on serving.
final class BinaryUpgrade: Sendable {
    private let server: Server
    private let metrics: Server?
    private let executable: String
    private let arguments: [String]
    private let gracePeriod: Duration
    private let logger: Logger
    private let state = Locked(State.serving)
    static let readyTimeout = Duration.seconds(10)

    /// `executable` as this process was started: resolved now, before
    /// anything could change the working directory.
    init(server: Server, metrics: Server?, gracePeriod: Duration, logger: Logger) {
        self.server = server
        self.metrics = metrics
        let path = CommandLine.arguments[0]
        executable = path.contains("/") ? (realpath(path, nil).map { String(cString: $0) } ?? path) : path
        arguments = Array(CommandLine.arguments.dropFirst())
        self.gracePeriod = gracePeriod
        self.logger = logger
    }

    /// Where this process is: only one that serves can start an upgrade.
    private enum State {
        case serving
        case upgrading
        case handedOver(pid_t)
        /// Its listening socket is closed or closing: nothing to hand over.
        case stopping
    }

    /// Starts an upgrade unless this process is upgrading, has handed over,
    /// or is shutting down. The wait for the successor runs on a thread of
    /// its own, so the loop goes on serving meanwhile.
    func begin() {
        let refusal: String? = state.withLock { state in
            switch state {
            case .serving:
                state = .upgrading
                return nil
            case .upgrading: return "one is already under way"
            case .handedOver(let pid): return "already handed over to pid \(pid)"
            case .stopping: return "shutting down, nothing to hand over"
            }
        }
        if let refusal { return logger.warning("upgrade: \(refusal)") }
        do {
            let readiness = try SocketActivation.ReadinessSocket()
            let sockets = [SocketActivation.PassedSocket(fd: server.listeningSocket, name: "listener")]
                + (metrics.map { [SocketActivation.PassedSocket(fd: $0.listeningSocket, name: MetricsSocket.name)] } ?? [])
            let pid = try SuccessorProcess.spawn(executable, arguments: arguments, sockets: sockets, notifySocket: readiness.name)
            logger.info("upgrade: started \(executable) as pid \(pid); waiting for it to serve")
            _ = try LoopThread(name: "upgrade") { [self] in waitUntilServing(pid, readiness) }
        } catch {
            logger.error("upgrade: \(error); still serving")
            endUpgrade(.serving)
        }
    }

    /// A shutdown has begun: no upgrade may start from now on.
    func serverStopping() {
        state.withLock { $0 = .stopping }
    }

    /// Where a finished or failed upgrade leaves this process, unless it began shutting down meanwhile.
    private func endUpgrade(_ next: State) {
        state.withLock { state in
            if case .upgrading = state { state = next }
        }
    }

    private func waitUntilServing(_ pid: pid_t, _ readiness: SocketActivation.ReadinessSocket) {
        var status: Int32 = 0
        let ready = readiness.waitForReady(timeout: Self.readyTimeout) { waitpid(pid, &status, WNOHANG) == pid }
        if ready {
            endUpgrade(.handedOver(pid))
            logger.info("upgrade: pid \(pid) serves; draining (at most \(gracePeriod))")
            server.drain(gracePeriod: gracePeriod)
            metrics?.drain(gracePeriod: .seconds(1))
            return
        }
        if waitpid(pid, &status, WNOHANG) == 0 {
            logger.error("upgrade: pid \(pid) not ready within \(Self.readyTimeout); stopping it, still serving")
            kill(pid, SIGTERM)
            waitpid(pid, &status, 0)
        } else {
            logger.error("upgrade: pid \(pid) exited (status \(status)) before serving; still serving")
        }
        endUpgrade(.serving)
    }
}

/// The name the metrics endpoint's socket is passed under (`LISTEN_FDNAMES`).
enum MetricsSocket {
    static let name = "metrics"
}
