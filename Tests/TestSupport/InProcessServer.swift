import Reactor

/// Runs `body` against a Reactor server on an ephemeral loopback port and
/// always shuts it down, so a failing test leaves no thread or fd behind.
public func withServer<Result>(
    loops: Int = 2,
    configure: (inout Server.Configuration) -> Void = { _ in },
    handler: @escaping @Sendable (EventLoop) -> any ConnectionHandler = { _ in EchoHandler() },
    _ body: (Server) throws -> Result
) throws -> Result {
    var configuration = Server.Configuration()
    configuration.port = 0
    configuration.loops = loops
    configure(&configuration)
    let server = try Server(configuration: configuration, makeHandler: handler)
    try server.start()
    defer {
        server.shutdown(gracePeriod: .seconds(2))
        server.wait()
    }
    return try body(server)
}

extension Server {
    public var port: UInt16 { localAddress.port }
}
