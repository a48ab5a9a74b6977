import ArgumentParser
import Logging
import Reactor
import ReactorAsync
import ReactorService
import ServiceLifecycle
#if canImport(Glibc)
import Glibc
#endif

/// The README's ServiceGroup example: the echo as a `ReactorService` in a
/// `ServiceGroup` that owns SIGINT and SIGTERM.
@main
struct ServiceEcho: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "service-echo", abstract: "The echo server as a swift-service-lifecycle service.")

    @Option(help: "TCP port on 127.0.0.1 (1-65535).") var port = 7777
    @Option(help: "Event loops (1-1024).") var loops = 2
    @Flag(name: .customLong("async"), help: "Echo through ReactorAsync.") var useAsync = false

    func validate() throws {
        guard (1...65535).contains(port) else { throw ValidationError("--port must be in 1...65535") }
        guard (1...1024).contains(loops) else { throw ValidationError("--loops must be in 1...1024") }
    }

    func run() async throws {
        var configuration = Server.Configuration()
        configuration.port = UInt16(port)
        configuration.loops = loops
        let service = if useAsync {
            ReactorService(server: try AsyncServer(configuration: configuration)) { inbound, outbound in
                for try await chunk in inbound { try await outbound.write(chunk) }
            }
        } else {
            ReactorService(server: try Server(configuration: configuration, handler: EchoHandler()))
        }
        let group = ServiceGroup(
            services: [service], gracefulShutdownSignals: [.sigterm, .sigint], logger: Logger(label: "service-echo"))
        print("service-echo listening on 127.0.0.1:\(port)")
        fflush(nil) // stdout may be a pipe: the listening line must go out now
        try await group.run()
    }
}
