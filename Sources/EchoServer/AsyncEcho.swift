import Logging
import Reactor
import ReactorAsync

/// `--async`: the echo through ReactorAsync, one task per connection on the
/// connection's own loop; the accept loop is a task on loop 0.
enum AsyncEcho {
    static func makeServer(
        configuration: Server.Configuration, logger: Logger, errors: @escaping @Sendable (any Error) -> Void
    ) throws -> Server {
        let service = try AsyncServer(configuration: configuration, errors: errors)
        Task(executorPreference: service.server.loops[0]) {
            await service.serve(failed: { connection, error in
                logger.warning("fd \(connection.connection.fd): \(error)")
            }) { inbound, outbound in
                for try await chunk in inbound { try await outbound.write(chunk) }
            }
        }
        return service.server
    }
}
