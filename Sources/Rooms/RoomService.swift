import Reactor
import Synchronization

/// A room server on the Reactor: a `Server` whose connections are room
/// members, and one `RoomLoop` per event loop.
public final class RoomService: Sendable {
    public let server: Server
    private let homes: [RoomLoop]

    /// Binds and listens (see `Server.init`); `maximumPacket` bounds a
    /// client packet, `configuration.backpressure.highWaterMark` is the
    /// slow-member mark; `log` hears slow members and protocol errors.
    public init(
        configuration: Server.Configuration, maximumPacket: Int,
        errors: @escaping @Sendable (any Error) -> Void = { _ in },
        log: @escaping @Sendable (String) -> Void = { _ in }
    ) throws {
        precondition(maximumPacket >= RoomPacket.headerSize + 4 && maximumPacket <= RoomPacket.maximumSize)
        let framer = LengthPrefixedFramer.packetHeader(maximumFrameSize: maximumPacket)
        let homes = (0..<configuration.loops).map { RoomLoop(index: $0, framer: framer, log: log) }
        server = try Server(configuration: configuration, errors: errors, loopHandlers: homes)
        for (home, loop) in zip(homes, server.loops) { home.attach(to: loop, peers: homes) }
        self.homes = homes
    }

    /// Totals over all loops. Any thread.
    public var statistics: RoomStatistics {
        homes.reduce(into: RoomStatistics()) { totals, home in
            totals.broadcasts += home.counters.broadcasts.load(ordering: .relaxed)
            totals.deliveries += home.counters.deliveries.load(ordering: .relaxed)
            totals.slowMembers += home.counters.slowMembers.load(ordering: .relaxed)
            totals.dropped += home.counters.dropped.load(ordering: .relaxed)
        }
    }
}

public struct RoomStatistics: Sendable, Equatable, CustomStringConvertible {
    /// C_CHAT packets taken in (each an S_CHAT to every member of its room).
    public var broadcasts: UInt64 = 0
    /// S_CHAT packets written to members.
    public var deliveries: UInt64 = 0
    /// Members disconnected at the slow mark.
    public var slowMembers: UInt64 = 0
    /// C_CHAT or C_LEAVE from connections in no room.
    public var dropped: UInt64 = 0

    public var description: String {
        "\(broadcasts) broadcasts, \(deliveries) deliveries, \(slowMembers) slow members, \(dropped) dropped"
    }
}
