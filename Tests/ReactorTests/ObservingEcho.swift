import Reactor
import Synchronization
import TestSupport

/// Echo that records what tests need to see from inside the server: the
/// most output ever queued, how often reading was paused, every connection
/// opened (its handle) and why each one closed.
final class ObservingEcho: ConnectionHandler, Sendable {
    private let state = Locked((maximumPending: 0, paused: 0))
    let opened = Recorded<Connection>()
    let reasons = Recorded<CloseReason>()

    var maximumPending: Int { state.withLock { $0.maximumPending } }
    var pausedCount: Int { state.withLock { $0.paused } }

    func connectionOpened(_ connection: Connection) {
        opened.append(connection)
    }

    func connection(_ connection: Connection, received bytes: UnsafeRawBufferPointer) -> Int {
        defer { observe(connection) }
        connection.write(bytes)
        return bytes.count
    }

    private func observe(_ connection: Connection) {
        let pending = connection.pendingOutputBytes
        let paused = connection.isReadingPaused
        state.withLock {
            $0.maximumPending = max($0.maximumPending, pending)
            if paused { $0.paused += 1 }
        }
    }

    func connectionClosed(_ connection: Connection, reason: CloseReason) {
        reasons.append(reason)
    }
}
