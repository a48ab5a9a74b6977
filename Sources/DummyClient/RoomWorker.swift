import Reactor

/// What one loop's room members did: deliveries in the measured window,
/// errors and violations over the whole run.
struct RoomTotals: ErrorTotals {
    var deliveries: UInt64 = 0
    var broadcasts: UInt64 = 0
    var connected = 0
    var entered = 0
    var connectFailures = 0
    var resets = 0
    var disconnects = 0
    var notEntered = 0
    var unfinished = 0
    var violations = [Int](repeating: 0, count: RoomViolation.allCases.count)
    var firstViolations = [String?](repeating: nil, count: RoomViolation.allCases.count)
    var firstConnectError: String?
    var firstError: String?

    mutating func add(_ other: RoomTotals) {
        deliveries += other.deliveries
        broadcasts += other.broadcasts
        connected += other.connected
        entered += other.entered
        connectFailures += other.connectFailures
        resets += other.resets
        disconnects += other.disconnects
        notEntered += other.notEntered
        unfinished += other.unfinished
        for kind in RoomViolation.allCases {
            violations[kind.rawValue] += other.violations[kind.rawValue]
            firstViolations[kind.rawValue] = firstViolations[kind.rawValue] ?? other.firstViolations[kind.rawValue]
        }
        firstConnectError = firstConnectError ?? other.firstConnectError
        firstError = firstError ?? other.firstError
    }
}

/// One event loop's rooms (room `r` lives on loop `r % threads`, all its
/// members with it, so the checks need no locks), their members, latency
/// histograms and counters, the connect pacing and, in open loop, the pacer.
///
/// `@unchecked Sendable` as `LoopWorker`: built on the main thread, then
/// touched only on its loop's thread until the main thread joins it; the main
/// thread reads `live` (atomics) and `published` (a mutex) meanwhile, and
/// `peers` is set before any loop thread starts and only read afterwards.
final class RoomWorker: RunWorker, PacedSlots, @unchecked Sendable {
    let index: Int
    let loop: EventLoop
    let configuration: RunConfiguration
    let pattern: Pattern
    let control: RunControl
    let live = LiveCounters()
    let published = Locked(LatencyHistogram.latency())
    /// Every loop's worker, this one included: the last member to enter starts the load on all.
    var peers: [RoomWorker] = []

    private(set) var rooms: [ClientRoom] = []
    private(set) var members: [RoomMemberConnection] = []
    private(set) var pacer: OpenLoopPacer<RoomWorker>?
    private var connector: ConnectPacer?
    @exclusivity(unchecked) private(set) var latency = LatencyHistogram.latency()
    private(set) var connectTimes = LatencyHistogram.latency()
    @exclusivity(unchecked) private(set) var sendLags = LatencyHistogram.latency()
    @exclusivity(unchecked) private(set) var totals = RoomTotals()
    /// When the run started: no send time in a payload can be earlier.
    private(set) var runStart: UInt64 = 0
    @exclusivity(unchecked) private var window = MeasuredWindow()
    private var remaining = 0
    private var finishing = false

    init(index: Int, loop: EventLoop, configuration: RunConfiguration, pattern: Pattern, control: RunControl) {
        self.index = index
        self.loop = loop
        self.configuration = configuration
        self.pattern = pattern
        self.control = control
    }

    // MARK: Starting and finishing (loop thread)

    func start(at start: UInt64) {
        runStart = start
        let settings = configuration.room!
        for number in stride(from: index, to: settings.rooms, by: configuration.threads) {
            let room = ClientRoom(number: UInt32(number))
            for slot in 0..<settings.members {
                let member = RoomMemberConnection(worker: self, room: room, slot: slot, index: members.count,
                                                  membersInRoom: settings.members)
                room.members.append(member)
                members.append(member)
            }
            rooms.append(room)
        }
        remaining = members.count
        guard remaining > 0 else { return control.loopFinished() }
        publishEverySecond { [unowned self] in finishing ? nil : latency }
        connector = ConnectPacer(loop: loop, count: members.count, totalRate: configuration.connectRate,
                                 loops: configuration.threads, startedAt: start) { [unowned self] index in
            members[index].connect(to: configuration.address)
        }
        connector?.connectMore()
    }

    /// Every member of every loop has entered (or failed): the load starts at `time`.
    func beginLoad(at time: UInt64) {
        guard !finishing else { return }
        window = MeasuredWindow(loadStart: time, warmup: configuration.warmup, duration: configuration.duration)
        if configuration.mode == .open {
            pacer = OpenLoopPacer(target: self, slots: members.count, start: time, period: configuration.roundPeriod)
        }
        for member in members { member.beginLoad(at: time) }
    }

    /// A member has entered or failed; the last of the whole run starts the load everywhere.
    func memberSettled() {
        guard control.participantSettled() else { return }
        let now = monotonicNanoseconds()
        control.startLoad(at: now)
        for peer in peers {
            if peer === self { beginLoad(at: now) } else { peer.loop.execute { peer.beginLoad(at: now) } }
        }
    }

    func finish(windowEnd end: UInt64) {
        guard !finishing else { return }
        finishing = true
        window.stop(at: end)
        pacer?.stop()
        connector?.stop()
        for room in rooms { room.finish() }
        for member in members { member.finish() }
    }

    func slotDue(_ slot: Int, intendedAt: UInt64, now: UInt64) {
        members[slot].chatDue(intendedAt: intendedAt, now: now)
    }

    // MARK: Accounting (loop thread)

    @inline(__always)
    func delivered(_ bytes: Int, at now: UInt64) {
        bump(live.messages, by: 1)
        bump(live.bytesEchoed, by: UInt64(bytes))
        if window.contains(now) { totals.deliveries &+= 1 }
    }

    @inline(__always)
    func latency(_ nanoseconds: UInt64, at now: UInt64) {
        if window.contains(now) { latency.record(min(nanoseconds, LatencyHistogram.longestLatency)) }
    }

    @inline(__always)
    func broadcastCompleted(at now: UInt64) {
        if window.contains(now) { totals.broadcasts &+= 1 }
    }

    @inline(__always)
    func sendLag(_ nanoseconds: UInt64, at now: UInt64) {
        if window.contains(now) { sendLags.record(min(nanoseconds, LatencyHistogram.longestLatency)) }
    }

    func connected() {
        totals.connected += 1
        bump(live.open, by: 1)
    }

    /// Connect time: from the connect call to S_ENTER, its round trip included.
    func entered(after nanoseconds: UInt64) {
        totals.entered += 1
        connectTimes.record(min(nanoseconds, LatencyHistogram.longestLatency))
    }

    func disconnected() { bump(live.open, by: -1) }

    func memberEnded() {
        remaining -= 1
        if remaining == 0 { control.loopFinished() }
    }

    func violation(_ kind: RoomViolation, _ message: @autoclosure () -> String) {
        totals.violations[kind.rawValue] += 1
        if totals.firstViolations[kind.rawValue] == nil { totals.firstViolations[kind.rawValue] = message() }
        bump(live.errors, by: 1)
    }

    func connectFailed(_ message: String) {
        totals.connectFailures += 1
        if totals.firstConnectError == nil { totals.firstConnectError = message }
        bump(live.errors, by: 1)
    }

    func countReset(_ message: @autoclosure () -> String) {
        totals.count(\.resets, message)
        bump(live.errors, by: 1)
    }

    func countDisconnect(_ message: @autoclosure () -> String) {
        totals.count(\.disconnects, message)
        bump(live.errors, by: 1)
    }

    func notEntered(_ message: @autoclosure () -> String) {
        totals.count(\.notEntered, message)
        bump(live.errors, by: 1)
    }

    func unfinished() { totals.unfinished += 1 }
}
