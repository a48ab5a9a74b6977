import Reactor

/// A `Server` whose connections are served by async/await code: accepted
/// connections arrive as an `AsyncSequence` of `AsyncConnection`s, and
/// `serve` runs a body for each in a task on the connection's own loop.
///
/// ```swift
/// let server = try AsyncServer(configuration: configuration)
/// try server.start()
/// await server.serve { inbound, outbound in
///     for try await chunk in inbound { try await outbound.write(chunk) }
/// }
/// ```
public final class AsyncServer: Sendable {
    /// The server underneath: its loops, address, statistics and limits.
    public let server: Server
    private let queue = AcceptQueue()

    /// Binds and listens (see `Server.init`). With `framer`, each inbound
    /// element is one frame instead of one read's chunk; a bad frame closes
    /// its connection with `.framing`. `inbound` bounds what a connection
    /// holds for a consumer that lags.
    public init(
        configuration: Server.Configuration,
        framer: (any Framer)? = nil,
        inbound: InboundLimits = InboundLimits(),
        errors: @escaping @Sendable (any Error) -> Void = { _ in }
    ) throws {
        let queue = self.queue
        server = try Server(configuration: configuration, errors: errors) { _ in
            ConnectionBridge(framer: framer, limits: inbound) { queue.push($0) }
        }
    }

    /// Accepted connections, in order, until `shutdown`. One task iterates it.
    public var connections: Connections { Connections(queue: queue) }

    /// The sequence of accepted connections (see `connections`).
    public struct Connections: AsyncSequence, Sendable {
        /// One accepted connection.
        public typealias Element = AsyncConnection
        let queue: AcceptQueue

        /// Takes accepted connections in order.
        public struct AsyncIterator: AsyncIteratorProtocol {
            let queue: AcceptQueue
            /// The next accepted connection; nil after `shutdown`, or when the task is cancelled.
            public mutating func next() async -> AsyncConnection? { await queue.next() }
        }

        /// The iterator; one task iterates.
        public func makeAsyncIterator() -> AsyncIterator { AsyncIterator(queue: queue) }
    }

    /// Starts the loops, each on a thread of its own.
    public func start() throws {
        try server.start()
    }

    /// Runs `body` for every connection, each in a child task whose executor
    /// is the connection's loop, inside `executeThenClose`; returns when the
    /// server has shut down and every body has returned. A body that throws
    /// closes its connection only; `failed` hears the error.
    public func serve(
        failed: @escaping @Sendable (AsyncConnection, any Error) -> Void = { _, _ in },
        _ body: @escaping @Sendable (AsyncConnection.Inbound, AsyncConnection.Outbound) async throws -> Void
    ) async {
        await withDiscardingTaskGroup { group in
            for await connection in connections {
                group.addTask(executorPreference: connection.connection.eventLoop) {
                    do {
                        try await connection.executeThenClose(body)
                    } catch {
                        failed(connection, error)
                    }
                }
            }
        }
    }

    /// Stops accepting (`connections` ends) and shuts the server down as
    /// `Server.shutdown` does: each connection's body sees its inbound end
    /// after what was read, and its answers are flushed before the FIN.
    public func shutdown(gracePeriod: Duration = .seconds(5)) {
        queue.finish()
        server.shutdown(gracePeriod: gracePeriod)
    }

    /// Waits for every loop to stop. Blocks the calling thread: not from a task on a loop.
    public func wait() {
        server.wait()
    }
}
