/// The echo protocol: every byte received is written back, in order.
/// Stateless, so one instance can serve every connection of every loop.
public final class EchoHandler: ConnectionHandler, Sendable {
    public init() {}

    public func connection(_ connection: Connection, received bytes: UnsafeRawBufferPointer) -> Int {
        connection.write(bytes)
        return bytes.count
    }
}
