/// A handle to one TCP connection on one loop: what handlers are given and
/// keep. Its state lives in the loop's table (see `ConnectionIO.swift`); the
/// handle is the loop and the connection's epoll token, 16 bytes, free to
/// copy, hash and keep. Once the connection is gone (even if its fd number
/// is reused) every method sees that and does nothing.
///
/// From any thread, `write`, `close`, `pauseReading` and `resumeReading`
/// are safe: on the connection's loop thread they act at once; from any
/// other thread they hop to the loop (`write` copies the bytes first), in
/// the order that thread called them. The properties read the connection's
/// state and are for the loop thread only: elsewhere they stop with a
/// precondition failure.
///
/// A handle kept after its server shut down is still safe: loops are never
/// freed (their fds and buffers are, when `run()` returns), so it finds its
/// connection gone and does nothing.
public struct Connection: Hashable, Sendable {
    /// Identifies a connection within its loop: generation and fd.
    public typealias ID = UInt64

    let token: EventToken
    /// Unmanaged, not a strong reference: a strong one would be retained and
    /// released around every callback. Safe because a loop, once made, is
    /// never deallocated (`EventLoop.init`).
    private let loopReference: Unmanaged<EventLoop>

    init(loop: EventLoop, token: EventToken) {
        self.loopReference = .passUnretained(loop)
        self.token = token
    }

    /// The connection's epoll token: its generation and fd. A connection that
    /// later gets the same fd number gets another id.
    public var id: ID { token.rawValue }

    /// The loop this connection lives on.
    public var eventLoop: EventLoop { loopReference.takeUnretainedValue() }

    /// Whether this connection's loop is `loop`, with no reference counting.
    @inline(__always)
    func lives(on loop: EventLoop) -> Bool {
        loopReference.toOpaque() == Unmanaged.passUnretained(loop).toOpaque()
    }

    /// Lends the loop to `body` without retaining it.
    @inline(__always)
    private func withLoop<Result>(_ body: (EventLoop) -> Result) -> Result {
        loopReference._withUnsafeGuaranteedRef(body)
    }

    /// Whether both handles name the same connection: the same loop and token.
    public static func == (lhs: Connection, rhs: Connection) -> Bool {
        lhs.token == rhs.token && lhs.loopReference.toOpaque() == rhs.loopReference.toOpaque()
    }

    /// Hashes the token, so that handles can key a dictionary or fill a set.
    public func hash(into hasher: inout Hasher) { hasher.combine(token.rawValue) }

    /// The socket's file descriptor (for logs; the loop owns it).
    public var fd: Int32 { token.fd }

    // MARK: Writing and closing (any thread)

    /// Sends `bytes`, queueing whatever the socket does not take at once. Never
    /// drops data; after `close()` or once closed it does nothing.
    @inline(__always)
    public func write(_ bytes: UnsafeRawBufferPointer) {
        withLoop { loop in
            guard loop.isCurrent else { return hop(to: loop, copying: bytes) }
            loop.write(bytes, to: token)
        }
    }

    /// Sends the bytes of an array, as the raw-buffer `write(_:)` does.
    public func write(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { write($0) }
    }

    /// Sends `header` and then `body` with one gathering send: one syscall,
    /// and on the wire one segment when they fit in one.
    public func write(_ header: UnsafeRawBufferPointer, _ body: UnsafeRawBufferPointer) {
        withLoop { loop in
            guard loop.isCurrent else { return hop(to: loop, copying: header, body) }
            loop.write(header, body, to: token)
        }
    }

    /// Sends a shared buffer; what the socket does not take is queued by
    /// reference, not copied, so one buffer can go to any number of connections.
    public func write(_ buffer: SharedBuffer) {
        withLoop { loop in
            guard loop.isCurrent else { return loop.execute { self.write(buffer) } }
            loop.write(buffer, to: token)
        }
    }

    /// Queues a shared buffer to go out when the loop has finished its current
    /// batch of events, in one gathering send with everything else queued for
    /// this connection by then: what a broadcast does, so that a member sent
    /// many messages in one loop iteration costs one syscall, not one each.
    /// Order with `write` is kept.
    ///
    /// Returns false when, with this buffer, the connection's pending output
    /// is above the loop's high-water mark (the buffer is queued all the
    /// same): a broadcast can then give up on a peer that does not keep up,
    /// which then costs at most the mark plus this one buffer. From another
    /// thread it hops to the loop and returns true.
    @discardableResult
    public func enqueue(_ buffer: SharedBuffer) -> Bool {
        withLoop { loop in
            guard loop.isCurrent else {
                loop.execute { self.enqueue(buffer) }
                return true
            }
            return loop.enqueue(buffer, to: token)
        }
    }

    /// A write from another thread: the bytes are copied (they are lent for
    /// the call only) and written on the loop, after this thread's earlier calls.
    @inline(never)
    private func hop(to loop: EventLoop, copying first: UnsafeRawBufferPointer, _ second: UnsafeRawBufferPointer = .init(start: nil, count: 0)) {
        var copy = [UInt8]()
        copy.reserveCapacity(first.count + second.count)
        copy.append(contentsOf: first)
        copy.append(contentsOf: second)
        let bytes = copy
        loop.execute { self.write(bytes) }
    }

    /// Closes once all queued output is flushed; reads nothing more. A
    /// connect still under way is abandoned at once.
    public func close() {
        withLoop { loop in
            guard loop.isCurrent else { return loop.execute { self.close() } }
            loop.requestClose(token)
        }
    }

    /// Closes now, dropping queued output and unread input, and tells the
    /// handler `reason`: what a protocol does with a peer that broke it (for
    /// example `.framing(error)` for a frame over the limit).
    public func close(reason: CloseReason) {
        withLoop { loop in
            guard loop.isCurrent else { return loop.execute { self.close(reason: reason) } }
            loop.close(token, reason: reason)
        }
    }

    /// Stops reading from the peer until `resumeReading()`: what a handler
    /// does when it cannot take more for now. Output still flows.
    public func pauseReading() {
        withLoop { loop in
            guard loop.isCurrent else { return loop.execute { self.pauseReading() } }
            loop.setReadingPaused(true, token)
        }
    }

    /// Reads again after `pauseReading()`. Bytes the handler left unconsumed
    /// are offered again soon, before anything new is read (as they are when
    /// reading resumes after pending output drained to the low-water mark).
    public func resumeReading() {
        withLoop { loop in
            guard loop.isCurrent else { return loop.execute { self.resumeReading() } }
            loop.setReadingPaused(false, token)
        }
    }

    // MARK: State (loop thread)

    /// This connection's slot, or nil once it has closed.
    private func slot(_ property: StaticString) -> UnsafeMutablePointer<ConnectionSlot>? {
        withLoop { loop in
            precondition(loop.isCurrent, "Connection.\(property) read off its loop's thread: read it in connection.eventLoop.execute { }")
            return loop.connections.slot(for: token)
        }
    }

    /// Whether the connection has closed (its handler has heard `connectionClosed`,
    /// or is hearing it). Loop thread.
    public var isClosed: Bool {
        guard let slot = slot("isClosed") else { return true }
        return slot.pointee.phase == .closing
    }

    /// Bytes written but not yet taken by the kernel.
    public var pendingOutputBytes: Int { slot("pendingOutputBytes")?.pointee.pendingOutputBytes ?? 0 }

    /// False from when pending output went above the loop's high-water mark
    /// until it drained to the low-water mark (`connectionWritabilityChanged`
    /// tells of each change); writes are still queued meanwhile, never dropped.
    public var isWritable: Bool {
        guard let slot = slot("isWritable") else { return false }
        return !slot.pointee.flags.contains(.aboveHighWater)
    }

    /// Whether reading is paused: by pending output above the high-water
    /// mark, or by `pauseReading()`.
    public var isReadingPaused: Bool {
        guard let slot = slot("isReadingPaused") else { return false }
        return slot.pointee.phase == .open && slot.pointee.interest & ConnectionInterest.read == 0
    }

    /// The peer's address and port (`getpeername`); behind a proxy that sent
    /// a PROXY header, the client's. Nil once closed. Loop thread.
    public var remoteAddress: SocketAddress? {
        guard slot("remoteAddress") != nil else { return nil }
        return withLoop { $0.proxiedAddresses[token]?.source } ?? SocketAddress(of: fd, peer: true)
    }

    /// This end's address and port (`getsockname`); behind a proxy that sent
    /// a PROXY header, the one the client connected to. Nil once closed. Loop thread.
    public var localAddress: SocketAddress? {
        guard slot("localAddress") != nil else { return nil }
        return withLoop { $0.proxiedAddresses[token]?.destination } ?? SocketAddress(of: fd, peer: false)
    }

    /// The MSS agreed in the SYN options of the handshake.
    public var maximumSegmentSize: Int? {
        slot("maximumSegmentSize") == nil ? nil : Socket.maximumSegmentSize(fd)
    }
}
