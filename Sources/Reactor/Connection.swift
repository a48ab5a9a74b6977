#if canImport(Glibc)
import Glibc
#endif

/// How much unsent output a connection may hold before it stops reading.
public struct Backpressure: Sendable, Equatable {
    /// Above this many pending output bytes the connection stops reading from the peer.
    public var highWaterMark: Int
    /// At or below this many it reads again.
    public var lowWaterMark: Int

    public init(highWaterMark: Int = 256 * 1024, lowWaterMark: Int = 64 * 1024) {
        precondition(highWaterMark > 0 && lowWaterMark >= 0 && lowWaterMark <= highWaterMark)
        self.highWaterMark = highWaterMark
        self.lowWaterMark = lowWaterMark
    }
}

/// A handle to one TCP connection on one loop: what handlers are given and
/// keep. Its state lives in the loop's table; the handle is a loop reference
/// and the connection's epoll token, so it is 16 bytes, free to copy, and
/// safe to keep after close: once the connection is gone (even if its fd
/// number is reused) every method sees that and does nothing.
///
/// The state machine: open, reading → (output above the high-water mark)
/// paused → (drained to the low-water mark) reading again. A FIN from the
/// peer, or `close()`, ends reading; the connection then closes once its
/// output is flushed (after `close()` with input still unread: FIN, then the
/// input is dropped until the peer's FIN, so no RST destroys the output).
/// Errors and resets close at once. Use a handle on its loop's thread only;
/// from elsewhere, `connection.eventLoop.execute { ... }`.
public struct Connection: Hashable, Sendable {
    /// Identifies a connection within its loop: generation and fd.
    public typealias ID = UInt64

    public let id: ID
    /// Unmanaged, not unowned(unsafe): using an unowned reference retains and
    /// releases it around every call, twice per echoed read (callgrind).
    /// Loops outlive the use of their connections.
    private let loopReference: Unmanaged<EventLoop>

    init(loop: EventLoop, id: ID) {
        self.loopReference = .passUnretained(loop)
        self.id = id
    }

    /// The loop this connection lives on; `loop.execute` reaches it from other threads.
    public var eventLoop: EventLoop { loopReference.takeUnretainedValue() }

    /// Lends the loop to `body` without retaining it.
    @inline(__always)
    private func withLoop<Result>(_ body: (EventLoop) -> Result) -> Result {
        loopReference._withUnsafeGuaranteedRef(body)
    }

    public static func == (lhs: Connection, rhs: Connection) -> Bool {
        lhs.id == rhs.id && lhs.eventLoop === rhs.eventLoop
    }

    public func hash(into hasher: inout Hasher) { hasher.combine(id) }

    /// The socket's file descriptor (for logs; the loop owns it).
    public var fd: Int32 { Int32(truncatingIfNeeded: id & 0x7FFF_FFFF) }

    /// This connection's slot, or nil once it has closed.
    @inline(__always)
    private func slot(on loop: EventLoop) -> UnsafeMutablePointer<ConnectionSlot>? {
        guard let slot = loop.connections.existingSlot(fd), slot.pointee.token == id else { return nil }
        return slot
    }

    @inline(__always)
    private var slot: UnsafeMutablePointer<ConnectionSlot>? { withLoop { slot(on: $0) } }

    public var isClosed: Bool {
        guard let slot else { return true }
        return slot.pointee.phase == .closing
    }

    /// Bytes written but not yet taken by the kernel.
    public var pendingOutputBytes: Int { slot?.pointee.output.count ?? 0 }

    /// Whether reading is paused because pending output is above the high-water mark.
    public var isReadingPaused: Bool {
        guard let slot else { return false }
        return slot.pointee.phase == .open && slot.pointee.interest & Self.readBits == 0
    }

    public var remoteAddress: SocketAddress? { SocketAddress(of: fd, peer: true) }
    public var localAddress: SocketAddress? { SocketAddress(of: fd, peer: false) }
    /// The MSS agreed in the SYN options of the handshake.
    public var maximumSegmentSize: Int? { Socket.maximumSegmentSize(fd) }

    // A slot's `interest` bits, and the epoll events each stands for.
    private static let readBits: UInt8 = 1
    private static let writeBits: UInt8 = 2
    static let readEvents: Epoll.Events = [.readable, .readHangup]
    private static func epollEvents(_ bits: UInt8) -> Epoll.Events {
        var events: Epoll.Events = bits & readBits != 0 ? readEvents : []
        if bits & writeBits != 0 { events.insert(.writable) }
        return events
    }

    /// The interest bits for a connection registered to read only / write only.
    static let readingInterest = readBits
    static let connectingInterest = writeBits

    // MARK: Writing

    /// Sends `bytes`, queueing whatever the socket does not take at once. Never
    /// drops data; after `close()` or once closed it does nothing.
    @inline(__always)
    public func write(_ bytes: UnsafeRawBufferPointer) {
        withLoop { write(bytes, on: $0) }
    }

    @inline(__always)
    private func write(_ bytes: UnsafeRawBufferPointer, on loop: EventLoop) {
        guard let slot = slot(on: loop), slot.pointee.phase.acceptsWrites, bytes.count > 0 else { return }
        send(bytes, to: slot, on: loop)
    }

    /// Sends now if nothing is queued, else queues behind what is. The caller
    /// has checked that the connection takes writes and `bytes` is not empty.
    @inline(__always)
    private func send(_ bytes: UnsafeRawBufferPointer, to slot: UnsafeMutablePointer<ConnectionSlot>, on loop: EventLoop) {
        guard slot.pointee.output.isEmpty else {
            slot.pointee.output.append(bytes)
            return updateInterest(slot, on: loop)
        }
        switch Socket.send(fd, bytes.baseAddress!, count: bytes.count) {
        case .transferred(let sent):
            increment(loop.stats.bytesSent, by: UInt64(sent))
            if sent == bytes.count { return }
            slot.pointee.output.append(UnsafeRawBufferPointer(rebasing: bytes[sent...]))
        case .wouldBlock, .endOfFile:
            slot.pointee.output.append(bytes)
        case .failed(let code):
            return close(slot, reason: .failure("send", code: code), on: loop)
        }
        updateInterest(slot, on: loop)
    }

    public func write(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { write($0) }
    }

    /// Closes once all queued output is flushed; reads nothing more. A
    /// connect still under way is abandoned at once.
    public func close() {
        withLoop { loop in
            guard let slot = slot(on: loop) else { return }
            switch slot.pointee.phase {
            case .connecting:
                close(slot, reason: .local, on: loop)
            case .open, .peerFinished:
                slot.pointee.phase = .closeRequested
                finishIfFlushed(slot, on: loop)
            case .closeRequested, .lingering, .closing:
                return
            }
        }
    }

    // MARK: Events (loop thread)

    /// Called by the loop with the events epoll reported for this connection.
    @inline(__always)
    func handle(_ events: Epoll.Events, slot: UnsafeMutablePointer<ConnectionSlot>, tick: UInt32, on loop: EventLoop) {
        // The common case first: an open connection, nothing queued, data to read.
        if events == .readable, slot.pointee.interest == Self.readBits, slot.pointee.phase == .open {
            return readAvailable(slot, tick: tick, on: loop)
        }
        if slot.pointee.phase == .connecting { return completeConnect(slot, on: loop) }
        if events.contains(.error) {
            return close(slot, reason: .failure("socket", code: Socket.pendingError(fd)), on: loop)
        }
        if slot.pointee.phase == .lingering { return dropInput(slot, on: loop) }
        if !slot.pointee.output.isEmpty, !events.isDisjoint(with: [.writable, .hangup]) {
            flush(slot, on: loop)
            guard slot.pointee.token == id else { return }
        }
        if slot.pointee.interest & Self.readBits != 0, !events.isDisjoint(with: [.readable, .readHangup, .hangup]) {
            readAvailable(slot, tick: tick, on: loop)
        }
    }

    /// Reads until the socket is drained, the handler's output pauses reading,
    /// or 16 reads have run (so one busy peer cannot starve the others).
    @inline(__always)
    private func readAvailable(_ slot: UnsafeMutablePointer<ConnectionSlot>, tick: UInt32, on loop: EventLoop) {
        slot.pointee.lastActivity = tick
        // The common case, a short read, is one recv and no loop: fewer values
        // live across the calls, so fewer spills (callgrind).
        if receiveOnce(slot, on: loop) { readMore(slot, on: loop) }
    }

    @inline(never)
    private func readMore(_ slot: UnsafeMutablePointer<ConnectionSlot>, on loop: EventLoop) {
        for _ in 1..<16 where !receiveOnce(slot, on: loop) { return }
    }

    /// One recv, its bytes handed to the handler (or echoed). True when the
    /// read filled the buffer and the connection still reads: there may be more.
    @inline(__always)
    private func receiveOnce(_ slot: UnsafeMutablePointer<ConnectionSlot>, on loop: EventLoop) -> Bool {
        let buffer = loop.readBuffer
        let capacity = EventLoop.readBufferSize
        switch Socket.receive(fd, into: buffer, count: capacity) {
        case .transferred(let count):
            increment(loop.stats.bytesReceived, by: UInt64(count))
            let bytes = UnsafeRawBufferPointer(start: buffer, count: count)
            // Spelled out, not through a helper taking a closure: that way the
            // shared handler, a `let` of the loop, is called without a retain.
            if let handler = slot.pointee.handler {
                handler.connection(self, received: bytes)
            } else if loop.sharedHandlerEchoes {
                // Reading happens only while open: no need for write's phase check.
                send(bytes, to: slot, on: loop)
            } else {
                loop.sharedHandler?.connection(self, received: bytes)
            }
            // A short read means the socket is drained: skip the read that would say EAGAIN.
            return count == capacity && slot.pointee.token == id
                && slot.pointee.interest & Self.readBits != 0 && slot.pointee.phase == .open
        case .wouldBlock:
            return false
        case .endOfFile:
            slot.pointee.phase = .peerFinished
            finishIfFlushed(slot, on: loop)
            return false
        case .failed(let code):
            close(slot, reason: .failure("recv", code: code), on: loop)
            return false
        }
    }

    private func flush(_ slot: UnsafeMutablePointer<ConnectionSlot>, on loop: EventLoop) {
        while !slot.pointee.output.isEmpty {
            let pending = slot.pointee.output.readableBytes
            switch Socket.send(fd, pending.baseAddress!, count: pending.count) {
            case .transferred(let sent):
                increment(loop.stats.bytesSent, by: UInt64(sent))
                slot.pointee.output.consume(sent)
            case .wouldBlock, .endOfFile:
                return updateInterest(slot, on: loop)
            case .failed(let code):
                return close(slot, reason: .failure("send", code: code), on: loop)
            }
        }
        if slot.pointee.phase != .open { return finishIfFlushed(slot, on: loop) }
        updateInterest(slot, on: loop)
        (slot.pointee.handler ?? loop.sharedHandler)?.connectionDrained(self)
    }

    /// A finishing connection closes once its output is gone (lingering first
    /// if input is still unread); until then it waits for writability only.
    private func finishIfFlushed(_ slot: UnsafeMutablePointer<ConnectionSlot>, on loop: EventLoop) {
        guard slot.pointee.output.isEmpty else { return updateInterest(slot, on: loop) }
        if slot.pointee.phase == .peerFinished { return close(slot, reason: .peerClosed, on: loop) }
        if Socket.unreadBytes(fd) > 0 { return linger(slot, on: loop) }
        close(slot, reason: localReason(loop), on: loop)
    }

    /// Why a connection this side finished closed: the loop shutting down, or `close()`.
    private func localReason(_ loop: EventLoop) -> CloseReason {
        loop.stopWhenEmpty ? .shutdown : .local
    }

    /// Closing a socket that still holds unread input makes the kernel send
    /// RST, which destroys the output still in flight to the peer: an echo
    /// already "sent" would be lost. So: FIN after the output, then read and
    /// drop input until the peer's FIN, and only then close; a peer that
    /// never finishes is closed after `lingerLimit` regardless.
    private func linger(_ slot: UnsafeMutablePointer<ConnectionSlot>, on loop: EventLoop) {
        Socket.shutdownWrite(fd)
        slot.pointee.phase = .lingering
        updateInterest(slot, on: loop)
        // The handle holds the loop unretained: no cycle through the loop's own timer queue.
        loop.scheduleOnLoop(after: Self.lingerLimit) { [self] in close(reason: localReason(eventLoop), on: eventLoop) }
        dropInput(slot, on: loop)
    }

    /// How long a lingering close waits for the peer's FIN.
    static let lingerLimit = Duration.seconds(5)

    private func dropInput(_ slot: UnsafeMutablePointer<ConnectionSlot>, on loop: EventLoop) {
        for _ in 0..<16 {
            switch Socket.receive(fd, into: loop.readBuffer, count: EventLoop.readBufferSize) {
            case .transferred:
                continue
            case .wouldBlock:
                return
            case .endOfFile:
                return close(slot, reason: localReason(loop), on: loop)
            case .failed(let code):
                return close(slot, reason: .failure("recv", code: code), on: loop)
            }
        }
    }

    /// Registers for exactly what the state needs: writable while output is
    /// pending; readable while open, unless paused by backpressure. Skips the
    /// syscall when nothing changes, so steady-state echo makes no epoll_ctl.
    private func updateInterest(_ slot: UnsafeMutablePointer<ConnectionSlot>, on loop: EventLoop) {
        let pending = slot.pointee.output.count
        var wanted: UInt8 = pending > 0 ? Self.writeBits : 0
        if slot.pointee.phase == .lingering {
            wanted = Self.readBits
        } else if slot.pointee.phase == .open {
            let marks = loop.backpressure
            let reading = slot.pointee.interest & Self.readBits != 0
            if pending <= marks.lowWaterMark || (reading && pending <= marks.highWaterMark) {
                wanted |= Self.readBits
            }
        }
        guard wanted != slot.pointee.interest else { return }
        do {
            try loop.epoll.modify(fd, Self.epollEvents(wanted), token: id)
            slot.pointee.interest = wanted
        } catch {
            close(slot, reason: .error(error), on: loop)
        }
    }

    private func completeConnect(_ slot: UnsafeMutablePointer<ConnectionSlot>, on loop: EventLoop) {
        let code = Socket.pendingError(fd)
        guard code == 0 else {
            let peer = remoteAddressForErrors(slot, on: loop)
            return close(slot, reason: .error(SystemError("connect", peer, code: code)), on: loop)
        }
        slot.pointee.phase = .open
        loop.connectTargets[id] = nil
        Socket.setNoDelay(fd)
        updateInterest(slot, on: loop)
        if slot.pointee.token == id { (slot.pointee.handler ?? loop.sharedHandler)?.connectionOpened(self) }
    }

    /// Where a failed connect was headed (the loop remembers it until then).
    private func remoteAddressForErrors(_ slot: UnsafeMutablePointer<ConnectionSlot>, on loop: EventLoop) -> String {
        loop.connectTargets[id]?.description ?? "fd \(fd)"
    }

    // MARK: Closing

    /// Answers what the socket already holds, then closes once flushed.
    func finishGracefully(on loop: EventLoop) {
        guard let slot = slot(on: loop) else { return }
        switch slot.pointee.phase {
        case .connecting:
            close(slot, reason: .shutdown, on: loop)
        case .open:
            readAvailable(slot, tick: slot.pointee.lastActivity, on: loop)
            guard slot.pointee.token == id, slot.pointee.phase == .open else { return }
            slot.pointee.phase = .closeRequested
            finishIfFlushed(slot, on: loop)
        case .peerFinished, .closeRequested, .lingering, .closing:
            return
        }
    }

    /// Closes now, whatever is pending.
    func close(reason: CloseReason, on loop: EventLoop) {
        guard let slot = slot(on: loop) else { return }
        close(slot, reason: reason, on: loop)
    }

    /// Releases the fd and any queued output, tells the handler, frees the slot.
    private func close(_ slot: UnsafeMutablePointer<ConnectionSlot>, reason: CloseReason, on loop: EventLoop) {
        guard slot.pointee.phase != .closing else { return }
        if slot.pointee.phase == .connecting { loop.connectTargets[id] = nil }
        slot.pointee.phase = .closing
        slot.pointee.output.release()
        Glibc.close(fd) // also removes it from the epoll set
        increment(loop.stats.closed)
        loop.connectionClosed()
        let ownHandler = slot.pointee.handler
        slot.pointee.handler = nil
        (ownHandler ?? loop.sharedHandler)?.connectionClosed(self, reason: reason)
        // Free the slot last: the fd number may be reused by the very next accept.
        if slot.pointee.token == id { slot.pointee.token = 0 }
    }
}

extension ConnectionPhase {
    @inline(__always) var acceptsWrites: Bool { self == .open || self == .peerFinished }
}
