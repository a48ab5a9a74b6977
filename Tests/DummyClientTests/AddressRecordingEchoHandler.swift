import Reactor

/// Echoes, and records each connection's remote host as it opens.
final class AddressRecordingEchoHandler: ConnectionHandler {
    private let hosts: Locked<[String]>

    init(into hosts: Locked<[String]>) { self.hosts = hosts }

    func connectionOpened(_ connection: Connection) {
        let host = connection.remoteAddress?.host ?? "unknown"
        hosts.withLock { $0.append(host) }
    }

    func connection(_ connection: Connection, received bytes: UnsafeRawBufferPointer) -> Int {
        connection.write(bytes)
        return bytes.count
    }
}
