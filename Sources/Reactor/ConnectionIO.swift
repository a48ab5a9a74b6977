#if canImport(Glibc)
import Glibc
#endif

/// A slot's `interest` bits, and the epoll events each stands for.
enum ConnectionInterest {
    static let read: UInt8 = 1
    static let write: UInt8 = 2
    static let readEvents: Epoll.Events = [.readable, .readHangup]

    static func events(_ bits: UInt8) -> Epoll.Events {
        var events: Epoll.Events = bits & read != 0 ? readEvents : []
        if bits & write != 0 { events.insert(.writable) }
        return events
    }
}

/// A connection's life on its loop, a byte's way through it: read into the
/// loop's buffer → handler (what it leaves unconsumed waits in the slot for
/// the next read) → write: sent at once, or queued and flushed when the
/// socket is writable → close.
///
/// Reading stops while pending output is above the high-water mark and
/// starts again at the low-water mark, and while the handler has paused it.
/// A FIN from the peer, or `close()`, ends reading; the connection then
/// closes once its output is flushed (after `close()` with input still
/// unread: FIN, then the input is dropped until the peer's FIN, so no RST
/// destroys the output). Errors and resets close at once. Loop thread only.
extension EventLoop {
    typealias Slot = UnsafeMutablePointer<ConnectionSlot>

    // MARK: Events

    /// Called by the loop with the events epoll reported for this connection.
    @inline(__always)
    func handleConnectionEvents(_ events: Epoll.Events, slot: Slot, tick: UInt32) {
        // The common case first: an open connection, nothing queued, data to read.
        if events == .readable, slot.pointee.interest == ConnectionInterest.read, slot.pointee.phase == .open {
            return readAvailable(slot, tick: tick)
        }
        handleOtherEvents(events, slot: slot, tick: tick)
    }

    @inline(never)
    private func handleOtherEvents(_ events: Epoll.Events, slot: Slot, tick: UInt32) {
        let token = slot.pointee.token
        if slot.pointee.phase == .connecting { return completeConnect(slot) }
        if events.contains(.error) {
            return close(slot, reason: .failure("socket", code: Socket.pendingError(token.fd)))
        }
        if slot.pointee.phase == .lingering { return dropInput(slot) }
        if slot.pointee.hasOutput, !events.isDisjoint(with: [.writable, .hangup]) {
            flush(slot)
            guard slot.pointee.token == token else { return }
        }
        if slot.pointee.interest & ConnectionInterest.read != 0, !events.isDisjoint(with: [.readable, .readHangup, .hangup]) {
            readAvailable(slot, tick: tick)
        }
    }

    // MARK: Reading

    /// Reads until the socket is drained, reading pauses, or 16 reads have
    /// run (so one busy peer cannot starve the others).
    @inline(__always)
    private func readAvailable(_ slot: Slot, tick: UInt32) {
        slot.pointee.lastActivity = tick
        // The common case, a short read, is one recv and no loop: fewer values
        // live across the calls, so fewer spills.
        if receiveOnce(slot) { readMore(slot) }
    }

    @inline(never)
    private func readMore(_ slot: Slot) {
        for _ in 1..<16 where !receiveOnce(slot) { return }
    }

    /// One recv, its bytes handed to the handler. True when the read filled
    /// the buffer and the connection still reads: there may be more.
    @inline(__always)
    private func receiveOnce(_ slot: Slot) -> Bool {
        guard slot.pointee.input.isEmpty else { return receiveAfterUnconsumedInput(slot) }
        let token = slot.pointee.token
        let result = Socket.receive(token.fd, into: readBuffer, count: Self.readBufferSize)
        guard case .transferred(let count) = result else { return receiveStopped(result, slot) }
        increment(stats.bytesReceived, by: UInt64(count))
        let bytes = UnsafeRawBufferPointer(start: readBuffer, count: count)
        let consumed = deliver(bytes, slot: slot, token: token)
        if consumed < count { keepUnconsumed(bytes, from: consumed, slot: slot, token: token) }
        // A short read means the socket is drained: skip the read that would say EAGAIN.
        return count == Self.readBufferSize && stillReading(slot, token)
    }

    /// Hands `bytes` to the connection's handler; returns how many it consumed.
    @inline(__always)
    private func deliver(_ bytes: UnsafeRawBufferPointer, slot: Slot, token: EventToken) -> Int {
        // An open connection always has its handler (set by register, cleared by close).
        let consumed = slot.pointee.handler.unsafelyUnwrapped._withUnsafeGuaranteedRef {
            $0.handler.connection(Connection(loop: self, token: token), received: bytes)
        }
        precondition(consumed >= 0 && consumed <= bytes.count, "received(\(bytes.count) B) returned \(consumed)")
        return consumed
    }

    @inline(__always)
    private func stillReading(_ slot: Slot, _ token: EventToken) -> Bool {
        slot.pointee.token == token && slot.pointee.interest & ConnectionInterest.read != 0
            && slot.pointee.phase == .open
    }

    /// What the handler left of `bytes` waits in the slot for the next read.
    @inline(never)
    private func keepUnconsumed(_ bytes: UnsafeRawBufferPointer, from consumed: Int, slot: Slot, token: EventToken) {
        guard slot.pointee.token == token, slot.pointee.phase == .open else { return }
        slot.pointee.input.append(UnsafeRawBufferPointer(rebasing: bytes[consumed...]))
    }

    /// A recv that moved no bytes: drained, the peer's FIN, or an error.
    @inline(never)
    private func receiveStopped(_ result: IOResult, _ slot: Slot) -> Bool {
        switch result {
        case .transferred, .wouldBlock:
            break
        case .endOfFile:
            endInput(slot)
        case .failed(let code):
            close(slot, reason: .failure("recv", code: code))
        }
        return false
    }

    /// The peer's FIN: the connection answers and flushes what it has, then
    /// closes, unless the handler holds it open until its own `close()`.
    private func endInput(_ slot: Slot) {
        slot.pointee.phase = .peerFinished
        guard let held = tellInputEnded(slot) else { return }
        if held { slot.pointee.flags.insert(.heldOpenByHandler) }
        finishIfFlushed(slot)
    }

    /// Tells the handler nothing more will be read; returns whether it holds
    /// the connection open, or nil when it closed it meanwhile.
    private func tellInputEnded(_ slot: Slot) -> Bool? {
        let token = slot.pointee.token
        let phase = slot.pointee.phase
        let held = slot.pointee.handler.unsafelyUnwrapped._withUnsafeGuaranteedRef {
            $0.handler.connectionInputEnded(Connection(loop: self, token: token))
        }
        guard slot.pointee.token == token, slot.pointee.phase == phase else { return nil }
        return held
    }

    /// A read while a partial frame waits. A short one goes in front of the
    /// new bytes in the read buffer (and its storage is freed), so the
    /// handler sees one contiguous run; a long one (over a quarter of the
    /// read buffer) has the new bytes appended to it instead.
    @inline(never)
    private func receiveAfterUnconsumedInput(_ slot: Slot) -> Bool {
        let token = slot.pointee.token
        let waiting = slot.pointee.input.count
        let short = waiting <= Self.readBufferSize / 4
        let destination = short ? readBuffer + waiting : readBuffer
        let room = short ? Self.readBufferSize - waiting : Self.readBufferSize
        let result = Socket.receive(token.fd, into: destination, count: room)
        guard case .transferred(let count) = result else { return receiveStopped(result, slot) }
        increment(stats.bytesReceived, by: UInt64(count))
        let fresh = UnsafeRawBufferPointer(start: destination, count: count)
        if short {
            readBuffer.copyMemory(from: slot.pointee.input.readableBytes.baseAddress!, byteCount: waiting)
            slot.pointee.input.release()
            let bytes = UnsafeRawBufferPointer(start: readBuffer, count: waiting + count)
            let consumed = deliver(bytes, slot: slot, token: token)
            if consumed < bytes.count { keepUnconsumed(bytes, from: consumed, slot: slot, token: token) }
        } else {
            slot.pointee.input.append(fresh)
            deliverUnconsumedInput(slot, token: token)
        }
        return count == room && stillReading(slot, token)
    }

    /// Offers the slot's waiting input to the handler again. The buffer is
    /// moved out of the slot while lent, so a close during the callback
    /// cannot free it under the handler.
    private func deliverUnconsumedInput(_ slot: Slot, token: EventToken) {
        var input = slot.pointee.input.take()
        let consumed = deliver(input.readableBytes, slot: slot, token: token)
        guard slot.pointee.token == token, slot.pointee.phase == .open else { return }
        input.consume(consumed)
        slot.pointee.input = input
    }

    /// After reading resumes (`resumeReading()`, or output drained to the
    /// low-water mark): what the handler left unconsumed is offered before
    /// anything new is read.
    func offerInputAgain(_ token: EventToken) {
        guard let slot = connections.slot(for: token), slot.pointee.phase == .open,
              !slot.pointee.flags.contains(.readingPausedByHandler), !slot.pointee.input.isEmpty else { return }
        deliverUnconsumedInput(slot, token: token)
    }

    func setReadingPaused(_ paused: Bool, _ token: EventToken) {
        guard let slot = connections.slot(for: token), slot.pointee.phase == .open else { return }
        if paused {
            slot.pointee.flags.insert(.readingPausedByHandler)
        } else {
            slot.pointee.flags.remove(.readingPausedByHandler)
            if !slot.pointee.input.isEmpty { postpone(.offerInput(token)) }
        }
        updateInterest(slot)
    }

    // MARK: Writing

    /// The slot of an open (or peer-finished) connection, for a write of `count` > 0 bytes.
    @inline(__always)
    private func slotTakingWrites(_ token: EventToken, count: Int) -> Slot? {
        guard count > 0, let slot = connections.slot(for: token), slot.pointee.phase.acceptsWrites else { return nil }
        return slot
    }

    @inline(__always)
    func write(_ bytes: UnsafeRawBufferPointer, to token: EventToken) {
        guard let slot = slotTakingWrites(token, count: bytes.count) else { return }
        sendOrQueue(slot, count: bytes.count) {
            Socket.send(token.fd, bytes.baseAddress!, count: bytes.count)
        } queueFrom: { sent, output in
            output.append(copying: UnsafeRawBufferPointer(rebasing: bytes[sent...]))
        }
    }

    func write(_ header: UnsafeRawBufferPointer, _ body: UnsafeRawBufferPointer, to token: EventToken) {
        guard let slot = slotTakingWrites(token, count: header.count + body.count) else { return }
        sendOrQueue(slot, count: header.count + body.count) {
            gatherVectors[0] = iovec(iov_base: UnsafeMutableRawPointer(mutating: header.baseAddress), iov_len: header.count)
            gatherVectors[1] = iovec(iov_base: UnsafeMutableRawPointer(mutating: body.baseAddress), iov_len: body.count)
            return Socket.send(token.fd, vectors: gatherVectors, count: 2)
        } queueFrom: { sent, output in
            if sent < header.count { output.append(copying: UnsafeRawBufferPointer(rebasing: header[sent...])) }
            output.append(copying: UnsafeRawBufferPointer(rebasing: body[max(0, sent - header.count)...]))
        }
    }

    func write(_ buffer: SharedBuffer, to token: EventToken) {
        guard let slot = slotTakingWrites(token, count: buffer.count) else { return }
        sendOrQueue(slot, count: buffer.count) {
            Socket.send(token.fd, buffer.storage.bytes, count: buffer.count)
        } queueFrom: { sent, output in
            output.append(buffer, from: sent)
        }
    }

    /// Queues `buffer` for the flush after the loop's batch, unless output
    /// is already waiting for the socket (it then goes out with it).
    /// False when pending output is above the high-water mark afterwards.
    func enqueue(_ buffer: SharedBuffer, to token: EventToken) -> Bool {
        guard let slot = slotTakingWrites(token, count: buffer.count) else { return true }
        // Already waiting for the socket: it goes out with that.
        var pending = slot.pointee.withOutput { output in
            output.append(buffer)
            return output.memoryCost
        }
        if pending == nil {
            let output = spareOutputQueues.popLast() ?? OutputQueue()
            output.append(buffer)
            pending = output.memoryCost
            slot.pointee.attachOutput(output)
            if !slot.pointee.flags.contains(.flushQueued) {
                slot.pointee.flags.insert(.flushQueued)
                postpone(.flush(token))
            }
        }
        // Pending output only grew, and the flag is current: only an upward crossing is possible.
        guard !slot.pointee.flags.contains(.aboveHighWater) else { return false }
        if pending.unsafelyUnwrapped > backpressure.highWaterMark { trackWatermarks(slot) }
        return !slot.pointee.flags.contains(.aboveHighWater)
    }

    /// The flush after the batch, for what `enqueue` queued.
    func flushEnqueued(_ token: EventToken) {
        guard let slot = connections.slot(for: token) else { return }
        slot.pointee.flags.remove(.flushQueued)
        if slot.pointee.hasOutput { flush(slot) }
    }

    /// Sends at once if nothing is queued, and queues what the socket did
    /// not take (all of it if output is already queued: order is kept).
    @inline(__always)
    private func sendOrQueue(
        _ slot: Slot, count: Int, send: () -> IOResult, queueFrom: (_ sent: Int, OutputQueue) -> Void
    ) {
        var sent = 0
        if !slot.pointee.hasOutput {
            switch send() {
            case .transferred(let transferred):
                increment(stats.bytesSent, by: UInt64(transferred))
                if transferred == count { return }
                sent = transferred
            case .wouldBlock, .endOfFile:
                break
            case .failed(let code):
                return sendFailed(slot, code: code)
            }
        }
        queue(slot, from: sent, queueFrom)
    }

    @inline(never)
    private func sendFailed(_ slot: Slot, code: Int32) {
        close(slot, reason: .failure("send", code: code))
    }

    /// The slow path of a write, out of line: what the socket did not take
    /// joins the queue, and the connection registers for writability.
    @inline(never)
    private func queue(_ slot: Slot, from sent: Int, _ queueFrom: (_ sent: Int, OutputQueue) -> Void) {
        let output: OutputQueue
        if let queued = slot.pointee.output {
            output = queued
        } else {
            output = spareOutputQueues.popLast() ?? OutputQueue()
            slot.pointee.attachOutput(output)
        }
        queueFrom(sent, output)
        outputChanged(slot)
    }

    /// Sends what is queued, as much as the socket takes, one gathering send at a time.
    private func flush(_ slot: Slot) {
        let fd = slot.pointee.token.fd
        while let output = slot.pointee.output {
            let ranges = output.gather(into: gatherVectors, capacity: OutputQueue.maximumGather)
            switch Socket.send(fd, vectors: gatherVectors, count: ranges) {
            case .transferred(let sent):
                increment(stats.bytesSent, by: UInt64(sent))
                output.consume(sent)
                if output.isEmpty { retire(from: slot) }
            case .wouldBlock, .endOfFile:
                return outputChanged(slot)
            case .failed(let code):
                return close(slot, reason: .failure("sendmsg", code: code))
            }
        }
        outputChanged(slot)
        if slot.pointee.phase != .open { return finishIfFlushed(slot) }
        let token = slot.pointee.token
        slot.pointee.handler.unsafelyUnwrapped._withUnsafeGuaranteedRef {
            $0.handler.connectionDrained(Connection(loop: self, token: token))
        }
    }

    /// A drained queue goes back to the loop's spares (up to
    /// `maximumSpareOutputQueues`, and only if it never grew large), its
    /// storage kept: output that comes and goes, as a broadcast's does,
    /// allocates nothing once warm.
    private func retire(from slot: Slot) {
        guard let output = slot.pointee.detachOutput(),
              spareOutputQueues.count < Self.maximumSpareOutputQueues, output.rangeCapacity <= 256 else { return }
        spareOutputQueues.append(output)
    }

    static let maximumSpareOutputQueues = 1_024

    /// Pending output changed: track the marks, then register for what the
    /// connection needs now.
    private func outputChanged(_ slot: Slot) {
        trackWatermarks(slot)
        updateInterest(slot)
    }

    /// A crossing of the high- or low-water mark queues a notice for the
    /// handler, told after the batch: never from inside a write.
    private func trackWatermarks(_ slot: Slot) {
        let pending = slot.pointee.withOutput { $0.memoryCost } ?? 0
        let above = slot.pointee.flags.contains(.aboveHighWater)
        if above ? pending <= backpressure.lowWaterMark : pending > backpressure.highWaterMark {
            slot.pointee.flags.formSymmetricDifference(.aboveHighWater)
            if !above { increment(stats.backpressurePauses) }
            if !slot.pointee.flags.contains(.noticeQueued) {
                slot.pointee.flags.insert(.noticeQueued)
                postpone(.writabilityNotice(slot.pointee.token))
            }
            // Reading resumes: what the handler left unconsumed is offered again, as after resumeReading().
            if above, !slot.pointee.input.isEmpty { postpone(.offerInput(slot.pointee.token)) }
        }
    }

    func deliverWritabilityNotice(_ token: EventToken) {
        guard let slot = connections.slot(for: token), slot.pointee.phase != .closing else { return }
        slot.pointee.flags.remove(.noticeQueued)
        let writable = !slot.pointee.flags.contains(.aboveHighWater)
        guard writable == slot.pointee.flags.contains(.toldUnwritable) else { return } // flapped back meanwhile
        slot.pointee.flags.formSymmetricDifference(.toldUnwritable)
        slot.pointee.handler.unsafelyUnwrapped._withUnsafeGuaranteedRef {
            $0.handler.connectionWritabilityChanged(Connection(loop: self, token: token), isWritable: writable)
        }
    }

    private func postpone(_ work: DeferredWork) {
        deferredWork.append(work)
        hasDeferredWork = true
    }

    /// Registers for exactly what the state needs: writable while output is
    /// pending; readable while open, unless paused. Skips the syscall when
    /// nothing changes, so steady-state echo makes no epoll_ctl.
    private func updateInterest(_ slot: Slot) {
        var wanted: UInt8 = slot.pointee.hasOutput ? ConnectionInterest.write : 0
        switch slot.pointee.phase {
        case .lingering:
            wanted = ConnectionInterest.read
        case .open where slot.pointee.flags.isDisjoint(with: [.aboveHighWater, .readingPausedByHandler]):
            wanted |= ConnectionInterest.read
        default:
            break
        }
        guard wanted != slot.pointee.interest else { return }
        let token = slot.pointee.token
        do {
            try epoll.modify(token.fd, ConnectionInterest.events(wanted), token: token)
            slot.pointee.interest = wanted
        } catch {
            close(slot, reason: .error(error))
        }
    }

    // MARK: Connecting

    private func completeConnect(_ slot: Slot) {
        let token = slot.pointee.token
        let code = Socket.pendingError(token.fd)
        guard code == 0 else {
            let peer = connectTargets[token]?.description ?? "fd \(token.fd)"
            return close(slot, reason: .error(SystemError("connect", peer, code: code)))
        }
        slot.pointee.phase = .open
        connectTargets[token] = nil
        Socket.setNoDelay(token.fd)
        updateInterest(slot)
        guard slot.pointee.token == token else { return }
        slot.pointee.handler.unsafelyUnwrapped._withUnsafeGuaranteedRef {
            $0.handler.connectionOpened(Connection(loop: self, token: token))
        }
    }

    // MARK: Closing

    /// `close()`: flush, then close. A connect under way is abandoned at once.
    func requestClose(_ token: EventToken) {
        guard let slot = connections.slot(for: token) else { return }
        switch slot.pointee.phase {
        case .connecting:
            close(slot, reason: .local)
        case .open, .peerFinished:
            slot.pointee.phase = .closeRequested
            slot.pointee.flags.remove(.heldOpenByHandler)
            finishIfFlushed(slot)
        case .closeRequested, .lingering, .closing:
            return
        }
    }

    /// Answers what the socket already holds, then closes once flushed (or,
    /// if its handler holds it open, once the handler closes it).
    func finishGracefully(_ token: EventToken) {
        guard let slot = connections.slot(for: token) else { return }
        switch slot.pointee.phase {
        case .connecting:
            close(slot, reason: .shutdown)
        case .open:
            readAvailable(slot, tick: slot.pointee.lastActivity)
            guard slot.pointee.token == token, slot.pointee.phase == .open, let held = tellInputEnded(slot) else { return }
            if held {
                // Its handler answers later: it may still write, and closes the connection itself.
                slot.pointee.phase = .peerFinished
                slot.pointee.flags.insert(.heldOpenByHandler)
                return updateInterest(slot)
            }
            slot.pointee.phase = .closeRequested
            finishIfFlushed(slot)
        case .peerFinished, .closeRequested, .lingering, .closing:
            return
        }
    }

    /// A finishing connection closes once its output is gone (lingering first
    /// if input is still unread); until then it waits for writability only.
    private func finishIfFlushed(_ slot: Slot) {
        guard !slot.pointee.hasOutput, !slot.pointee.flags.contains(.heldOpenByHandler) else { return updateInterest(slot) }
        if slot.pointee.phase == .peerFinished { return close(slot, reason: .peerClosed) }
        if Socket.unreadBytes(slot.pointee.token.fd) > 0 { return linger(slot) }
        close(slot, reason: localCloseReason)
    }

    /// Why a connection this side finished closed: the loop shutting down, or `close()`.
    private var localCloseReason: CloseReason { stopWhenEmpty ? .shutdown : .local }

    /// Closing a socket that still holds unread input makes the kernel send
    /// RST, which destroys the output still in flight to the peer: an echo
    /// already "sent" would be lost. So: FIN after the output, then read and
    /// drop input until the peer's FIN, and only then close; a peer that
    /// never finishes is closed after `lingerLimit` regardless.
    private func linger(_ slot: Slot) {
        let token = slot.pointee.token
        Socket.shutdownWrite(token.fd)
        slot.pointee.phase = .lingering
        updateInterest(slot)
        // Loops are never freed: the timer may hold this one unretained.
        scheduleOnLoop(after: Self.lingerLimit) { [unowned(unsafe) self] in close(token, reason: localCloseReason) }
        dropInput(slot)
    }

    /// How long a lingering close waits for the peer's FIN.
    static let lingerLimit = Duration.seconds(5)

    private func dropInput(_ slot: Slot) {
        let fd = slot.pointee.token.fd
        for _ in 0..<16 {
            switch Socket.receive(fd, into: readBuffer, count: Self.readBufferSize) {
            case .transferred:
                continue
            case .wouldBlock:
                return
            case .endOfFile:
                return close(slot, reason: localCloseReason)
            case .failed(let code):
                return close(slot, reason: .failure("recv", code: code))
            }
        }
    }

    /// Closes now, whatever is pending.
    func close(_ token: EventToken, reason: CloseReason) {
        guard let slot = connections.slot(for: token) else { return }
        close(slot, reason: reason)
    }

    /// Releases the fd, queued output and waiting input, tells the handler,
    /// frees the slot. The handler's box is released after the batch.
    func close(_ slot: Slot, reason: CloseReason) {
        guard slot.pointee.phase != .closing else { return }
        let token = slot.pointee.token
        if slot.pointee.phase == .connecting { connectTargets[token] = nil }
        if !proxiedAddresses.isEmpty { proxiedAddresses[token] = nil }
        slot.pointee.phase = .closing
        slot.pointee.detachOutput()
        slot.pointee.input.release()
        Glibc.close(token.fd) // also removes it from the epoll set
        stats.countClose(reason.kind, lifetimeTicks: Self.tick(now) &- slot.pointee.openedAt)
        if reason.isProtocolError { increment(stats.protocolErrors) }
        connectionClosed()
        let box = slot.pointee.handler.unsafelyUnwrapped
        slot.pointee.handler = nil
        retiredHandlers.append(box)
        hasDeferredWork = true
        box._withUnsafeGuaranteedRef { $0.handler.connectionClosed(Connection(loop: self, token: token), reason: reason) }
        // Free the slot last: the fd number may be reused by the very next accept.
        if slot.pointee.token == token { slot.pointee.token = .free }
    }
}
