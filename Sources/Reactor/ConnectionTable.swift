#if canImport(Glibc)
import Glibc
#endif

/// Everything a loop keeps per connection, in one slot of its table.
///
/// 56 bytes, and no object: an idle connection costs its slot and nothing
/// else (output and input storage exist only while bytes are pending).
struct ConnectionSlot: ~Copyable {
    /// The connection's epoll token; `.free` while the slot is free. A
    /// `Connection` handle is valid only while its token matches this.
    var token = EventToken.free
    /// The connection's handler (its own, or the loop's shared one), retained
    /// by the slot and called without reference counting: a closed
    /// connection's box is released only after the loop's current batch, so
    /// a handler is never freed while one of its callbacks runs.
    var handler: Unmanaged<HandlerBox>?
    /// Output the socket has not taken yet; nil when there is none. Held
    /// unmanaged, retained by the slot from `attachOutput` until
    /// `detachOutput` or the slot's end: a write reaches its queue through
    /// `withOutput` with no retain and release, once per delivery of a
    /// broadcast otherwise.
    private var outputReference: Unmanaged<OutputQueue>?
    /// What the handler left unconsumed: a partial frame, until the next read.
    var input = ByteBuffer()
    /// When the peer last sent something, in loop ticks (`EventLoop.tick`).
    var lastActivity: UInt32 = 0
    /// When the connection was registered, in loop ticks: for its lifetime.
    var openedAt: UInt32 = 0
    /// What the fd is registered for right now (`Epoll.Events` bits).
    var interest: UInt8 = 0
    var phase = ConnectionPhase.open
    var flags = ConnectionFlags()

    deinit { outputReference?.release() }

    var hasOutput: Bool { outputReference != nil }

    /// The queue, retained for the caller: for paths that may detach it meanwhile.
    var output: OutputQueue? { outputReference?.takeUnretainedValue() }

    /// Lends the queue to `body`, which must not detach it.
    @inline(__always)
    func withOutput<Result>(_ body: (OutputQueue) -> Result) -> Result? {
        outputReference?._withUnsafeGuaranteedRef(body)
    }

    mutating func attachOutput(_ output: OutputQueue) {
        precondition(outputReference == nil, "a slot holds one output queue")
        outputReference = .passRetained(output)
    }

    /// Drops the slot's queue, handing it to the caller (nil if there was none).
    @discardableResult
    mutating func detachOutput() -> OutputQueue? {
        defer { outputReference = nil }
        return outputReference?.takeRetainedValue()
    }

    var pendingOutputBytes: Int { withOutput { $0.byteCount } ?? 0 }
}

/// A handler in a box of its own: a `let` of a final class, so calling it
/// through an unretained box costs no retain or release (an existential
/// stored in the slot would be retained around every call).
final class HandlerBox {
    let handler: any ConnectionHandler
    init(_ handler: any ConnectionHandler) { self.handler = handler }
}

/// Where a connection is in its life; reading happens only while `.open`.
enum ConnectionPhase: UInt8 {
    /// Non-blocking connect under way: completion shows as writable.
    case connecting
    case open
    /// The peer sent FIN: answer and flush what was read, then close.
    case peerFinished
    /// `close()` was called: flush, then close.
    case closeRequested
    /// Flushed and FIN sent, but input was still unread: reading and dropping
    /// it until the peer's FIN (or the linger limit), then close.
    case lingering
    /// Being closed: the handler's `connectionClosed` is running.
    case closing

    @inline(__always) var acceptsWrites: Bool { self == .open || self == .peerFinished }
}

/// A connection's switches besides its phase.
struct ConnectionFlags: OptionSet {
    let rawValue: UInt8
    /// The handler called `pauseReading()`.
    static let readingPausedByHandler = ConnectionFlags(rawValue: 1 << 0)
    /// Pending output went above the high-water mark and has not yet drained to the low one.
    static let aboveHighWater = ConnectionFlags(rawValue: 1 << 1)
    /// The handler was last told the connection is not writable.
    static let toldUnwritable = ConnectionFlags(rawValue: 1 << 2)
    /// A writability notice for this connection is queued on the loop.
    static let noticeQueued = ConnectionFlags(rawValue: 1 << 3)
    /// A flush after the batch is queued on the loop (`enqueue`).
    static let flushQueued = ConnectionFlags(rawValue: 1 << 4)
    /// After the peer's FIN the handler keeps the connection open until `close()`.
    static let heldOpenByHandler = ConnectionFlags(rawValue: 1 << 5)
}

/// A loop's connection slots, indexed by fd: the one place connection state
/// lives in raw memory. Address space for a slot per possible fd is reserved
/// up front (mmap, no memory until touched); slots are initialized 1,024 at a
/// time as fds reach them, so the table's footprint follows the highest fd
/// ever open. A lookup is a bounds check and an offset, with no reference
/// counting and no dynamic exclusivity check (Reactor.docc, Performance).
/// A noncopyable struct stored in its loop, so a lookup reads the loop's own
/// fields.
struct ConnectionTable: ~Copyable {
    private static let chunkSize = 1024
    private let slots: UnsafeMutablePointer<ConnectionSlot>
    private var capacity: Int
    /// Slots below this index are initialized.
    private var initializedCount = 0

    init(maximumDescriptors: Int) throws(SystemError) {
        capacity = (maximumDescriptors / Self.chunkSize + 1) * Self.chunkSize
        let bytes = capacity * MemoryLayout<ConnectionSlot>.stride
        let memory = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let memory, memory != MAP_FAILED else { throw SystemError("mmap", "\(bytes) bytes for connection slots") }
        slots = memory.bindMemory(to: ConnectionSlot.self, capacity: capacity)
    }

    deinit { freeSlots() }

    /// Frees every slot and the reservation; the table is then empty for good.
    mutating func release() {
        freeSlots()
        initializedCount = 0
        capacity = 0
    }

    private func freeSlots() {
        guard capacity > 0 else { return }
        slots.deinitialize(count: initializedCount)
        munmap(slots, capacity * MemoryLayout<ConnectionSlot>.stride)
    }

    /// The slot of the connection `token` names, while it is open; nil once it has closed.
    @inline(__always)
    func slot(for token: EventToken) -> UnsafeMutablePointer<ConnectionSlot>? {
        let fd = Int(token.fd)
        guard fd < initializedCount, slots[fd].token == token else { return nil }
        return slots + fd
    }

    /// The slot for `fd`, initializing slots up to it if needed; nil beyond the table.
    mutating func slot(_ fd: Int32) -> UnsafeMutablePointer<ConnectionSlot>? {
        guard fd >= 0, Int(fd) < capacity else { return nil }
        while initializedCount <= Int(fd) {
            for index in initializedCount..<initializedCount + Self.chunkSize {
                (slots + index).initialize(to: ConnectionSlot())
            }
            initializedCount += Self.chunkSize
        }
        return slots + Int(fd)
    }

    /// The initialized slots as they are now, for shutdown and idle sweeps: a
    /// sweep holds no access to the table while it runs, since closing a
    /// connection may open another (a handler reconnecting).
    var initializedSlots: UnsafeMutableBufferPointer<ConnectionSlot> {
        UnsafeMutableBufferPointer(start: slots, count: initializedCount)
    }
}

extension UnsafeMutableBufferPointer<ConnectionSlot> {
    /// Every slot in use, with its connection's last activity.
    /// `body` may close connections: each slot is read afresh.
    func forEachOpen(_ body: (EventToken, _ lastActivity: UInt32) -> Void) {
        for index in indices where self[index].token != .free {
            body(self[index].token, self[index].lastActivity)
        }
    }
}
