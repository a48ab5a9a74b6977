import CEpoll
#if canImport(Glibc)
import Glibc
#endif

/// A thin, typed wrapper over one epoll instance: create, control, wait.
///
/// Level-triggered throughout: a handler that leaves data unread is simply
/// woken again, which keeps every handler simple and nothing can be lost.
/// Each registration carries a 64-bit token that comes back with its events.
struct Epoll: ~Copyable {
    /// The readiness conditions one registration asks for or one event reports.
    struct Events: OptionSet, Sendable {
        let rawValue: UInt32

        static let readable = Events(rawValue: CEPOLL_IN)
        static let writable = Events(rawValue: CEPOLL_OUT)
        /// The peer shut down its sending side (FIN seen).
        static let readHangup = Events(rawValue: CEPOLL_RDHUP)
        /// Both sides are shut; always reported, never asked for.
        static let hangup = Events(rawValue: CEPOLL_HUP)
        /// A pending socket error; always reported, never asked for.
        static let error = Events(rawValue: CEPOLL_ERR)
    }

    /// A batch of ready events, reused across waits so waiting allocates nothing.
    struct EventBatch: ~Copyable {
        fileprivate let events: UnsafeMutablePointer<epoll_event>
        let capacity: Int

        init(capacity: Int) {
            self.capacity = capacity
            self.events = .allocate(capacity: capacity)
        }

        deinit { events.deallocate() }

        @inline(__always)
        func token(at index: Int) -> EventToken { EventToken(rawValue: cepoll_event_token(events + index)) }

        @inline(__always)
        func events(at index: Int) -> Events { Events(rawValue: cepoll_event_flags(events + index)) }
    }

    private(set) var fd: Int32

    init() throws(SystemError) {
        let fd = epoll_create1(CEPOLL_CLOEXEC)
        guard fd >= 0 else { throw SystemError("epoll_create1") }
        self.fd = fd
    }

    deinit { if fd >= 0 { Glibc.close(fd) } }

    /// Closes the epoll fd now (its loop has finished).
    mutating func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }

    func add(_ fd: Int32, _ events: Events, token: EventToken) throws(SystemError) {
        guard cepoll_ctl(self.fd, CEPOLL_CTL_ADD, fd, events.rawValue, token.rawValue) == 0 else {
            throw SystemError("epoll_ctl(ADD)", "fd \(fd)")
        }
    }

    func modify(_ fd: Int32, _ events: Events, token: EventToken) throws(SystemError) {
        guard cepoll_ctl(self.fd, CEPOLL_CTL_MOD, fd, events.rawValue, token.rawValue) == 0 else {
            throw SystemError("epoll_ctl(MOD)", "fd \(fd)")
        }
    }

    /// Stops watching `fd`, which stays open (to be registered again under another token).
    func remove(_ fd: Int32) throws(SystemError) {
        guard cepoll_ctl(self.fd, CEPOLL_CTL_DEL, fd, 0, 0) == 0 else {
            throw SystemError("epoll_ctl(DEL)", "fd \(fd)")
        }
    }

    /// Waits up to `timeoutMilliseconds` (-1: forever) and returns how many
    /// events of `batch` are filled; 0 on timeout or when a signal interrupted.
    func wait(into batch: borrowing EventBatch, timeoutMilliseconds: Int32) throws(SystemError) -> Int {
        let count = epoll_wait(fd, batch.events, Int32(batch.capacity), timeoutMilliseconds)
        if count >= 0 { return Int(count) }
        if errno == EINTR { return 0 }
        throw SystemError("epoll_wait")
    }
}
