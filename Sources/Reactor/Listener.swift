/// The listening socket on its loop: the front desk that hands each arriving
/// guest a table. Accepts in batches, and survives running out of fds.
final class Listener: Channel, @unchecked Sendable {
    /// Connections accepted per wake-up at most, so a connection storm cannot
    /// starve the clients already being served on this loop.
    let acceptBatch: Int
    /// Pause after EMFILE/ENFILE before trying again. The waiting connections
    /// stay in the backlog, so nothing is lost, and the loop does not spin on
    /// a listener that stays readable.
    static let outOfDescriptorsPause = Duration.milliseconds(100)
    /// Receives each accepted fd. Set once, before the loop runs.
    var admit: (Int32) -> Void
    private let reportError: (SystemError) -> Void
    private(set) var isPaused = false

    init(fd: Int32, loop: EventLoop, acceptBatch: Int,
         admit: @escaping (Int32) -> Void, reportError: @escaping (SystemError) -> Void) {
        self.acceptBatch = acceptBatch
        self.admit = admit
        self.reportError = reportError
        super.init(fd: fd, loop: loop)
    }

    override func handle(_ events: Epoll.Events) {
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
        guard !isPaused, (try? setInterest([])) != nil else { return }
        isPaused = true
        loop.scheduleOnLoop(after: Self.outOfDescriptorsPause) { [self] in
            isPaused = false
            try? setInterest(.readable)
        }
    }

    func close() {
        loop.closeAndDeregister(self)
    }

    override func loopStopped() { close() }
}

#if canImport(Glibc)
import Glibc
#endif
