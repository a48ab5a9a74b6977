/// Frames that start with a fixed-size header holding the frame's length.
///
/// The frame handed over is the whole frame, header included, so a handler can
/// read the other header fields (an id, a type). The course's packets are
/// `packetHeader(maximumFrameSize:)`:
///
/// ```swift
/// // struct PacketHeader { u16 size; u16 id }: size is little-endian and counts the header.
/// let framer = LengthPrefixedFramer.packetHeader(maximumFrameSize: 4_096)
/// ```
public struct LengthPrefixedFramer: Framer {
    /// How the length field's bytes are ordered on the wire.
    public enum ByteOrder: Sendable {
        /// Least significant byte first, as in the course's packets.
        case littleEndian
        /// Most significant byte first: network byte order.
        case bigEndian
    }

    /// Bytes in the length field: 1, 2, 4 or 8.
    public let lengthFieldSize: Int
    /// The length field's byte order.
    public let byteOrder: ByteOrder
    /// Where the length field starts within the header.
    public let lengthFieldOffset: Int
    /// Bytes of header before the body; at least `lengthFieldOffset + lengthFieldSize`.
    public let headerSize: Int
    /// Whether the length counts the whole frame (header included) or only the body.
    public let lengthIncludesHeader: Bool
    /// The largest whole frame (header included) accepted, in bytes.
    public let maximumFrameSize: Int

    /// - Parameters:
    ///   - lengthFieldSize: 1, 2, 4 or 8 bytes.
    ///   - byteOrder: The length field's byte order.
    ///   - lengthFieldOffset: Where the length field starts within the header.
    ///   - headerSize: Bytes of header before the body; by default the header
    ///     ends with the length field.
    ///   - lengthIncludesHeader: Whether the length counts the header too.
    ///   - maximumFrameSize: The largest whole frame accepted, header included;
    ///     a larger one is refused as soon as its header arrives.
    public init(
        lengthFieldSize: Int,
        byteOrder: ByteOrder,
        lengthFieldOffset: Int = 0,
        headerSize: Int? = nil,
        lengthIncludesHeader: Bool,
        maximumFrameSize: Int
    ) {
        precondition(
            [1, 2, 4, 8].contains(lengthFieldSize), "length field of \(lengthFieldSize) B: must be 1, 2, 4 or 8")
        precondition(lengthFieldOffset >= 0, "negative length field offset \(lengthFieldOffset)")
        let headerSize = headerSize ?? lengthFieldOffset + lengthFieldSize
        precondition(
            headerSize >= lengthFieldOffset + lengthFieldSize,
            "header of \(headerSize) B cannot hold a \(lengthFieldSize) B length field at offset \(lengthFieldOffset)")
        precondition(
            maximumFrameSize >= headerSize,
            "maximum frame size \(maximumFrameSize) B is under the \(headerSize) B header")
        self.lengthFieldSize = lengthFieldSize
        self.byteOrder = byteOrder
        self.lengthFieldOffset = lengthFieldOffset
        self.headerSize = headerSize
        self.lengthIncludesHeader = lengthIncludesHeader
        self.maximumFrameSize = maximumFrameSize
    }

    /// The course's `PacketHeader { u16 size; u16 id }`: a little-endian `size`
    /// at offset 0 that counts the whole 4-byte header.
    public static func packetHeader(maximumFrameSize: Int) -> LengthPrefixedFramer {
        LengthPrefixedFramer(
            lengthFieldSize: 2, byteOrder: .littleEndian, lengthFieldOffset: 0, headerSize: 4,
            lengthIncludesHeader: true, maximumFrameSize: maximumFrameSize)
    }

    /// Delivers every whole frame at the start of `bytes`, header included, and
    /// refuses a frame over `maximumFrameSize` as soon as its header arrives
    /// (see `Framer.frames(in:_:)`).
    @inlinable
    public func frames(
        in bytes: UnsafeRawBufferPointer,
        _ frame: (UnsafeRawBufferPointer) -> Void
    ) throws(FramingError) -> Int {
        var frameStart = 0
        // The size is checked as soon as the header is complete, so a frame that
        // would be refused is never waited for.
        while bytes.count - frameStart >= headerSize {
            let frameSize = try size(ofFrameAt: frameStart, in: bytes)
            guard bytes.count - frameStart >= frameSize else { break }
            frame(UnsafeRawBufferPointer(rebasing: bytes[frameStart..<frameStart + frameSize]))
            frameStart += frameSize
        }
        return frameStart
    }

    /// The whole size of the frame whose complete header starts at `frameStart`.
    @inlinable
    func size(ofFrameAt frameStart: Int, in bytes: UnsafeRawBufferPointer) throws(FramingError) -> Int {
        let rawLength = length(at: frameStart + lengthFieldOffset, in: bytes)
        guard rawLength <= UInt64(Int.max) else { throw .lengthOverflows(rawValue: rawLength) }
        let length = Int(rawLength)
        let frameSize: Int
        if lengthIncludesHeader {
            guard length >= headerSize else {
                throw .lengthShorterThanHeader(length: length, headerSize: headerSize)
            }
            frameSize = length
        } else {
            let (sum, overflowed) = length.addingReportingOverflow(headerSize)
            guard !overflowed else { throw .lengthOverflows(rawValue: rawLength) }
            frameSize = sum
        }
        guard frameSize <= maximumFrameSize else {
            throw .frameTooLarge(size: frameSize, limit: maximumFrameSize)
        }
        return frameSize
    }

    /// The length field at `offset`, converted to host order.
    @inlinable
    func length(at offset: Int, in bytes: UnsafeRawBufferPointer) -> UInt64 {
        switch lengthFieldSize {
        case 1: UInt64(bytes.load(fromByteOffset: offset, as: UInt8.self))
        case 2: UInt64(hostOrder(bytes.loadUnaligned(fromByteOffset: offset, as: UInt16.self)))
        case 4: UInt64(hostOrder(bytes.loadUnaligned(fromByteOffset: offset, as: UInt32.self)))
        default: hostOrder(bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self))  // 8, checked by init
        }
    }

    @inlinable
    func hostOrder<Field: FixedWidthInteger>(_ wire: Field) -> Field {
        switch byteOrder {
        case .littleEndian: Field(littleEndian: wire)
        case .bigEndian: Field(bigEndian: wire)
        }
    }
}
