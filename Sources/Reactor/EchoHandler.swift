/// The echo protocol: every byte received is written back, in order.
/// Stateless, so one instance can serve every connection of every loop.
public final class EchoHandler: ConnectionHandler, Sendable {
    public init() {}

    @inline(__always)
    public func connection(_ connection: Connection, received bytes: UnsafeRawBufferPointer) {
        connection.write(bytes)
    }
}
