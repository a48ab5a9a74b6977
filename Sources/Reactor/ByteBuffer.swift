/// A FIFO of bytes: append at the back, consume from the front.
///
/// Holds what a connection's handler left unconsumed (a partial frame) until
/// the next read. Storage is allocated on the first append and released as
/// soon as the buffer drains, so an idle connection costs no buffer memory.
/// Consumed space at the front is reclaimed by moving the unread bytes down
/// before the storage grows.
public struct ByteBuffer: ~Copyable {
    // 32-bit sizes keep the buffer 20 bytes: it sits in every connection's slot.
    private var storage: UnsafeMutableRawPointer?
    private var capacity: UInt32 = 0
    private var readIndex: UInt32 = 0
    private var writeIndex: UInt32 = 0

    /// An empty buffer, with no storage until the first append.
    public init() {}

    deinit { storage?.deallocate() }

    /// Bytes appended and not yet consumed.
    public var count: Int { Int(writeIndex &- readIndex) }
    /// Whether no bytes are waiting.
    public var isEmpty: Bool { writeIndex == readIndex }

    /// The unread bytes, valid until the next mutation.
    public var readableBytes: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: storage.map { $0 + Int(readIndex) }, count: count)
    }

    /// Copies `bytes` to the back, sliding the unread bytes to the front or
    /// growing the storage when there is no room.
    public mutating func append(_ bytes: UnsafeRawBufferPointer) {
        guard let source = bytes.baseAddress, bytes.count > 0 else { return }
        reserveSpace(for: bytes.count)
        (storage! + Int(writeIndex)).copyMemory(from: source, byteCount: bytes.count)
        writeIndex += UInt32(bytes.count)
    }

    /// Drops `byteCount` bytes from the front; frees the storage once empty.
    public mutating func consume(_ byteCount: Int) {
        precondition(byteCount >= 0 && byteCount <= count, "consume(\(byteCount)) of \(count) bytes")
        readIndex += UInt32(byteCount)
        if readIndex == writeIndex { release() }
    }

    /// Moves the content out, leaving this buffer empty.
    public mutating func take() -> ByteBuffer {
        var taken = ByteBuffer()
        swap(&self, &taken)
        return taken
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
        if Int(writeIndex) + extra <= Int(capacity) { return }
        let live = count
        precondition(live + extra <= Int(UInt32.max / 2), "ByteBuffer over 2 GiB")
        if live + extra <= Int(capacity), let storage {
            // Enough room overall: slide the unread bytes to the front.
            storage.copyMemory(from: storage + Int(readIndex), byteCount: live)
        } else {
            var newCapacity = Swift.max(Int(capacity), 1024)
            while newCapacity < live + extra { newCapacity *= 2 }
            let grown = UnsafeMutableRawPointer.allocate(byteCount: newCapacity, alignment: 16)
            if let storage {
                grown.copyMemory(from: storage + Int(readIndex), byteCount: live)
                storage.deallocate()
            }
            storage = grown
            capacity = UInt32(newCapacity)
        }
        readIndex = 0
        writeIndex = UInt32(live)
    }
}
