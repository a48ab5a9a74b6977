import Reactor

/// `GET /metrics` over HTTP/1.x, served by a Reactor server of its own (one
/// loop): the second protocol the library carries beside a program's own.
/// Each request gets one answer and the connection is closed after it:
/// 200 with `render()`'s text, 404 for another path, 405 for another method,
/// 400 for a malformed or oversized head; a client that has not sent a
/// whole head within `requestTimeout` is closed. None of it touches the
/// program's own loops.
public final class MetricsEndpoint: Sendable {
    public let server: Server

    /// Binds and listens on `host`:`port` (0: any free port), or serves
    /// `listeningSocket` (one passed to this process); serving starts with `start()`.
    public init(
        host: String = "127.0.0.1", port: UInt16, listeningSocket: Int32? = nil, requestTimeout: Duration = .seconds(5),
        errors: @escaping @Sendable (any Error) -> Void = { _ in },
        render: @escaping @Sendable () -> String
    ) throws {
        var configuration = Server.Configuration()
        configuration.host = host
        configuration.port = port
        configuration.listeningSocket = listeningSocket
        configuration.loops = 1
        configuration.maxConnections = 64
        configuration.idleTimeout = requestTimeout
        server = try Server(configuration: configuration, errors: errors,
                            handler: MetricsHTTPHandler(requestTimeout: requestTimeout, render: render))
    }

    public func start() throws { try server.start() }

    public func shutdown() {
        server.shutdown(gracePeriod: .seconds(1))
        server.wait()
    }
}

/// One handler for every connection of the endpoint (it keeps nothing per connection).
final class MetricsHTTPHandler: ConnectionHandler, Sendable {
    let requestTimeout: Duration
    let render: @Sendable () -> String

    init(requestTimeout: Duration, render: @escaping @Sendable () -> String) {
        self.requestTimeout = requestTimeout
        self.render = render
    }

    func connectionOpened(_ connection: Connection) {
        // A head still unfinished then is timed out; a stale handle, once answered, does nothing.
        connection.eventLoop.schedule(after: requestTimeout) {
            connection.close(reason: .protocolError("no whole request within the timeout"))
        }
    }

    func connection(_ connection: Connection, received bytes: UnsafeRawBufferPointer) -> Int {
        switch HTTPRequestHead.parse(bytes) {
        case .incomplete:
            return 0
        case .malformed(let why):
            answer(connection, status: "400 Bad Request", body: "\(why)\n")
        case .complete(let head, _) where head.method != "GET":
            answer(connection, status: "405 Method Not Allowed", body: "GET only\n", extra: "Allow: GET\r\n")
        case .complete(let head, _) where head.path != "/metrics" && !head.path.hasPrefix("/metrics?"):
            answer(connection, status: "404 Not Found", body: "try /metrics\n")
        case .complete:
            answer(connection, status: "200 OK", body: render(), type: "text/plain; version=0.0.4; charset=utf-8")
        }
        return bytes.count
    }

    private func answer(_ connection: Connection, status: String, body: String,
                        type: String = "text/plain; charset=utf-8", extra: String = "") {
        let body = Array(body.utf8)
        let head = "HTTP/1.1 \(status)\r\nContent-Type: \(type)\r\nContent-Length: \(body.count)\r\n\(extra)Connection: close\r\n\r\n"
        Array(head.utf8).withUnsafeBytes { head in body.withUnsafeBytes { connection.write(head, $0) } }
        connection.close()
    }
}
