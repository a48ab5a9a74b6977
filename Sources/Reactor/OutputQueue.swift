#if canImport(Glibc)
import Glibc
#endif

/// A connection's output the socket has not taken yet: a FIFO of byte
/// ranges, each in a chunk of its own or in a `SharedBuffer` (referenced,
/// not copied). It exists only while output is pending: the connection's
/// slot drops it once everything is sent, so an idle connection holds none.
///
/// Bytes copied in go into a chunk of the queue's own, appended to while it
/// has room; a shared buffer is one more range. A flush hands up to
/// `OutputQueue.maximumGather` ranges to one `sendmsg`.
final class OutputQueue {
    private struct Segment {
        let storage: ByteStorage
        var start: Int
        var end: Int
        /// A chunk this queue made for copies (not a shared buffer): more may be appended.
        let isOwnChunk: Bool
    }

    /// Ranges per gathering send: plenty to fill a socket buffer, few enough for the stack.
    static let maximumGather = 64
    /// The smallest chunk for copied bytes.
    static let chunkSize = 16 * 1024

    // @exclusivity(unchecked): a queue belongs to one connection's slot and is
    // touched only on its loop's thread, never in overlapping accesses; the
    // dynamic checks cost more than the queueing itself.
    @exclusivity(unchecked) private var segments: [Segment] = []
    /// Index of the first unsent segment; the consumed ones before it are dropped in bulk.
    @exclusivity(unchecked) private var head = 0
    @exclusivity(unchecked) private(set) var byteCount = 0
    /// What the queued shared buffers hold beyond their bytes (see `memoryCost`).
    @exclusivity(unchecked) private var sharedOverhead = 0

    /// What a queued shared buffer costs beyond its bytes: its own allocation's
    /// headers and rounding, and its range here. Small messages queued by
    /// reference to a peer that stopped reading cost mostly this.
    static let sharedBufferOverhead = 80

    /// The memory this queue holds for its peer, as the high-water mark
    /// counts it: the bytes, plus each queued shared buffer's overhead
    /// (counted in full, as if no other connection still held it).
    var memoryCost: Int { byteCount + sharedOverhead }

    var isEmpty: Bool { byteCount == 0 }
    /// Ranges the queue has room for without growing: what keeping it costs.
    var rangeCapacity: Int { segments.capacity }

    func append(copying bytes: UnsafeRawBufferPointer) {
        guard !bytes.isEmpty else { return }
        var remaining = bytes
        byteCount += remaining.count
        if let last = segments.indices.last, segments[last].isOwnChunk {
            let storage = segments[last].storage
            let room = storage.capacity - segments[last].end
            let taken = min(room, remaining.count)
            if taken > 0 {
                (storage.bytes + segments[last].end).copyMemory(from: remaining.baseAddress!, byteCount: taken)
                segments[last].end += taken
                remaining = UnsafeRawBufferPointer(rebasing: remaining[taken...])
            }
        }
        guard !remaining.isEmpty else { return }
        // Chunks grow with what is pending (up to 1 MiB), so a slow reader's
        // backlog costs a few allocations, not one per 16 KiB.
        let pendingBefore = byteCount - remaining.count
        let storage = ByteStorage.make(capacity: max(Self.chunkSize, min(pendingBefore, 1 << 20), remaining.count))
        storage.bytes.copyMemory(from: remaining.baseAddress!, byteCount: remaining.count)
        segments.append(Segment(storage: storage, start: 0, end: remaining.count, isOwnChunk: true))
    }

    /// Queues `buffer` from `offset` on, by reference.
    func append(_ buffer: SharedBuffer, from offset: Int = 0) {
        guard offset < buffer.count else { return }
        byteCount += buffer.count - offset
        sharedOverhead += Self.sharedBufferOverhead
        segments.append(Segment(storage: buffer.storage, start: offset, end: buffer.count, isOwnChunk: false))
    }

    /// Points `vectors` at the first unsent ranges, at most `capacity` of them; returns how many.
    func gather(into vectors: UnsafeMutablePointer<iovec>, capacity: Int) -> Int {
        var filled = 0
        for index in head..<min(segments.count, head + capacity) {
            let segment = segments[index]
            vectors[filled] = iovec(iov_base: segment.storage.bytes + segment.start, iov_len: segment.end - segment.start)
            filled += 1
        }
        return filled
    }

    /// Drops `byteCount` sent bytes from the front.
    func consume(_ sent: Int) {
        precondition(sent >= 0 && sent <= byteCount, "consume(\(sent)) of \(byteCount) bytes")
        byteCount -= sent
        var left = sent
        while left > 0 {
            let length = segments[head].end - segments[head].start
            if left < length {
                segments[head].start += left
                break
            }
            left -= length
            if !segments[head].isOwnChunk { sharedOverhead -= Self.sharedBufferOverhead }
            head += 1
        }
        if byteCount == 0 {
            segments.removeAll(keepingCapacity: true)
            head = 0
            sharedOverhead = 0
        } else if head >= 32 && head * 2 >= segments.count {
            segments.removeFirst(head)
            head = 0
        }
    }
}
