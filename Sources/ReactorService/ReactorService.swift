import Reactor
import ReactorAsync
import ServiceLifecycle

/// A Reactor server as a swift-service-lifecycle `Service`: run it in a
/// `ServiceGroup` beside the rest of a program's services.
///
/// `run()` starts the server's loops and returns once they have all
/// stopped. A graceful shutdown of the group (SIGTERM, say, when the group
/// is configured with it) drains the way `echo-server`'s own SIGTERM does:
/// the server stops accepting, answers what it has read, flushes, and then
/// sends FIN; what is still open after `gracePeriod` is closed. Cancelling
/// the service closes every connection at once.
///
/// The service group owns the process's signals: a `ReactorService` never
/// blocks or watches any (the executables' own `serve()` does both, and is
/// not for programs run by a `ServiceGroup`).
public struct ReactorService: Service {
    private let server: Server
    private let asyncServer: AsyncServer?
    private let body: (@Sendable (AsyncConnection.Inbound, AsyncConnection.Outbound) async throws -> Void)?
    private let gracePeriod: Duration

    /// A server of handlers (`Server`), not yet started.
    public init(server: Server, gracePeriod: Duration = .seconds(5)) {
        self.server = server
        asyncServer = nil
        body = nil
        self.gracePeriod = gracePeriod
    }

    /// An `AsyncServer`, not yet started, serving each connection with `body`
    /// (as `AsyncServer.serve` does).
    public init(
        server: AsyncServer, gracePeriod: Duration = .seconds(5),
        serving body: @escaping @Sendable (AsyncConnection.Inbound, AsyncConnection.Outbound) async throws -> Void
    ) {
        self.server = server.server
        asyncServer = server
        self.body = body
        self.gracePeriod = gracePeriod
    }

    public func run() async throws {
        try server.start()
        try await withTaskCancellationHandler {
            try await withGracefulShutdownHandler {
                try await withThrowingDiscardingTaskGroup { group in
                    if let asyncServer, let body {
                        group.addTask(executorPreference: server.loops[0]) { await asyncServer.serve(body) }
                    }
                    group.addTask { try await loopsStopped() }
                }
            } onGracefulShutdown: {
                shutdown(gracePeriod: gracePeriod)
            }
        } onCancel: {
            shutdown(gracePeriod: .zero)
        }
    }

    private func shutdown(gracePeriod: Duration) {
        if let asyncServer { asyncServer.shutdown(gracePeriod: gracePeriod) } else { server.shutdown(gracePeriod: gracePeriod) }
    }

    /// Waits, on a thread of its own rather than one of the cooperative
    /// pool's, until every loop has stopped.
    private func loopsStopped() async throws {
        let server = server
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            do {
                _ = try LoopThread(name: "service-wait") {
                    server.wait()
                    continuation.resume()
                }
            } catch {
                continuation.resume(throwing: error)
            }
        }
    }
}
