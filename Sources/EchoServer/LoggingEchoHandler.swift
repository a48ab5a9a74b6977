import Logging
import Reactor

/// Echo, plus one log line per connection opened (peer, negotiated MSS) and
/// closed (reason, bytes echoed, duration): `--verbose`.
final class LoggingEchoHandler: ConnectionHandler, Sendable {
    private let logger: Logger

    init(logger: Logger) { self.logger = logger }

    func connectionOpened(_ connection: Connection) {
        let peer = connection.remoteAddress.map { "\($0)" } ?? "?"
        let mss = connection.maximumSegmentSize.map { "\($0)" } ?? "?"
        logger.debug("open \(peer) mss=\(mss)")
    }

    func connection(_ connection: Connection, received bytes: UnsafeRawBufferPointer) {
        connection.write(bytes)
    }

    func connectionClosed(_ connection: Connection, reason: CloseReason) {
        let milliseconds = Double(connection.age) / 1e6
        logger.debug("close fd \(connection.fd): \(reason), \(connection.bytesSent) B echoed, \(milliseconds) ms")
    }
}
