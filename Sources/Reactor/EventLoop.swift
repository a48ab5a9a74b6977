import CEpoll
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// One thread, one epoll instance, the channels registered with it, and the
/// tasks and timers scheduled on it (Redis's ae, muduo's EventLoop).
///
/// Every method not marked "any thread" must be called on the loop's thread,
/// that is, from a handler, a task or a timer running on it.
public final class EventLoop: @unchecked Sendable {
    // @unchecked Sendable: the mutable state below is touched only by the thread
    // running `run()`; what other threads may touch (the task queue, the stop
    // flag) sits behind `crossThread`'s mutex and the eventfd.

    /// Bytes a single `recv` may read: one buffer per loop, shared by all its connections.
    public static let readBufferSize = 64 * 1024

    let epoll: Epoll
    private var batch = Epoll.EventBatch(capacity: 256)
    private var channels: [Channel?]
    private var generation: UInt32 = 0
    private var timers = TimerQueue()
    private var running = false
    /// The monotonic clock read once per wake-up: cheap "now" for handlers.
    private(set) var now: UInt64 = monotonicNanoseconds()
    private var ownerThread: pthread_t?
    private let wakeFD: Int32
    /// Where every connection of this loop reads into.
    let readBuffer: UnsafeMutableRawPointer

    private struct CrossThread {
        var tasks: [@Sendable () -> Void] = []
        var stopRequested = false
    }
    private let crossThread = Mutex(CrossThread())
    private var taskScratch: [@Sendable () -> Void] = []

    /// Counters of this loop, readable from any thread.
    public let stats = LoopStatistics()

    /// Called on the loop after any of its connections closed, before its handler hears of it.
    var connectionClosedHook: ((Connection) -> Void)?

    /// Set on loops of a server configured with an idle timeout.
    var idleTimeouts: IdleTimeouts?
    /// Set by `closeGracefully`: stop once the last channel is gone.
    private var stopWhenEmpty = false

    /// Number of channels registered right now (connections, listeners, connects).
    public private(set) var registeredCount = 0

    public init() throws(SystemError) {
        epoll = try Epoll()
        wakeFD = eventfd(0, CEFD_NONBLOCK | CEFD_CLOEXEC)
        guard wakeFD >= 0 else { throw SystemError("eventfd") }
        // Sized to the fd limit up front: a table that regrows leaves its old
        // copies' pages resident.
        channels = Array(repeating: nil, count: min(FileDescriptorLimit.current, 1 << 20))
        readBuffer = .allocate(byteCount: Self.readBufferSize, alignment: 16)
        try epoll.add(wakeFD, .readable, token: Self.wakeToken)
    }

    deinit {
        close(wakeFD)
        readBuffer.deallocate()
    }

    private static let wakeToken = UInt64.max

    /// True when called on the thread running this loop. Any thread.
    public var inEventLoop: Bool {
        guard let ownerThread else { return false }
        return pthread_equal(ownerThread, pthread_self()) != 0
    }

    // MARK: Running

    /// Runs the loop on the calling thread until `stop()`. Channels still open
    /// then are closed, so every fd and buffer is released when `run` returns.
    public func run() {
        ownerThread = pthread_self()
        running = true
        while running {
            let timeout = timers.timeoutMilliseconds(now: monotonicNanoseconds())
            let count: Int
            do {
                count = try epoll.wait(into: batch, timeoutMilliseconds: timeout)
            } catch {
                fatalError("\(error)") // only EBADF/EFAULT/EINVAL: a bug, not a condition
            }
            now = monotonicNanoseconds()
            for index in 0..<count {
                dispatch(token: batch.token(at: index), events: batch.events(at: index))
            }
            runDueTimers()
        }
        for channel in channels { channel?.loopStopped() }
        ownerThread = nil
    }

    @inline(__always)
    private func dispatch(token: UInt64, events: Epoll.Events) {
        if token == Self.wakeToken { return runTasks() }
        let fd = Int(truncatingIfNeeded: token & 0xFFFF_FFFF)
        guard fd < channels.count, let channel = channels[fd], channel.token == token else {
            return // stale: the channel closed earlier in this batch
        }
        channel.handle(events)
    }

    /// Makes `run()` return after the current iteration. Any thread.
    public func stop() {
        crossThread.withLock { $0.stopRequested = true }
        wake()
    }

    // MARK: Tasks and timers

    /// Runs `task` on the loop's thread soon. Any thread.
    public func execute(_ task: @escaping @Sendable () -> Void) {
        let wasEmpty = crossThread.withLock { state in
            state.tasks.append(task)
            return state.tasks.count == 1
        }
        // One wake-up per batch of tasks: the loop drains the whole queue.
        if wasEmpty { wake() }
    }

    private func wake() {
        var one: UInt64 = 1
        _ = write(wakeFD, &one, MemoryLayout<UInt64>.size)
    }

    private func runTasks() {
        var counter: UInt64 = 0
        _ = read(wakeFD, &counter, MemoryLayout<UInt64>.size) // reset before draining: no lost wake-up
        let stopRequested = crossThread.withLock { state in
            swap(&state.tasks, &taskScratch)
            return state.stopRequested
        }
        for task in taskScratch { task() }
        taskScratch.removeAll(keepingCapacity: true)
        if stopRequested { running = false }
    }

    /// Runs `task` on the loop after `delay`. Any thread; the handle cancels it.
    @discardableResult
    public func schedule(after delay: Duration, _ task: @escaping @Sendable () -> Void) -> ScheduledTask {
        let deadline = monotonicNanoseconds() + delay.nanoseconds
        let handle = ScheduledTask(id: nextTimerID.add(1, ordering: .relaxed).newValue, loop: self)
        if inEventLoop {
            timers.insert(deadline: deadline, id: handle.id, task)
        } else {
            execute { [self] in self.timers.insert(deadline: deadline, id: handle.id, task) }
        }
        return handle
    }

    /// Loop-thread variant of `schedule` whose task need not be Sendable.
    @discardableResult
    func scheduleOnLoop(after delay: Duration, _ task: @escaping () -> Void) -> ScheduledTask {
        let handle = ScheduledTask(id: nextTimerID.add(1, ordering: .relaxed).newValue, loop: self)
        timers.insert(deadline: monotonicNanoseconds() + delay.nanoseconds, id: handle.id, task)
        return handle
    }

    private let nextTimerID = Atomic<UInt64>(0)

    func cancel(_ task: ScheduledTask) {
        if inEventLoop {
            timers.cancel(task.id)
        } else {
            execute { [self] in self.timers.cancel(task.id) }
        }
    }

    private func runDueTimers() {
        guard !timers.isEmpty else { return }
        while let task = timers.popDue(now: now) { task() }
    }

    // MARK: Channels

    func register(_ channel: Channel, interest: Epoll.Events) throws(SystemError) {
        generation &+= 1
        if generation == 0 { generation = 1 }
        channel.token = UInt64(generation) << 32 | UInt64(UInt32(bitPattern: channel.fd))
        try epoll.add(channel.fd, interest, token: channel.token)
        channel.interest = interest
        let fd = Int(channel.fd)
        if fd >= channels.count {
            channels.append(contentsOf: repeatElement(nil, count: fd - channels.count + 1))
        }
        channels[fd] = channel
        registeredCount += 1
    }

    /// Forgets the channel and closes its fd (which also drops it from epoll).
    func closeAndDeregister(_ channel: Channel) {
        let fd = Int(channel.fd)
        if fd < channels.count, channels[fd] === channel {
            channels[fd] = nil
            registeredCount -= 1
        }
        close(channel.fd)
        if stopWhenEmpty && registeredCount == 0 { running = false }
    }

    /// Finishes every channel: listeners close, connections answer what they
    /// have read, flush and close. The loop stops when none is left.
    func closeGracefully() {
        stopWhenEmpty = true
        for channel in channels { channel?.finishGracefully() }
        if registeredCount == 0 { running = false }
    }
}
