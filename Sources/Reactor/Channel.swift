/// Anything registered with an event loop's epoll instance: a connection, a
/// listener, a connect in progress, the loop's own wake-up fd (muduo's Channel).
///
/// A channel lives on one loop and is touched only on that loop's thread.
/// @unchecked Sendable: a reference may travel to another thread only to be
/// handed back to its loop (`loop.execute { connection.write(...) }`).
public class Channel: @unchecked Sendable {
    /// The file descriptor, for logs and diagnostics; the channel owns it.
    public let fd: Int32
    /// The loop owning this channel; loops outlive their channels.
    unowned(unsafe) let loop: EventLoop
    /// The epoll token: generation in the high half, fd in the low half. The
    /// generation tells a stale event for a closed fd from one for the new
    /// channel that reused the same fd number within one batch.
    var token: UInt64 = 0
    /// What the channel is registered for right now.
    var interest: Epoll.Events = []

    init(fd: Int32, loop: EventLoop) {
        self.fd = fd
        self.loop = loop
    }

    /// Called by the loop with the events epoll reported for this channel.
    func handle(_ events: Epoll.Events) {}

    /// Called when the loop stops with the channel still open.
    func loopStopped() {}

    /// Called by a graceful shutdown: finish what is under way, then close.
    func finishGracefully() { loopStopped() }

    /// Changes what the channel is registered for; skips the syscall when
    /// nothing changes, so steady-state echo costs no epoll_ctl at all.
    @inline(__always)
    final func setInterest(_ events: Epoll.Events) throws(SystemError) {
        guard events != interest else { return }
        try loop.epoll.modify(fd, events, token: token)
        interest = events
    }
}
