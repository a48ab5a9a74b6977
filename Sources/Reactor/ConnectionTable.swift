#if canImport(Glibc)
import Glibc
#endif

/// Everything a loop keeps per connection, in one slot of its table.
///
/// 56 bytes, and no object: an idle connection costs its slot and nothing
/// else (output storage exists only while output is pending).
struct ConnectionSlot: ~Copyable {
    /// The connection's epoll token; 0 while the slot is free. A `Connection`
    /// handle is valid only while its token matches this.
    var token: UInt64 = 0
    /// The connection's own handler; nil when it uses the loop's shared one.
    var handler: (any ConnectionHandler)?
    /// Output the socket has not taken yet.
    var output = ByteBuffer()
    /// When the peer last sent something, in loop ticks (`EventLoop.tick`).
    var lastActivity: UInt32 = 0
    /// What the fd is registered for right now (`Epoll.Events` bits).
    var interest: UInt8 = 0
    var phase = ConnectionPhase.open
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
}

/// A loop's connection slots, indexed by fd: the one place connection state
/// lives in raw memory. Address space for a slot per possible fd is reserved
/// up front (mmap, no memory until touched); slots are initialized 1,024 at a
/// time as fds reach them, so the table's footprint follows the highest fd
/// ever open. A lookup is a bounds check and an offset, with no reference
/// counting and no dynamic exclusivity check (callgrind showed those checks
/// costing more than half of all user-space instructions per echoed message
/// when the same state lived in a class; the flat layout saves 5 instructions
/// per lookup over chunks found through a directory). A noncopyable struct
/// stored in its loop, so a lookup reads the loop's own fields.
struct ConnectionTable: ~Copyable {
    private static let chunkSize = 1024
    private let slots: UnsafeMutablePointer<ConnectionSlot>
    private let capacity: Int
    /// Slots below this index are initialized.
    private var initializedCount = 0

    init(maximumDescriptors: Int) throws(SystemError) {
        capacity = (maximumDescriptors / Self.chunkSize + 1) * Self.chunkSize
        let bytes = capacity * MemoryLayout<ConnectionSlot>.stride
        let memory = mmap(nil, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0)
        guard let memory, memory != MAP_FAILED else { throw SystemError("mmap", "\(bytes) bytes for connection slots") }
        slots = memory.bindMemory(to: ConnectionSlot.self, capacity: capacity)
    }

    deinit {
        slots.deinitialize(count: initializedCount)
        munmap(slots, capacity * MemoryLayout<ConnectionSlot>.stride)
    }

    /// The slot for `fd` if it is initialized (any state, free or not).
    @inline(__always)
    func existingSlot(_ fd: Int32) -> UnsafeMutablePointer<ConnectionSlot>? {
        UInt(bitPattern: Int(fd)) < UInt(bitPattern: initializedCount) ? slots + Int(fd) : nil
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
    /// Every slot in use (token != 0), with its connection's last activity.
    /// `body` may close connections: each slot is read afresh.
    func forEachOpen(_ body: (Connection.ID, _ lastActivity: UInt32) -> Void) {
        for index in indices where self[index].token != 0 {
            body(self[index].token, self[index].lastActivity)
        }
    }
}
