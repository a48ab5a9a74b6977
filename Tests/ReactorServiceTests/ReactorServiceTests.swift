import Logging
import Reactor
import ReactorService
import ServiceLifecycle
import TestSupport
import Testing

@Suite("ReactorService")
struct ReactorServiceTests {
    private func echoServer() throws -> Server {
        var configuration = Server.Configuration()
        configuration.port = 0
        configuration.loops = 2
        return try Server(configuration: configuration, handler: EchoHandler())
    }

    /// A group's graceful shutdown drains: the server stops accepting, a
    /// client whose megabyte it took gets all of it back before the FIN, and
    /// the service (and the group) return.
    @Test func gracefulShutdownAnswersWhatWasReadThenFINs() async throws {
        let server = try echoServer()
        let group = ServiceGroup(services: [ReactorService(server: server)], logger: Logger(label: "test"))
        let running = Task { try await group.run() }
        let port = server.localAddress.port
        let client = try BlockingClient(port: port)
        let payload = patternBytes(count: 1 << 20, seed: 5)
        try client.sendInBackground(payload).join()
        #expect(eventually { server.statistics.bytesReceived >= UInt64(payload.count) })
        await group.triggerGracefulShutdown()
        #expect(try client.receiveUntilEOF(limit: payload.count) == payload)
        try await running.value
        #expect((try? BlockingClient(port: port, timeoutSeconds: 1)) == nil, "no longer accepting")
    }

    /// Cancelling the service's task closes its connections at once. (The
    /// server listens from its init, so the client may connect before `run`.)
    @Test func cancellationClosesEveryConnection() async throws {
        let server = try echoServer()
        let service = ReactorService(server: server)
        let running = Task { try await service.run() }
        let port = server.localAddress.port
        let client = try BlockingClient(port: port)
        try client.send([1, 2, 3])
        #expect(try client.receive(exactly: 3) == [1, 2, 3])
        running.cancel()
        #expect(try client.receiveUntilEOF(limit: 0) == [])
        try await running.value
    }
}
