import Reactor

/// Echoes everything, except that the byte at stream offset `flipAt` of each
/// connection comes back with its low bit flipped.
final class CorruptingEchoHandler: ConnectionHandler {
    private let flipAt: Int
    private var seen = 0

    init(flipAt: Int) { self.flipAt = flipAt }

    func connection(_ connection: Connection, received bytes: UnsafeRawBufferPointer) -> Int {
        let range = seen..<(seen + bytes.count)
        seen += bytes.count
        if range.contains(flipAt) {
            var copy = Array(bytes)
            copy[flipAt - range.lowerBound] ^= 0x01
            connection.write(copy)
        } else {
            connection.write(bytes)
        }
        return bytes.count
    }
}
