import Reactor
import ReactorAsync
import TestSupport

/// Runs `test` against an `AsyncServer` on an ephemeral loopback port whose
/// connections run `body`. The accept loop itself is a task on loop 0 (the
/// loop as a task executor), so the blocking test clients never wait for a
/// thread of the cooperative pool. The server is always shut down.
func withAsyncServer<Result>(
    loops: Int = 2,
    configure: (inout Server.Configuration) -> Void = { _ in },
    framer: (any Framer)? = nil,
    inbound: InboundLimits = InboundLimits(),
    failed: @escaping @Sendable (AsyncConnection, any Error) -> Void = { _, _ in },
    serving body: @escaping @Sendable (AsyncConnection.Inbound, AsyncConnection.Outbound) async throws -> Void,
    _ test: (AsyncServer) throws -> Result
) throws -> Result {
    let server = try startedAsyncServer(loops: loops, configure: configure, framer: framer, inbound: inbound)
    Task(executorPreference: server.server.loops[0]) { await server.serve(failed: failed, body) }
    defer { server.stop() }
    return try test(server)
}

/// An `AsyncServer` on an ephemeral loopback port, started, with nothing
/// serving its connections yet; `stop()` it when done.
func startedAsyncServer(
    loops: Int, configure: (inout Server.Configuration) -> Void = { _ in },
    framer: (any Framer)? = nil, inbound: InboundLimits = InboundLimits()
) throws -> AsyncServer {
    var configuration = Server.Configuration()
    configuration.port = 0
    configuration.loops = loops
    configure(&configuration)
    let server = try AsyncServer(configuration: configuration, framer: framer, inbound: inbound)
    try server.start()
    return server
}

extension AsyncServer {
    var port: UInt16 { server.localAddress.port }

    /// Shuts down and waits for the loops.
    func stop() {
        shutdown(gracePeriod: .seconds(2))
        wait()
    }
}

/// The echo, as `echo-server --async` serves it.
@Sendable func echo(_ inbound: AsyncConnection.Inbound, _ outbound: AsyncConnection.Outbound) async throws {
    for try await chunk in inbound { try await outbound.write(chunk) }
}
