import CEpoll
#if canImport(Glibc)
import Glibc
#endif

/// Delivers signals as ordinary loop events through a signalfd, so a handler
/// runs on the loop's thread, at a safe point, and may do anything.
final class SignalWatcher: EventSource {
    let fd: Int32
    var token = EventToken.free
    private unowned(unsafe) let loop: EventLoop // loops are never freed
    private let handler: (Int32) -> Void

    init(_ signals: [Int32], loop: EventLoop, handler: @escaping (Int32) -> Void) throws(SystemError) {
        var set = sigset_t()
        sigemptyset(&set)
        for signal in signals { sigaddset(&set, signal) }
        fd = signalfd(-1, &set, CSFD_NONBLOCK | CSFD_CLOEXEC)
        guard fd >= 0 else { throw SystemError("signalfd") }
        self.loop = loop
        self.handler = handler
    }

    var closesOnShutdown: Bool { false }

    func handleReadable() {
        var info = signalfd_siginfo()
        while read(fd, &info, MemoryLayout<signalfd_siginfo>.size) == MemoryLayout<signalfd_siginfo>.size {
            handler(Int32(info.ssi_signo))
        }
    }

    func close() {
        loop.deregister(self)
        Glibc.close(fd)
    }
}

extension EventLoop {
    /// Calls `handler` on this loop for each of `signals` that arrives. The
    /// signals must already be blocked in every thread (block them with
    /// `pthread_sigmask` before starting any thread), or the default action
    /// may run instead. Before `run()` or on the loop's thread.
    public func watchSignals(_ signals: [Int32], handler: @escaping (Int32) -> Void) throws(SystemError) {
        try register(SignalWatcher(signals, loop: self, handler: handler))
    }
}
