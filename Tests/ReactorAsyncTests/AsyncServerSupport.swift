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
    var configuration = Server.Configuration()
    configuration.port = 0
    configuration.loops = loops
    configure(&configuration)
    let server = try AsyncServer(configuration: configuration, framer: framer, inbound: inbound)
    try server.start()
    Task(executorPreference: server.server.loops[0]) { await server.serve(failed: failed, body) }
    defer {
        server.shutdown(gracePeriod: .seconds(2))
        server.wait()
    }
    return try test(server)
}

extension AsyncServer {
    var port: UInt16 { server.localAddress.port }
}

/// The echo, as `echo-server --async` serves it.
@Sendable func echo(_ inbound: AsyncConnection.Inbound, _ outbound: AsyncConnection.Outbound) async throws {
    for try await chunk in inbound { try await outbound.write(chunk) }
}
