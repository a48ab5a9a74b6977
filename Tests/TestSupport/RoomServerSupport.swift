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
    var configuration = Server.Configuration()
    configuration.port = 0
    configuration.loops = loops
    configure(&configuration)
    let service = try RoomService(configuration: configuration, maximumPacket: maximumPacket, log: { log.append($0) })
    try service.server.start()
    defer {
        service.server.shutdown(gracePeriod: .seconds(2))
        service.server.wait()
    }
    return try body(service)
}
