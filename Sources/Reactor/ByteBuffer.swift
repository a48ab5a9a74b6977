/// A FIFO of bytes: append at the back, consume from the front.
///
/// Holds a connection's unsent output. Storage is allocated on the first
/// append and released as soon as the buffer drains, so an idle connection
/// costs no buffer memory. Consumed space at the front is reclaimed by moving
/// the unread bytes down before the storage grows.
public struct ByteBuffer: ~Copyable {
    private var storage: UnsafeMutableRawPointer?
    private var capacity = 0
    private var readIndex = 0
    private var writeIndex = 0

    public init() {}

    deinit { storage?.deallocate() }

    /// Bytes appended and not yet consumed.
    public var count: Int { writeIndex - readIndex }
    public var isEmpty: Bool { writeIndex == readIndex }
    /// Bytes of heap this buffer holds right now.
    public var allocatedBytes: Int { capacity }

    /// The unread bytes, valid until the next mutation.
    public var readableBytes: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: storage.map { $0 + readIndex }, count: count)
    }

    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard let source = bytes.baseAddress, bytes.count > 0 else { return }
        reserveSpace(for: bytes.count)
        (storage! + writeIndex).copyMemory(from: source, byteCount: bytes.count)
        writeIndex += bytes.count
    }

    /// Drops `byteCount` bytes from the front; frees the storage once empty.
    public mutating func consume(_ byteCount: Int) {
        precondition(byteCount >= 0 && byteCount <= count, "consume(\(byteCount)) of \(count) bytes")
        readIndex += byteCount
        if readIndex == writeIndex { release() }
    }

    /// Forgets all content and frees the storage.
    public mutating func release() {
        storage?.deallocate()
        storage = nil
        capacity = 0
        readIndex = 0
        writeIndex = 0
    }

    private mutating func reserveSpace(for extra: Int) {
        if writeIndex + extra <= capacity { return }
        let live = count
        if live + extra <= capacity, let storage {
            // Enough room overall: slide the unread bytes to the front.
            storage.copyMemory(from: storage + readIndex, byteCount: live)
        } else {
            var newCapacity = Swift.max(capacity, 1024)
            while newCapacity < live + extra { newCapacity *= 2 }
            let grown = UnsafeMutableRawPointer.allocate(byteCount: newCapacity, alignment: 16)
            if let storage {
                grown.copyMemory(from: storage + readIndex, byteCount: live)
                storage.deallocate()
            }
            storage = grown
            capacity = newCapacity
        }
        readIndex = 0
        writeIndex = live
    }
}
