import Reactor
#if canImport(Glibc)
import Glibc
#endif

/// Echoes the first `limit` bytes of each connection, then ends it the way
/// `fault` says. A FIN is a half-close once that echo is flushed: reading goes
/// on (and drops), so the client's next round is never refused with a reset,
/// as a draining server does it. A reset is SO_LINGER 0 and close, at once.
final class FaultyEchoHandler: ConnectionHandler {
    enum Fault: Sendable { case fin, reset }

    private let limit: Int
    private let fault: Fault
    private var seen = 0
    private var finPending = false

    init(after limit: Int, _ fault: Fault) {
        self.limit = limit
        self.fault = fault
    }

    func connection(_ connection: Connection, received bytes: UnsafeRawBufferPointer) -> Int {
        guard seen < limit else { return bytes.count }
        let echoed = min(bytes.count, limit - seen)
        connection.write(UnsafeRawBufferPointer(rebasing: bytes[..<echoed]))
        seen += bytes.count
        guard seen >= limit else { return bytes.count }
        switch fault {
        case .fin:
            finPending = true
            if connection.pendingOutputBytes == 0 { connectionDrained(connection) }
        case .reset:
            var option = linger(l_onoff: 1, l_linger: 0)
            setsockopt(connection.fd, SOL_SOCKET, SO_LINGER, &option, socklen_t(MemoryLayout<linger>.size))
            connection.close(reason: .reset)
        }
        return bytes.count
    }

    func connectionDrained(_ connection: Connection) {
        guard finPending else { return }
        finPending = false
        shutdown(connection.fd, Int32(SHUT_WR))
    }
}
