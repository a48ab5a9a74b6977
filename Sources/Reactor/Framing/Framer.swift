/// Cuts a byte stream into frames, for a handler's `received` callback.
///
/// A framer is pure: it is handed the bytes lent to the handler (the unconsumed
/// tail of earlier reads followed by the new bytes), passes each whole frame to
/// `frame` in order, and reports how much it used so the caller keeps the rest
/// (a partial frame) for next time.
///
/// ```swift
/// let consumed = try framer.frames(in: bytes) { frame in handle(frame) }
/// ```
public protocol Framer: Sendable {
    /// Delivers every whole frame at the start of `bytes`, in order.
    ///
    /// - Parameters:
    ///   - bytes: The unconsumed bytes of the connection.
    ///   - frame: Called once per whole frame with a slice of `bytes` (no copy),
    ///     valid only during the call.
    /// - Returns: How many bytes the delivered frames took; the rest is an
    ///   incomplete frame to hand back, followed by new bytes, next time.
    /// - Throws: `FramingError` when the input can never form a valid frame.
    ///   Frames before the bad one have already been delivered.
    func frames(
        in bytes: UnsafeRawBufferPointer,
        _ frame: (UnsafeRawBufferPointer) -> Void
    ) throws(FramingError) -> Int
}

extension Framer {
    /// `frames(in:_:)` for a handler's `received`: a framing error closes
    /// `connection` at once with `.framing(error)` (logged and counted by
    /// the loop like any close reason). Returns what `received` returns.
    ///
    /// ```swift
    /// func connection(_ connection: Connection, received bytes: UnsafeRawBufferPointer) -> Int {
    ///     framer.frames(in: bytes, of: connection) { packet in handle(packet, on: connection) }
    /// }
    /// ```
    @inlinable
    public func frames(
        in bytes: UnsafeRawBufferPointer, of connection: Connection, _ frame: (UnsafeRawBufferPointer) -> Void
    ) -> Int {
        do {
            return try frames(in: bytes, frame)
        } catch {
            connection.close(reason: .framing(error))
            return bytes.count
        }
    }
}
