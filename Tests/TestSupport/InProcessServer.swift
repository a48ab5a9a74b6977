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
    try withStarted(loops: loops, configure: configure, { configuration in
        switch echo {
        case .inline: try Server(configuration: configuration, handler: EchoHandler())
        case .perConnectionHandler: try Server(configuration: configuration, makeHandler: handler)
        }
    }, server: { $0 }, body)
}

/// `withServer` with one handler shared by every connection.
public func withServer<Result>(
    loops: Int = 2, sharing handler: any ConnectionHandler & Sendable, _ body: (Server) throws -> Result
) throws -> Result {
    try withStarted(loops: loops, configure: { _ in }, { try Server(configuration: $0, handler: handler) },
                    server: { $0 }, body)
}

/// Makes `service` (a server, or something built around one) on an ephemeral
/// loopback port with `loops` loops, starts its server, runs `body`, and
/// always shuts the server down.
public func withStarted<Service, Result>(
    loops: Int,
    configure: (inout Server.Configuration) -> Void,
    _ make: (Server.Configuration) throws -> Service,
    server: (Service) -> Server,
    _ body: (Service) throws -> Result
) throws -> Result {
    var configuration = Server.Configuration()
    configuration.port = 0
    configuration.loops = loops
    configure(&configuration)
    let service = try make(configuration)
    try server(service).start()
    defer {
        server(service).shutdown(gracePeriod: .seconds(2))
        server(service).wait()
    }
    return try body(service)
}

extension Server {
    public var port: UInt16 { localAddress.port }
}
