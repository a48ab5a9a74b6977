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
    // running `run()`; what other threads may touch (the task queue, the run
    // state) sits behind `crossThread`'s mutex and the eventfd. For the same
    // reason it is @exclusivity(unchecked): one thread, never in overlapping
    // accesses, and the dynamic checks would cost several calls per event.

    /// Bytes a single `recv` may read: one buffer per loop, shared by all its connections.
    public static let readBufferSize = 64 * 1024

    @exclusivity(unchecked) var epoll: Epoll
    /// The output limits of every connection on this loop.
    public let backpressure: Backpressure
    /// The handler of every connection adopted or opened here without one of its own.
    let sharedHandlerBox: HandlerBox?
    /// The handler of every connection adopted or opened on this loop without one
    /// of its own; nil when each connection brings its own.
    public var sharedHandler: (any ConnectionHandler)? { sharedHandlerBox?.handler }
    /// Connection state, indexed by fd.
    @exclusivity(unchecked) var connections: ConnectionTable
    /// Where every connection of this loop reads into.
    let readBuffer: UnsafeMutableRawPointer
    /// The ranges of one gathering send (`OutputQueue.maximumGather` of them).
    let gatherVectors: UnsafeMutablePointer<iovec>
    /// Counters of this loop, readable from any thread.
    public let stats = LoopStatistics()

    private let batch = Epoll.EventBatch(capacity: 256)
    @exclusivity(unchecked) private var sources: [Int32: any EventSource] = [:]
    @exclusivity(unchecked) private var generation: UInt32 = 0
    @exclusivity(unchecked) private var timers = TimerQueue()
    @exclusivity(unchecked) private var running = false
    private let wakeFD: Int32
    /// Set by `closeGracefully`: the loop is finishing, and stops once no connection is left.
    @exclusivity(unchecked) private(set) var stopWhenEmpty = false
    /// Where each client connect under way is headed, for its error message.
    @exclusivity(unchecked) var connectTargets: [EventToken: SocketAddress] = [:]
    /// The client and the address it connected to, from the PROXY header,
    /// of connections adopted behind a proxy.
    var proxiedAddresses: [EventToken: (source: SocketAddress, destination: SocketAddress)] = [:]

    /// What the loop does after the current batch of events, before it waits again.
    enum DeferredWork {
        /// Tell the handler if the connection's writability changed.
        case writabilityNotice(EventToken)
        /// Offer the connection's unconsumed input to its handler again.
        case offerInput(EventToken)
        /// Send what `enqueue` queued for the connection.
        case flush(EventToken)
    }
    @exclusivity(unchecked) var deferredWork: [DeferredWork] = []
    @exclusivity(unchecked) private var deferredScratch: [DeferredWork] = []
    /// Handlers of connections closed in this batch: released after it, so
    /// none is freed while one of its callbacks is still running.
    @exclusivity(unchecked) var retiredHandlers: [Unmanaged<HandlerBox>] = []
    /// Concurrency jobs enqueued on this thread (`EventLoopExecutor.swift`).
    @exclusivity(unchecked) var jobs: [UnownedJob] = []
    @exclusivity(unchecked) var jobScratch: [UnownedJob] = []
    /// Any list above has entries: one flag to test per batch.
    @exclusivity(unchecked) var hasDeferredWork = false
    /// Drained output queues, ready for the next connection with output pending.
    @exclusivity(unchecked) var spareOutputQueues: [OutputQueue] = []

    private enum RunState { case created, running, finished }
    private struct CrossThread {
        var tasks: [Task] = []
        var stopRequested = false
        var runState = RunState.created
    }
    private let crossThread = Locked(CrossThread())
    @exclusivity(unchecked) private var taskScratch: [Task] = []

    /// A closure in a struct: an array of bare closures boxes each one in a
    /// heap-allocated thunk; a struct field stores it as it is (one malloc
    /// less per `execute`).
    private struct Task {
        let body: @Sendable () -> Void
    }
    private let nextTimerID = Atomic<UInt64>(0)

    /// Called on the loop whenever a connection adopted or opened here is gone
    /// (closed, or failed to register), before its handler hears of it.
    @exclusivity(unchecked) var connectionClosedHook: (() -> Void)?
    /// Set on loops of a server configured with an idle timeout.
    @exclusivity(unchecked) var idleTimeouts: IdleTimeouts?

    /// Connections (open or connecting) on this loop right now. Loop thread.
    @exclusivity(unchecked) public private(set) var connectionCount = 0

    /// The monotonic clock, read once per wake-up.
    @exclusivity(unchecked) private(set) var now: UInt64 = monotonicNanoseconds()

    /// A loop is never deallocated: `Connection` and `ScheduledTask` handles
    /// hold it unretained (a retain per callback would cost more than the
    /// callback), so the object must outlive every handle anyone keeps. Its
    /// fds and buffers are released when `run()` returns; what stays is
    /// this object's few hundred bytes, and its shared handler.
    public init(
        backpressure: Backpressure = Backpressure(), sharedHandler: (any ConnectionHandler)? = nil
    ) throws(SystemError) {
        self.backpressure = backpressure
        sharedHandlerBox = sharedHandler.map(HandlerBox.init)
        epoll = try Epoll()
        wakeFD = eventfd(0, CEFD_NONBLOCK | CEFD_CLOEXEC)
        guard wakeFD >= 0 else { throw SystemError("eventfd") }
        connections = try ConnectionTable(maximumDescriptors: FileDescriptorLimit.maximum)
        readBuffer = .allocate(byteCount: Self.readBufferSize, alignment: 16)
        gatherVectors = .allocate(capacity: OutputQueue.maximumGather)
        try epoll.add(wakeFD, .readable, token: .wake)
        _ = Unmanaged.passRetained(self) // never released: see above
    }

    /// A loop tick is 2^20 ns (about 1 ms): what a connection's last activity is kept in.
    static func tick(_ nanoseconds: UInt64) -> UInt32 { UInt32(truncatingIfNeeded: nanoseconds >> 20) }

    /// True when called on the thread running this loop. Any thread: a
    /// thread-local read, so every `Connection` method can afford it.
    @inline(__always)
    var isCurrent: Bool {
        UInt(bitPattern: cepoll_current_loop()) == UInt(bitPattern: Unmanaged.passUnretained(self).toOpaque())
    }

    /// True when called on the thread running this loop. Any thread.
    public var inEventLoop: Bool { isCurrent }

    // MARK: Running

    /// Runs the loop on the calling thread until `stop()`. Connections and
    /// listeners still open then are closed, and every fd and buffer of the
    /// loop is released when `run` returns; a loop runs once.
    public func run() {
        precondition(claimRun(), "EventLoop.run(): this loop has already run")
        cepoll_set_current_loop(Unmanaged.passUnretained(self).toOpaque())
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
            if hasDeferredWork { runDeferredWork() }
        }
        connections.initializedSlots.forEachOpen { token, _ in close(token, reason: .shutdown) }
        for source in sources.values { source.close() }
        runDeferredWork()
        // What other threads submitted meanwhile still runs here (a task
        // resumed by the closes above, say), a bounded number of rounds.
        for _ in 0..<16 where crossThread.withLock({ !$0.tasks.isEmpty }) {
            runTasks()
            runDeferredWork()
        }
        cepoll_set_current_loop(nil)
        releaseResources()
    }

    /// Polls first; only when nothing is ready does the loop yield its core
    /// once, and then block. When every core is busy (the load generator,
    /// other loops), the thread that feeds this loop often waits for this very
    /// core: yielding lets it run now, and the loop then finds work instead of
    /// sleeping and being woken per event. A loop with work never yields; an
    /// idle one makes two syscalls more before it sleeps (Reactor.docc, Architecture).
    private func waitForEvents(timeoutMilliseconds timeout: Int32) throws(SystemError) -> Int {
        let ready = try epoll.wait(into: batch, timeoutMilliseconds: 0)
        if ready > 0 || timeout == 0 { return ready }
        sched_yield()
        return try epoll.wait(into: batch, timeoutMilliseconds: timeout)
    }

    @inline(__always)
    private func dispatch(token: EventToken, events: Epoll.Events, tick: UInt32) {
        if !token.isSource {
            // A token that no longer matches is stale: that connection closed
            // earlier in this batch, and its fd may already serve another.
            guard let slot = connections.slot(for: token) else { return }
            handleConnectionEvents(events, slot: slot, tick: tick)
        } else if token == .wake {
            runTasks()
        } else if let source = sources[token.fd], source.token == token {
            source.handleReadable()
        }
    }

    /// Writability notices, re-offered input and enqueued output, and the
    /// concurrency jobs made ready meanwhile; then the handlers of
    /// connections closed meanwhile. Handlers and jobs called here may add
    /// more work; it runs before the loop waits again.
    private func runDeferredWork() {
        while !deferredWork.isEmpty || !jobs.isEmpty {
            if !jobs.isEmpty { runJobs() }
            swap(&deferredWork, &deferredScratch) // both keep their storage: no allocation per batch
            for item in deferredScratch {
                switch item {
                case .writabilityNotice(let token): deliverWritabilityNotice(token)
                case .offerInput(let token): offerInputAgain(token)
                case .flush(let token): flushEnqueued(token)
                }
            }
            deferredScratch.removeAll(keepingCapacity: true)
        }
        for box in retiredHandlers { box.release() }
        retiredHandlers.removeAll(keepingCapacity: true)
        hasDeferredWork = false
    }

    /// Makes `run()` return after the current iteration. Any thread.
    public func stop() {
        crossThread.withLock { state in
            state.stopRequested = true
            if state.runState != .finished { wake() }
        }
    }

    /// Frees the fds and buffers once the loop will not run (again). Tasks
    /// submitted from now on are dropped, and stale handles find no slot.
    private func releaseResources() {
        crossThread.withLock { state in
            state.runState = .finished
            state.tasks.removeAll()
            // Under the lock: `execute` writes the eventfd under it too, so none writes a closed fd.
            Glibc.close(wakeFD)
        }
        epoll.close()
        connections.release()
        timers = TimerQueue()
        sources = [:]
        connectTargets = [:]
        proxiedAddresses = [:]
        spareOutputQueues = []
        readBuffer.deallocate()
        gatherVectors.deallocate()
    }

    /// For a server that was made but never started: frees this loop's fds
    /// and buffers if it has not run. Any thread.
    func releaseIfNeverRun() {
        if claimRun() { releaseResources() }
    }

    /// True for the one caller that moves the loop out of `.created`: it runs
    /// the loop, or releases it unrun.
    private func claimRun() -> Bool {
        crossThread.withLock { state in
            guard state.runState == .created else { return false }
            state.runState = .running
            return true
        }
    }

    // MARK: Tasks and timers

    /// Runs `task` on the loop's thread soon, after the tasks submitted
    /// before it. Any thread. Once the loop has finished running, does nothing.
    public func execute(_ task: @escaping @Sendable () -> Void) {
        _ = submit(task)
    }

    /// `execute`, telling whether the task was taken (false once the loop has finished).
    func submit(_ task: @escaping @Sendable () -> Void) -> Bool {
        crossThread.withLock { state in
            guard state.runState != .finished else { return false }
            state.tasks.append(Task(body: task))
            // One wake-up per batch of tasks: the loop drains the whole queue.
            if state.tasks.count == 1 { wake() }
            return true
        }
    }

    /// With `crossThread` locked.
    private func wake() {
        var one: UInt64 = 1
        _ = Glibc.write(wakeFD, &one, MemoryLayout<UInt64>.size)
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
        let deadline = monotonicNanoseconds().addingSaturating(delay.nanoseconds)
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
        timers.insert(deadline: monotonicNanoseconds().addingSaturating(delay.nanoseconds), id: handle.id, task)
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

    private func nextToken(for fd: Int32, isSource: Bool) -> EventToken {
        generation &+= 1
        if generation == 0 { generation = 1 } // generation 0 would make token 0, a free slot's
        return EventToken(generation: generation, fd: fd, isSource: isSource)
    }

    /// Registers a connection's fd in its slot, with `handler` (boxed) as its handler.
    func register(
        connectionFD fd: Int32, handler: HandlerBox, phase: ConnectionPhase
    ) throws(SystemError) -> (Connection, UnsafeMutablePointer<ConnectionSlot>) {
        guard let slot = connections.slot(fd) else { throw SystemError("register", "fd \(fd)", code: EMFILE) }
        let token = nextToken(for: fd, isSource: false)
        let reading = phase == .open
        try epoll.add(fd, reading ? ConnectionInterest.readEvents : .writable, token: token)
        slot.pointee.token = token
        slot.pointee.handler = .passRetained(handler)
        slot.pointee.phase = phase
        slot.pointee.flags = []
        slot.pointee.interest = reading ? ConnectionInterest.read : ConnectionInterest.write
        slot.pointee.lastActivity = Self.tick(now)
        slot.pointee.openedAt = slot.pointee.lastActivity
        connectionCount += 1
        increment(stats.opened)
        return (Connection(loop: self, token: token), slot)
    }

    /// Bookkeeping after a connection closed (its fd is already closed).
    func connectionClosed() {
        connectionCount -= 1
        connectionClosedHook?()
        stopIfDrained()
    }

    /// Accepted sockets whose PROXY header is still being read: connections
    /// to be, which a draining loop waits for too.
    private(set) var pendingProxyHeaders = 0

    func proxyHeaderStarted() { pendingProxyHeaders += 1 }

    /// Called once the reader is done, after the connection (if any) is adopted.
    func proxyHeaderEnded() {
        pendingProxyHeaders -= 1
        stopIfDrained()
    }

    private func stopIfDrained() {
        if stopWhenEmpty && connectionCount == 0 && pendingProxyHeaders == 0 { running = false }
    }

    func register(_ source: any EventSource) throws(SystemError) {
        source.token = nextToken(for: source.fd, isSource: true)
        try epoll.add(source.fd, .readable, token: source.token)
        sources[source.fd] = source
    }

    func deregister(_ source: any EventSource) {
        sources[source.fd] = nil
    }

    /// Listeners close; connections, and those whose PROXY header is on its
    /// way, go on. The loop stops when none is left.
    func stopAccepting() {
        stopWhenEmpty = true
        for case let listener as Listener in sources.values { listener.close() }
        stopIfDrained()
    }

    /// Finishes everything: listeners and half-read PROXY headers close,
    /// connections answer what they have read, flush and close. The loop
    /// stops when no connection is left.
    func closeGracefully() {
        stopWhenEmpty = true
        for source in sources.values where source.closesOnShutdown { source.close() }
        connections.initializedSlots.forEachOpen { token, _ in finishGracefully(token) }
        stopIfDrained()
    }
}
