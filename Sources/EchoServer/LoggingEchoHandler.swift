import Logging
import Reactor

/// `--verbose`: echo, plus one log line per connection opened (peer, the MSS
/// agreed in the handshake) and closed (reason, bytes echoed, duration). One
/// instance per connection, since it counts that connection's bytes.
final class LoggingEchoHandler: ConnectionHandler {
    private let logger: Logger
    private var openedAt: UInt64 = 0
    private var bytesEchoed = 0

    init(logger: Logger) { self.logger = logger }

    func connectionOpened(_ connection: Connection) {
        openedAt = monotonicNanoseconds()
        let peer = connection.remoteAddress.map { "\($0)" } ?? "?"
        let mss = connection.maximumSegmentSize.map { "\($0)" } ?? "?"
        logger.debug("open fd \(connection.fd) from \(peer), mss \(mss)")
    }

    func connection(_ connection: Connection, received bytes: UnsafeRawBufferPointer) -> Int {
        bytesEchoed += bytes.count
        connection.write(bytes)
        return bytes.count
    }

    func connectionClosed(_ connection: Connection, reason: CloseReason) {
        let milliseconds = Double(monotonicNanoseconds() - openedAt) / 1e6
        logger.debug("close fd \(connection.fd): \(reason), \(bytesEchoed) B echoed, \(milliseconds) ms")
    }
}
