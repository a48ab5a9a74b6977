import Reactor

/// One client connection's state machine, on its loop's thread:
///
///     idle → connecting → open → finishing → closed
///
/// Open, it sends units (a round of `burst` messages, or one stream chunk)
/// taken straight from the shared `Pattern`, and verifies every echoed byte
/// against the same pattern at the same stream offset with one `memcmp`. A
/// unit is done when its last byte has come back; its latency is then
/// recorded. Finishing, it sends nothing more, waits for what is still in
/// flight, and closes. Nothing here allocates per round.
///
/// With `--rounds-per-connection` or `--reconnect`, a connection that ends
/// before the run does (by plan, by the server's close between rounds, or, with
/// `--reconnect`, by a failure) goes back to idle and the worker opens a fresh
/// one in its place: same id, stream offsets from 0 again.
final class ClientConnection: ConnectionHandler {
    enum State: UInt8 { case idle, connecting, open, finishing, closed }

    let id: Int
    /// The worker owns its clients and outlives them (both live as long as the
    /// run). Unmanaged rather than unowned(unsafe), which costs a retain and a
    /// release around every use (callgrind).
    private let workerReference: Unmanaged<LoopWorker>
    @inline(__always) private var worker: LoopWorker { workerReference.takeUnretainedValue() }
    /// The hot path's calls into the worker, without the retain and release
    /// a strong reference would cost around each.
    @inline(__always)
    private func onWorker<Result>(_ body: (LoopWorker) -> Result) -> Result {
        workerReference._withUnsafeGuaranteedRef(body)
    }
    private let isPing: Bool
    private let coalesce: Bool
    private let roundPeriod: UInt64
    private let maxPendingOutput: Int
    private let pattern: Pattern
    private let phase: Int
    private let mode: LoadMode
    private let unitBytes: UInt64
    private let writeSize: Int
    private let size: Int
    private let source: SocketAddress?
    /// `--rounds-per-connection` (`UInt64.max`: unlimited): units sent before this connection retires.
    private let unitLimit: UInt64
    private let replacesConnections: Bool
    private let reconnects: Bool

    // @exclusivity(unchecked) on the state every round touches: only the
    // loop's thread uses it, never in overlapping accesses (see LoopWorker).
    @exclusivity(unchecked) private(set) var state = State.idle
    @exclusivity(unchecked) private var connection: Connection?
    private var connectStartedAt: UInt64 = 0
    /// The current connection opened (a connect that never did is a connect failure).
    private var opened = false
    /// The current connection sent its last planned unit and closes when that is echoed.
    private var retiring = false
    /// The next connection replaces one that failed or that the server closed.
    private var reconnecting = false
    /// Replaced connections in a row that completed no unit: the backoff grows with them.
    private var fruitlessInARow = 0

    /// Stream offsets: bytes handed to `write`, and bytes echoed (and verified).
    @exclusivity(unchecked) private(set) var sentBytes: UInt64 = 0
    @exclusivity(unchecked) private(set) var echoedBytes: UInt64 = 0
    @exclusivity(unchecked) private(set) var unitsSent: UInt64 = 0
    @exclusivity(unchecked) private(set) var unitsEchoed: UInt64 = 0
    /// The last unit a mismatch was counted for, so a unit counts once.
    @exclusivity(unchecked) private var lastBadUnit = UInt64.max

    /// Closed loop: when the unit in flight was sent.
    @exclusivity(unchecked) private var unitStartedAt: UInt64 = 0
    /// Open loop: the intended send time of unit 0, and units due so far.
    @exclusivity(unchecked) private var firstIntendedAt: UInt64 = 0
    @exclusivity(unchecked) private var unitsIntended: UInt64 = 0
    /// Stream mode: send time of each chunk in flight, a ring indexed by chunk number.
    private var sendTimes: UnsafeMutablePointer<UInt64>?
    private var sendTimesCapacity = 0
    private let window: UInt64

    init(id: Int, worker: LoopWorker) {
        self.id = id
        workerReference = .passUnretained(worker)
        let configuration = worker.configuration
        isPing = configuration.ping != nil
        coalesce = configuration.coalesce
        roundPeriod = configuration.roundPeriod
        maxPendingOutput = configuration.maxPendingOutput
        pattern = worker.pattern
        phase = worker.pattern.phase(for: id)
        mode = configuration.mode
        unitBytes = UInt64(configuration.unitBytes)
        writeSize = configuration.writeSize
        size = configuration.size
        window = UInt64(configuration.window)
        source = configuration.sourceAddress
        unitLimit = configuration.roundsPerConnection.map { UInt64($0) } ?? .max
        replacesConnections = configuration.replacesConnections
        reconnects = configuration.reconnect
    }

    deinit { sendTimes?.deallocate() }

    /// Bytes sent whose echo has not come back yet.
    var outstandingBytes: UInt64 { sentBytes - echoedBytes }

    // MARK: Connecting

    /// Opens a connection (the first, or one in place of the last), starting its stream over.
    func connect(to address: SocketAddress) {
        guard state == .idle else { return }
        state = .connecting
        (sentBytes, echoedBytes, unitsSent, unitsEchoed, unitsIntended) = (0, 0, 0, 0, 0)
        lastBadUnit = .max
        (opened, retiring) = (false, false)
        connectStartedAt = monotonicNanoseconds()
        let connection = worker.loop.connect(to: address, from: source, handler: self)
        // connect may already have opened (or failed and closed) the connection.
        if state == .connecting { self.connection = connection }
    }

    /// The client's loops never stop reading: stopping while its own writes
    /// are stuck would deadlock against a server that does the same.
    static let alwaysRead = Backpressure(highWaterMark: .max, lowWaterMark: .max)

    func connectionOpened(_ connection: Connection) {
        let now = monotonicNanoseconds()
        self.connection = connection
        opened = true
        worker.connected(after: now - connectStartedAt)
        if reconnecting {
            reconnecting = false
            worker.reconnected()
        }
        if state == .finishing { return connection.close() } // the run ended while it was connecting
        state = .open
        switch mode {
        case .closed: sendRound(at: now)
        case .open: break // the pacer calls `roundDue` at each intended send time
        case .stream:
            if sendTimes == nil {
                sendTimesCapacity = Int(window / UInt64(size)) + 1
                sendTimes = .allocate(capacity: sendTimesCapacity)
            }
            fillWindow(at: now)
        }
    }

    // MARK: Sending

    /// Closed loop (and ping): sends the next round now.
    func sendRound(at now: UInt64) {
        guard state == .open, let connection else { return }
        unitStartedAt = now
        writeUnit(connection, at: now)
    }

    /// Writes one unit: `burst` writes of one message, or one write with `--coalesce`.
    /// The unit counts as sent first: a write that fails closes the connection
    /// at once, which then counts it among those cut.
    @inline(__always)
    private func writeUnit(_ connection: Connection, at now: UInt64) {
        unitsSent &+= 1
        var remaining = Int(unitBytes)
        while remaining > 0 {
            let count = min(remaining, writeSize)
            connection.write(pattern.bytes(phase: phase, offset: sentBytes, count: count))
            sentBytes &+= UInt64(count)
            remaining -= count
        }
        let count = Int(unitBytes)
        onWorker { $0.sent(count, at: now) }
        if unitsSent == unitLimit { retire() }
    }

    /// `--rounds-per-connection`: the last unit is out. Like finishing, the
    /// connection sends nothing more and closes (a FIN, nothing left unread)
    /// once that unit's echo is verified; then a fresh one replaces it.
    @inline(never)
    private func retire() {
        guard state == .open else { return } // a write that failed has closed it already
        state = .finishing
        retiring = true
    }

    /// Open loop: the pacer says a round of this connection was due at `intendedAt`.
    @inline(__always)
    func roundDue(intendedAt: UInt64, now: UInt64) {
        guard state == .open else { return }
        if unitsIntended == 0 { firstIntendedAt = intendedAt }
        unitsIntended &+= 1
        sendDueRounds(at: now)
    }

    /// Open loop: sends every round that is due, unless too much output is
    /// queued already; those go out later, still timed from their intended time.
    @inline(__always)
    private func sendDueRounds(at now: UInt64) {
        guard state == .open, let connection else { return }
        let limit = maxPendingOutput
        while unitsSent < unitsIntended, state == .open, connection.pendingOutputBytes <= limit, !connection.isClosed {
            let intendedAt = firstIntendedAt &+ unitsSent &* roundPeriod
            let lag = now >= intendedAt ? now - intendedAt : 0
            onWorker { $0.sendLag(lag, at: now) }
            writeUnit(connection, at: now)
        }
    }

    /// Stream mode: tops the bytes in flight up to the window, in whole chunks.
    @inline(__always)
    private func fillWindow(at now: UInt64) {
        guard state == .open, let connection, let sendTimes else { return }
        let chunk = UInt64(size)
        let room = min((window - outstandingBytes) / chunk, unitLimit &- unitsSent)
        guard room > 0 else { return }
        let chunks = coalesce ? room : 1
        var remaining = coalesce ? Int(room * chunk) : Int(chunk)
        var written = 0
        while true {
            for _ in 0..<chunks { // counted first, as in writeUnit
                sendTimes[Int(unitsSent % UInt64(sendTimesCapacity))] = now
                unitsSent &+= 1
            }
            while remaining > 0 {
                let count = min(remaining, Pattern.slack)
                connection.write(pattern.bytes(phase: phase, offset: sentBytes, count: count))
                sentBytes &+= UInt64(count)
                remaining -= count
            }
            written += Int(chunks * chunk)
            if connection.isClosed || (window - outstandingBytes) < chunk || unitsSent == unitLimit { break }
            remaining = Int(chunk) // one message per write: next chunk
        }
        onWorker { $0.sent(written, at: now) }
        if unitsSent == unitLimit { retire() }
    }

    func connectionDrained(_ connection: Connection) {
        if mode == .open { sendDueRounds(at: monotonicNanoseconds()) }
    }

    // MARK: Receiving

    func connection(_ connection: Connection, received bytes: UnsafeRawBufferPointer) -> Int {
        verify(bytes, on: connection)
        return bytes.count
    }

    private func verify(_ bytes: UnsafeRawBufferPointer, on connection: Connection) {
        let now = monotonicNanoseconds()
        var bytes = bytes
        let expected = outstandingBytes
        if UInt64(bytes.count) > expected {
            // More came back than was sent: no echo does that.
            worker.noteMismatch("connection \(id): \(UInt64(bytes.count) - expected) B arrived that were never sent")
            if lastBadUnit != unitsSent { lastBadUnit = unitsSent; worker.countMismatch() }
            bytes = UnsafeRawBufferPointer(rebasing: bytes[..<Int(expected)])
            if bytes.isEmpty { return }
        }
        if !pattern.matches(bytes, phase: phase, offset: echoedBytes) { countMismatches(in: bytes) }
        echoedBytes &+= UInt64(bytes.count)
        let count = bytes.count
        onWorker { $0.echoed(count, at: now) }
        while echoedBytes >= (unitsEchoed &+ 1) &* unitBytes { completeUnit(at: now) }
        switch mode {
        case .closed: break
        case .open:
            onWorker { $0.pacer?.poll(now: now) } // send what fell due meanwhile, without waiting for the timer
            sendDueRounds(at: now)
        case .stream: fillWindow(at: now)
        }
        if state == .finishing, outstandingBytes == 0 { connection.close() }
    }

    @inline(__always)
    private func completeUnit(at now: UInt64) {
        let startedAt: UInt64
        switch mode {
        case .closed: startedAt = unitStartedAt
        case .open: startedAt = firstIntendedAt &+ unitsEchoed &* roundPeriod
        case .stream: startedAt = sendTimes![Int(unitsEchoed % UInt64(sendTimesCapacity))]
        }
        unitsEchoed &+= 1
        let latency = now >= startedAt ? now - startedAt : 0
        onWorker { $0.unitCompleted(latency: latency, at: now) }
        guard mode == .closed, state == .open else { return }
        if isPing, let ping = worker.ping {
            ping.roundCompleted(self, number: unitsEchoed, bytes: unitBytes, latency: latency,
                                mismatched: lastBadUnit == unitsEchoed &- 1, at: now)
        } else {
            sendRound(at: now)
        }
    }

    /// Error path: finds which units of this read differ, counts each once,
    /// and describes the first difference.
    private func countMismatches(in bytes: UnsafeRawBufferPointer) {
        var done = 0
        while done < bytes.count {
            let offset = echoedBytes &+ UInt64(done)
            let unit = offset / unitBytes
            let run = min(bytes.count - done, Int((unit &+ 1) &* unitBytes - offset))
            let piece = UnsafeRawBufferPointer(rebasing: bytes[done..<(done + run)])
            if let (index, expectedByte) = pattern.firstMismatch(in: piece, phase: phase, offset: offset) {
                if unit != lastBadUnit {
                    lastBadUnit = unit
                    worker.countMismatch()
                }
                let at = offset &+ UInt64(index)
                let inUnit = at % unitBytes
                worker.noteMismatch("""
                    connection \(id): echoed byte \(at) (\(mode == .stream ? "chunk" : "round") \(unit + 1), \
                    message \(inUnit / UInt64(size) + 1), byte \(inUnit % UInt64(size))) is \
                    \(hex(piece[index])), sent \(hex(expectedByte))
                    """)
            }
            done += run
        }
    }

    private func hex(_ byte: UInt8) -> String {
        let digits = Array("0123456789abcdef")
        return "0x\(digits[Int(byte >> 4)])\(digits[Int(byte & 15)])"
    }

    // MARK: Finishing

    /// Sends nothing more; closes once every echo is back (at once if none is
    /// outstanding). A connect still under way is abandoned.
    func finish() {
        switch state {
        case .idle:
            state = .closed
            worker.clientEnded()
        case .connecting:
            state = .finishing // a connect cannot be cancelled: closed as soon as it completes
        case .open:
            state = .finishing
            if outstandingBytes == 0 { connection?.close() }
        case .finishing, .closed:
            break
        }
    }

    /// How a connection ended, which decides what replaces it.
    private enum Ending {
        /// The run is over for it (or it failed without `--reconnect`): nothing replaces it.
        case finished
        /// `--rounds-per-connection`: replaced at once.
        case planned
        /// The server's FIN with no unit partly echoed, or a failure with
        /// `--reconnect`: replaced after a backoff.
        case unplanned
    }

    func connectionClosed(_ connection: Connection, reason: CloseReason) {
        let previous = state
        state = .closed
        self.connection = nil // sendTimes stays until deinit: a write that failed may be unwinding through fillWindow
        let ending = countEnding(reason, previous: previous)
        guard ending != .finished, !worker.isFinishing else { return worker.clientEnded() }
        state = .idle
        if ending == .planned { return worker.reopen(clientID: id, after: .zero) }
        // Bounded (10, 20, 40, then 50 ms) so that a server that is gone is not hammered.
        fruitlessInARow = unitsEchoed > 0 ? 0 : fruitlessInARow + 1
        reconnecting = true
        worker.reopen(clientID: id, after: .milliseconds(min(50, 10 << min(fruitlessInARow, 3))))
    }

    /// Counts how the connection ended, by kind, and says what replaces it.
    private func countEnding(_ reason: CloseReason, previous: State) -> Ending {
        let failed: Ending = reconnects ? .unplanned : .finished
        if previous == .connecting || (previous == .finishing && !opened) {
            let message = previous == .finishing
                ? "connect \(worker.configuration.address): not established before the end of the run"
                : "\(reason)"
            worker.connectFailed(message)
            return failed
        }
        worker.disconnected()
        /// Closed in order, once every echo was back: the plan's end or the run's.
        func orderly() -> Ending {
            guard retiring else { return .finished }
            worker.closedByPlan()
            return .planned
        }
        switch reason {
        case .local:
            return orderly()
        case .shutdown:
            if outstandingBytes > 0 { worker.unfinished() }
            return .finished
        case .reset:
            worker.cut(unitsSent &- unitsEchoed)
            worker.countReset("connection \(id): reset by peer with \(outstandingBytes) B of echo outstanding")
            return failed
        case .peerClosed, .idleTimeout, .error, .framing, .protocolError, .slowPeer:
            if previous == .finishing, outstandingBytes == 0 { return orderly() }
            worker.cut(unitsSent &- unitsEchoed)
            if reason == .peerClosed, replacesConnections, echoedBytes == unitsEchoed &* unitBytes {
                // Between rounds, as a draining server closes: what it left unanswered is only cut.
                worker.closedByServer()
                return .unplanned
            }
            worker.countShortEcho("connection \(id): \(reason) with \(outstandingBytes) B of echo outstanding")
            return failed
        }
    }
}
