import Reactor
import Rooms

/// A room server (`RoomService`) on an ephemeral port for the test's duration
/// (the room tests' server, and dummy-client room's in its tests).
public func withRoomServer<Result>(
    loops: Int = 2, maximumPacket: Int = RoomPacket.maximumSize,
    configure: (inout Server.Configuration) -> Void = { _ in },
    log: Recorded<String> = Recorded(),
    _ body: (RoomService) throws -> Result
) throws -> Result {
    try withStarted(loops: loops, configure: configure, {
        try RoomService(configuration: $0, maximumPacket: maximumPacket, log: { log.append($0) })
    }, server: \.server, body)
}
