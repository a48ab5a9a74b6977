/// The echo protocol: every byte received is written back, in order.
/// Stateless, so one instance can serve every connection of every loop.
public final class EchoHandler: ConnectionHandler, Sendable {
    /// An echo handler; one instance may serve every connection.
    public init() {}

    /// Writes `bytes` back and consumes them all.
    public func connection(_ connection: Connection, received bytes: UnsafeRawBufferPointer) -> Int {
        connection.write(bytes)
        return bytes.count
    }
}
