import CEpoll
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// One thread, one epoll instance, the connections and listeners registered
/// with it, and the tasks and timers scheduled on it (Redis's ae, muduo's
/// EventLoop).
///
/// Every method not marked "any thread" must be called on the loop's thread,
/// that is, from a handler, a task or a timer running on it.
public final class EventLoop: @unchecked Sendable {
    // @unchecked Sendable: the mutable state below is touched only by the thread
    // running `run()`; what other threads may touch (the task queue, the stop
    // flag) sits behind `crossThread`'s mutex and the eventfd. For the same
    // reason it is @exclusivity(unchecked): one thread, never in overlapping
    // accesses, and the dynamic checks cost ~100 instructions each, several
    // per loop iteration (callgrind: 58% of all user-space instructions).

    /// Bytes a single `recv` may read: one buffer per loop, shared by all its connections.
    public static let readBufferSize = 64 * 1024

    let epoll: Epoll
    /// The output limits of every connection on this loop.
    public let backpressure: Backpressure
    /// The handler of every connection adopted or opened here without one of
    /// its own. A `let`, so calling it costs no retain/release; a handler
    /// loaded from a connection's slot costs a pair per call.
    public let sharedHandler: (any ConnectionHandler)?
    /// The shared handler is the built-in `EchoHandler`: connections then echo
    /// right in the read path, without the call through the protocol (its
    /// frame and the second slot lookup in `write`: 3.9 of 16.6 instructions
    /// per message, callgrind). Any other handler is called as usual.
    let sharedHandlerEchoes: Bool
    /// Connection state, indexed by fd.
    @exclusivity(unchecked) var connections: ConnectionTable
    /// Where every connection of this loop reads into.
    let readBuffer: UnsafeMutableRawPointer
    /// Counters of this loop, readable from any thread.
    public let stats = LoopStatistics()

    private let batch = Epoll.EventBatch(capacity: 256)
    @exclusivity(unchecked) private var sources: [Int32: any EventSource] = [:]
    @exclusivity(unchecked) private var generation: UInt32 = 0
    @exclusivity(unchecked) private var timers = TimerQueue()
    @exclusivity(unchecked) private var running = false
    private var ownerThread: pthread_t?
    private let wakeFD: Int32
    /// Set by `closeGracefully`: the loop is finishing, and stops once no connection is left.
    @exclusivity(unchecked) private(set) var stopWhenEmpty = false
    /// Where each client connect under way is headed, for its error message.
    @exclusivity(unchecked) var connectTargets: [Connection.ID: SocketAddress] = [:]

    private struct CrossThread {
        var tasks: [Task] = []
        var stopRequested = false
    }
    private let crossThread = Mutex(CrossThread())
    @exclusivity(unchecked) private var taskScratch: [Task] = []

    /// A closure in a struct: an array of bare closures boxes each one in a
    /// heap-allocated thunk; a struct field stores it as it is (one malloc
    /// less per `execute`, measured by the Benchmarks' malloc counter).
    private struct Task {
        let body: @Sendable () -> Void
    }
    private let nextTimerID = Atomic<UInt64>(0)

    /// Called on the loop whenever a connection adopted or opened here is gone
    /// (closed, or failed to register), before its handler hears of it.
    @exclusivity(unchecked) var connectionClosedHook: (() -> Void)?
    /// Set on loops of a server configured with an idle timeout.
    @exclusivity(unchecked) var idleTimeouts: IdleTimeouts?

    /// Connections (open or connecting) on this loop right now.
    @exclusivity(unchecked) public private(set) var connectionCount = 0

    /// The monotonic clock, read once per wake-up.
    @exclusivity(unchecked) private(set) var now: UInt64 = monotonicNanoseconds()

    public init(
        backpressure: Backpressure = Backpressure(), sharedHandler: (any ConnectionHandler)? = nil
    ) throws(SystemError) {
        self.backpressure = backpressure
        self.sharedHandler = sharedHandler
        sharedHandlerEchoes = sharedHandler is EchoHandler
        epoll = try Epoll()
        wakeFD = eventfd(0, CEFD_NONBLOCK | CEFD_CLOEXEC)
        guard wakeFD >= 0 else { throw SystemError("eventfd") }
        connections = try ConnectionTable(maximumDescriptors: FileDescriptorLimit.maximum)
        readBuffer = .allocate(byteCount: Self.readBufferSize, alignment: 16)
        try epoll.add(wakeFD, .readable, token: Self.wakeToken)
    }

    deinit {
        close(wakeFD)
        readBuffer.deallocate()
    }

    /// Token bits: generation (high 32) | event-source flag (bit 31) | fd (low 31).
    private static let wakeToken = UInt64.max
    private static let sourceFlag: UInt64 = 1 << 31

    /// A loop tick is 2^20 ns (about 1 ms): what a connection's last activity is kept in.
    static func tick(_ nanoseconds: UInt64) -> UInt32 { UInt32(truncatingIfNeeded: nanoseconds >> 20) }

    /// True when called on the thread running this loop. Any thread.
    public var inEventLoop: Bool {
        guard let ownerThread else { return false }
        return pthread_equal(ownerThread, pthread_self()) != 0
    }

    // MARK: Running

    /// Runs the loop on the calling thread until `stop()`. Connections and
    /// listeners still open then are closed, so every fd and buffer is released
    /// when `run` returns.
    public func run() {
        ownerThread = pthread_self()
        running = true
        while running {
            let count: Int
            do {
                // From the clock read at the last wake-up, as libuv does: a timer
                // may fire late by one batch's processing time, and a wake-up
                // reads the clock once instead of twice.
                let timeout = TimerQueue.timeoutMilliseconds(until: timers.earliestDeadline, now: now)
                count = try waitForEvents(timeoutMilliseconds: timeout)
            } catch {
                fatalError("\(error)") // only EBADF/EFAULT/EINVAL: a bug, not a condition
            }
            let now = monotonicNanoseconds()
            self.now = now
            let tick = Self.tick(now)
            for index in 0..<count {
                dispatch(token: batch.token(at: index), events: batch.events(at: index), tick: tick)
            }
            if timers.earliestDeadline <= now { runDueTimers() }
        }
        connections.initializedSlots.forEachOpen { id, _ in Connection(loop: self, id: id).close(reason: .shutdown, on: self) }
        for source in sources.values { source.close() }
        ownerThread = nil
    }

    /// Polls first; only when nothing is ready does the loop yield its core
    /// once, and then block. When every core is busy (the load generator,
    /// other loops), the thread that feeds this loop often waits for this very
    /// core: yielding lets it run now, and the loop then finds work instead of
    /// sleeping and being woken per event. Measured with `make perf`, same
    /// build with and without the yield in one run: `--loops 2` at c=100
    /// echoed 1.72x the messages per second at a third of the server CPU per
    /// message; `--loops 1` differed within noise. A loop with work never
    /// yields; an idle one makes two syscalls more before it sleeps, which a
    /// ping-pong peer notices (c=1: 0.96x the messages per second).
    private func waitForEvents(timeoutMilliseconds timeout: Int32) throws(SystemError) -> Int {
        let ready = try epoll.wait(into: batch, timeoutMilliseconds: 0)
        if ready > 0 || timeout == 0 { return ready }
        sched_yield()
        return try epoll.wait(into: batch, timeoutMilliseconds: timeout)
    }

    @inline(__always)
    private func dispatch(token: UInt64, events: Epoll.Events, tick: UInt32) {
        if token & Self.sourceFlag == 0 {
            let fd = Int32(truncatingIfNeeded: token & 0x7FFF_FFFF)
            // A token that no longer matches is stale: that connection closed
            // earlier in this batch, and its fd may already serve another.
            guard let slot = connections.existingSlot(fd), slot.pointee.token == token else { return }
            Connection(loop: self, id: token).handle(events, slot: slot, tick: tick, on: self)
        } else if token == Self.wakeToken {
            runTasks()
        } else if let source = sources[Int32(truncatingIfNeeded: token & 0x7FFF_FFFF)], source.token == token {
            source.handleReadable()
        }
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
            state.tasks.append(Task(body: task))
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
        for task in taskScratch { task.body() }
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

    func cancel(_ task: ScheduledTask) {
        if inEventLoop {
            timers.cancel(task.id)
        } else {
            execute { [self] in self.timers.cancel(task.id) }
        }
    }

    private func runDueTimers() {
        while let task = timers.popDue(now: now) { task() }
    }

    // MARK: Registration

    private func nextToken(for fd: Int32) -> UInt64 {
        generation &+= 1
        if generation == 0 { generation = 1 } // a token is never 0: 0 marks a free slot
        return UInt64(generation) << 32 | UInt64(UInt32(bitPattern: fd))
    }

    /// Registers a connection's fd in its slot; nil (and the fd closed) on failure.
    func register(
        connectionFD fd: Int32, handler: (any ConnectionHandler)?, phase: ConnectionPhase
    ) throws(SystemError) -> (Connection, UnsafeMutablePointer<ConnectionSlot>) {
        guard let slot = connections.slot(fd) else { throw SystemError("register", "fd \(fd)", code: EMFILE) }
        let token = nextToken(for: fd)
        let reading = phase == .open
        try epoll.add(fd, reading ? Connection.readEvents : .writable, token: token)
        slot.pointee.token = token
        slot.pointee.handler = handler
        slot.pointee.phase = phase
        slot.pointee.interest = reading ? Connection.readingInterest : Connection.connectingInterest
        slot.pointee.lastActivity = Self.tick(now)
        connectionCount += 1
        increment(stats.opened)
        return (Connection(loop: self, id: token), slot)
    }

    /// Bookkeeping after a connection closed (its fd is already closed).
    func connectionClosed() {
        connectionCount -= 1
        connectionClosedHook?()
        if stopWhenEmpty && connectionCount == 0 { running = false }
    }

    func register(_ source: any EventSource) throws(SystemError) {
        source.token = nextToken(for: source.fd) | Self.sourceFlag
        try epoll.add(source.fd, .readable, token: source.token)
        sources[source.fd] = source
    }

    func deregister(_ source: any EventSource) {
        sources[source.fd] = nil
    }

    /// Finishes everything: listeners close, connections answer what they have
    /// read, flush and close. The loop stops when no connection is left.
    func closeGracefully() {
        stopWhenEmpty = true
        for case let listener as Listener in sources.values { listener.close() }
        connections.initializedSlots.forEachOpen { id, _ in Connection(loop: self, id: id).finishGracefully(on: self) }
        if connectionCount == 0 { running = false }
    }
}
