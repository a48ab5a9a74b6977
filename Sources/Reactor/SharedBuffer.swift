/// Immutable bytes in one reference-counted allocation, for writing the same
/// message to many connections: `connection.write(buffer)` sends from it and,
/// when the socket does not take all of it, queues a reference to it, never
/// a copy. What a broadcast writes.
///
/// ```swift
/// let chat = SharedBuffer(count: 4 + text.count) { bytes in
///     bytes.storeBytes(of: UInt16(4 + text.count).littleEndian, toByteOffset: 0, as: UInt16.self)
///     bytes.storeBytes(of: UInt16(2).littleEndian, toByteOffset: 2, as: UInt16.self)
///     bytes[4...].copyBytes(from: text)
/// }
/// for member in members { member.write(chat) }
/// ```
public struct SharedBuffer: @unchecked Sendable {
    // @unchecked Sendable: the storage is written once, in `init`, and only
    // read after; its reference count is atomic. (ManagedBuffer itself is
    // marked non-Sendable, since in general its contents are mutable.)
    let storage: ByteStorage

    /// A buffer of `count` bytes written once by `initialize`: one allocation.
    public init(count: Int, initializingWith initialize: (UnsafeMutableRawBufferPointer) throws -> Void) rethrows {
        storage = ByteStorage.make(capacity: count)
        try initialize(UnsafeMutableRawBufferPointer(start: storage.bytes, count: count))
        storage.count = count
    }

    /// A buffer holding a copy of `bytes`.
    public init(copying bytes: UnsafeRawBufferPointer) {
        self.init(count: bytes.count) { $0.copyMemory(from: bytes) }
    }

    /// A buffer holding a copy of the array's bytes.
    public init(_ bytes: [UInt8]) {
        self = bytes.withUnsafeBytes { SharedBuffer(copying: $0) }
    }

    /// The number of bytes.
    public var count: Int { storage.count }

    /// Lends the bytes to `body`.
    public func withUnsafeBytes<Result>(_ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result {
        try body(UnsafeRawBufferPointer(start: storage.bytes, count: storage.count))
    }
}

/// Bytes in the same allocation as their header: what a `SharedBuffer` and
/// the output queue's own chunks (appended to by their queue only, never
/// handed out) are made of.
final class ByteStorage: ManagedBuffer<ByteStorage.Header, UInt8> {
    struct Header {
        var count: Int
    }

    static func make(capacity: Int) -> ByteStorage {
        let buffer = create(minimumCapacity: capacity) { _ in Header(count: 0) }
        return unsafeDowncast(buffer, to: ByteStorage.self)
    }

    /// The first byte; the storage is alive as long as this object is.
    var bytes: UnsafeMutableRawPointer {
        UnsafeMutableRawPointer(withUnsafeMutablePointerToElements { $0 })
    }

    /// Bytes written so far. Through the header's pointer, not `header`:
    /// that property is checked for exclusive access at run time, on every
    /// delivery of a broadcast.
    var count: Int {
        get { withUnsafeMutablePointerToHeader { $0.pointee.count } }
        set { withUnsafeMutablePointerToHeader { $0.pointee.count = newValue } }
    }
}
