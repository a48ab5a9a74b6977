#if canImport(Glibc)
import Glibc
#endif

/// The listening socket on its loop: the front desk that hands each arriving
/// guest a table. Accepts in batches, and survives running out of fds.
final class Listener: EventSource {
    let fd: Int32
    /// The epoll token the loop gave this listener.
    var token = EventToken.free
    private unowned(unsafe) let loop: EventLoop // loops are never freed
    /// Connections accepted per wake-up at most, so a connection storm cannot
    /// starve the clients already being served on this loop.
    private let acceptBatch: Int
    /// Pause after EMFILE/ENFILE before trying again. The waiting connections
    /// stay in the backlog, so nothing is lost, and the loop does not spin on
    /// a listener that stays readable.
    static let outOfDescriptorsPause = Duration.milliseconds(100)
    /// Receives each accepted fd.
    private let admit: (Int32) -> Void
    private let reportError: (SystemError) -> Void
    private var isPaused = false
    private var isClosed = false

    init(fd: Int32, loop: EventLoop, acceptBatch: Int,
         admit: @escaping (Int32) -> Void, reportError: @escaping (SystemError) -> Void) {
        self.fd = fd
        self.loop = loop
        self.acceptBatch = acceptBatch
        self.admit = admit
        self.reportError = reportError
    }

    var closesOnShutdown: Bool { true }

    func handleReadable() {
        for _ in 0..<acceptBatch {
            switch Socket.accept(from: fd) {
            case .accepted(let connection):
                admit(connection)
            case .wouldBlock:
                return
            case .outOfDescriptors:
                reportError(SystemError("accept", "(pausing accepts for 100 ms)", code: EMFILE))
                return pause()
            case .failed(let code):
                // ENOBUFS, ENOMEM, EPERM (firewall): transient for this listener; back off too.
                reportError(SystemError("accept", code: code))
                return pause()
            }
        }
    }

    private func pause() {
        guard !isPaused, (try? loop.epoll.modify(fd, [], token: token)) != nil else { return }
        isPaused = true
        loop.scheduleOnLoop(after: Self.outOfDescriptorsPause) { [self] in
            isPaused = false
            if !isClosed { try? loop.epoll.modify(fd, .readable, token: token) }
        }
    }

    func close() {
        guard !isClosed else { return }
        isClosed = true
        loop.deregister(self)
        Glibc.close(fd)
    }
}
