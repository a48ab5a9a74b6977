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
/// lives in raw memory. Slots come in chunks of 1,024, allocated the first
/// time an fd in that range is used, so the table's footprint follows the
/// highest fd ever open, and a lookup is two loads with no reference counting
/// and no dynamic exclusivity check (callgrind showed those checks costing
/// more than half of all user-space instructions per echoed message when the
/// same state lived in a class).
final class ConnectionTable {
    private static let chunkShift = 10
    private static let chunkSize = 1 << chunkShift
    private let chunks: UnsafeMutablePointer<UnsafeMutablePointer<ConnectionSlot>?>
    private let chunkCount: Int

    init(maximumDescriptors: Int) {
        chunkCount = (maximumDescriptors >> Self.chunkShift) + 1
        chunks = .allocate(capacity: chunkCount)
        chunks.initialize(repeating: nil, count: chunkCount)
    }

    deinit {
        for index in 0..<chunkCount {
            guard let chunk = chunks[index] else { continue }
            chunk.deinitialize(count: Self.chunkSize)
            chunk.deallocate()
        }
        chunks.deallocate()
    }

    /// The slot for `fd` if its chunk exists (any state, free or not).
    @inline(__always)
    func existingSlot(_ fd: Int32) -> UnsafeMutablePointer<ConnectionSlot>? {
        let index = Int(fd) >> Self.chunkShift
        guard index < chunkCount, let chunk = chunks[index] else { return nil }
        return chunk + (Int(fd) & (Self.chunkSize - 1))
    }

    /// The slot for `fd`, creating its chunk if needed; nil beyond the table.
    func slot(_ fd: Int32) -> UnsafeMutablePointer<ConnectionSlot>? {
        let index = Int(fd) >> Self.chunkShift
        guard fd >= 0, index < chunkCount else { return nil }
        if chunks[index] == nil {
            let chunk = UnsafeMutablePointer<ConnectionSlot>.allocate(capacity: Self.chunkSize)
            for offset in 0..<Self.chunkSize { (chunk + offset).initialize(to: ConnectionSlot()) }
            chunks[index] = chunk
        }
        return chunks[index]! + (Int(fd) & (Self.chunkSize - 1))
    }

    /// Every slot in use (token != 0), with its connection's last activity,
    /// for shutdown and idle sweeps. `body` may close connections: each slot
    /// is read afresh.
    func forEachOpen(_ body: (Connection.ID, _ lastActivity: UInt32) -> Void) {
        for index in 0..<chunkCount {
            guard let chunk = chunks[index] else { continue }
            for offset in 0..<Self.chunkSize where chunk[offset].token != 0 {
                body(chunk[offset].token, chunk[offset].lastActivity)
            }
        }
    }
}
