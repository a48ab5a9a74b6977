import Reactor
import Testing

/// The two ways a loop can echo: the built-in `EchoHandler` as every loop's
/// shared handler, which the loop runs inline in its read path, and an
/// `EchoHandler` per connection, called through the protocol like any
/// handler of one's own. Echo tests run on both.
public enum EchoPath: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case inline
    case perConnectionHandler

    public var testDescription: String { rawValue }
}

/// Runs `body` against a Reactor server on an ephemeral loopback port and
/// always shuts it down, so a failing test leaves no thread or fd behind.
/// `echo: .inline` serves with the shared built-in echo instead of `handler`.
public func withServer<Result>(
    loops: Int = 2,
    configure: (inout Server.Configuration) -> Void = { _ in },
    echo: EchoPath = .perConnectionHandler,
    handler: @escaping @Sendable (EventLoop) -> any ConnectionHandler = { _ in EchoHandler() },
    _ body: (Server) throws -> Result
) throws -> Result {
    try withStartedServer(loops: loops, configure: configure, { configuration in
        switch echo {
        case .inline: try Server(configuration: configuration, handler: EchoHandler())
        case .perConnectionHandler: try Server(configuration: configuration, makeHandler: handler)
        }
    }, body)
}

/// `withServer` with one handler shared by every connection.
public func withServer<Result>(
    loops: Int = 2, sharing handler: any ConnectionHandler & Sendable, _ body: (Server) throws -> Result
) throws -> Result {
    try withStartedServer(loops: loops, configure: { _ in }, { try Server(configuration: $0, handler: handler) }, body)
}

private func withStartedServer<Result>(
    loops: Int,
    configure: (inout Server.Configuration) -> Void,
    _ make: (Server.Configuration) throws -> Server,
    _ body: (Server) throws -> Result
) throws -> Result {
    var configuration = Server.Configuration()
    configuration.port = 0
    configuration.loops = loops
    configure(&configuration)
    let server = try make(configuration)
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
