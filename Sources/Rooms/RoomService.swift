import Reactor
import Synchronization

/// A room server on the Reactor: a `Server` whose connections are room
/// members, and one `RoomLoop` per event loop.
public final class RoomService: Sendable {
    public let server: Server
    private let directory: RoomDirectory

    /// Binds and listens (see `Server.init`); `maximumPacket` bounds a
    /// client packet, `configuration.backpressure.highWaterMark` is the
    /// slow-member mark; `log` hears slow members and protocol errors.
    public init(
        configuration: Server.Configuration, maximumPacket: Int,
        errors: @escaping @Sendable (SystemError) -> Void = { _ in },
        log: @escaping @Sendable (String) -> Void = { _ in }
    ) throws {
        precondition(maximumPacket >= RoomPacket.headerSize + 4 && maximumPacket <= RoomPacket.maximumSize)
        let directory = RoomDirectory()
        server = try Server(configuration: configuration, errors: errors) { loop in
            let home = directory.home(of: loop)
            return RoomMember(id: directory.nextMemberID(), home: home)
        }
        let framer = LengthPrefixedFramer.packetHeader(maximumFrameSize: maximumPacket)
        let homes = server.loops.enumerated().map { RoomLoop(loop: $0.element, index: $0.offset, framer: framer, log: log) }
        for home in homes { home.attach(homes) }
        directory.homes = Dictionary(uniqueKeysWithValues: homes.map { (ObjectIdentifier($0.loop), $0) })
        self.directory = directory
    }

    /// Totals over all loops. Any thread.
    public var statistics: RoomStatistics {
        directory.homes.values.reduce(into: RoomStatistics()) { totals, home in
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

/// Which `RoomLoop` serves which event loop, and the member ids.
///
/// @unchecked Sendable: `homes` is written once, in `RoomService.init`,
/// before the server starts and so before any loop reads it.
final class RoomDirectory: @unchecked Sendable {
    var homes: [ObjectIdentifier: RoomLoop] = [:]
    private let memberIDs = Atomic<UInt32>(0)

    func home(of loop: EventLoop) -> RoomLoop { homes[ObjectIdentifier(loop)]! }

    /// Unique among the connections open at one time (it wraps after 2^32).
    func nextMemberID() -> UInt32 { memberIDs.wrappingAdd(1, ordering: .relaxed).newValue }
}
