import Reactor

/// A connection for async/await code, the shape of SwiftNIO's
/// `NIOAsyncChannel`: an inbound sequence of byte chunks (or of frames,
/// when the server was given a framer) and an outbound writer, both used
/// inside `executeThenClose`.
///
/// ```swift
/// try await connection.executeThenClose { inbound, outbound in
///     for try await chunk in inbound { try await outbound.write(chunk) }
/// }
/// ```
///
/// Run the body in a task whose executor preference is the connection's
/// loop (`AsyncServer.serve` does): its reads and writes then happen on the
/// loop's thread, with no hop between threads.
public struct AsyncConnection: Sendable {
    /// The connection's handle, for its addresses and loop (state getters on the loop's thread only).
    public let connection: Connection
    let bridge: ConnectionBridge

    /// Runs `body` with the connection's inbound and outbound halves, then
    /// closes the connection (once what was written is flushed), whether
    /// `body` returned or threw; rethrows what it threw. Cancelling the task
    /// closes the connection too, and ends its waits with `CancellationError`.
    public func executeThenClose<Result>(
        _ body: (_ inbound: Inbound, _ outbound: Outbound) async throws -> Result
    ) async throws -> Result {
        defer { connection.close() }
        // One cancellation handler for the whole body, not one per read or write.
        return try await withTaskCancellationHandler {
            try await body(Inbound(bridge: bridge), Outbound(connection: connection, bridge: bridge))
        } onCancel: {
            bridge.cancel()
        }
    }

    /// What the peer sent, in order: a chunk per read, or a frame each with
    /// a framer. It ends after the peer's FIN, or when the connection
    /// closes. Reading pauses at the socket while the consumer lags by more
    /// than the server's `InboundLimits`.
    public struct Inbound: AsyncSequence, Sendable {
        /// One read's bytes, or one frame.
        public typealias Element = [UInt8]
        let bridge: ConnectionBridge

        /// Reads the connection's chunks in order; one iterator per connection.
        public struct AsyncIterator: AsyncIteratorProtocol {
            let bridge: ConnectionBridge
            /// The next chunk or frame, waiting for one; nil once the input ended.
            public mutating func next() async throws -> [UInt8]? { try await bridge.next() }

            /// What `for try await` calls: runs on the caller's executor, no hop.
            public mutating func next(isolation actor: isolated (any Actor)?) async throws -> [UInt8]? {
                try await bridge.next()
            }
        }

        /// The iterator over this connection's input.
        public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(bridge: bridge) }
    }

    /// Writes to the connection, in order. A write returns once the bytes
    /// are sent or queued; while the connection's pending output is above
    /// the loop's high-water mark, it waits first. It throws
    /// `ConnectionClosedError` once the connection is closed.
    public struct Outbound: Sendable {
        let connection: Connection
        let bridge: ConnectionBridge

        /// Sends `bytes`, queueing what the socket does not take at once.
        public func write(_ bytes: [UInt8]) async throws {
            try await bridge.waitUntilWritable()
            connection.write(bytes)
        }

        /// Sends a shared buffer, queued by reference (see `Connection.write(_:)`).
        public func write(_ buffer: SharedBuffer) async throws {
            try await bridge.waitUntilWritable()
            connection.write(buffer)
        }
    }
}
