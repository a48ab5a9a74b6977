import ArgumentParser
import CommandLineSupport
import Reactor
import Rooms

@main
struct RoomServer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "room-server",
        abstract: "The course's chat rooms (../shared/protocols/room.md) on the Reactor event loop.")

    @OptionGroup var server: ServerOptions
    @Option(help: "Largest client packet accepted, header included (8-65535 bytes); a larger one closes its connection.")
    var maxPacket = RoomPacket.maximumSize
    @Option(help: "Pending output at which a member that stops reading is disconnected (1024-1073741824 bytes).")
    var slowMemberBytes = 4 << 20

    func validate() throws {
        try check("--max-packet", maxPacket, 8...RoomPacket.maximumSize)
        try check("--slow-member-bytes", slowMemberBytes, 1024...(1 << 30))
    }

    func run() throws {
        let configuration = server.configuration(
            backpressure: Backpressure(highWaterMark: slowMemberBytes, lowWaterMark: slowMemberBytes / 4))
        let maxPacket = maxPacket
        let rooms = Locked<RoomService?>(nil)
        try serve("room-server", options: server, statistics: {
            rooms.withLock { $0.map { ", \($0.statistics)" } ?? "" }
        }) { logger, errors in
            let service = try RoomService(
                configuration: configuration, maximumPacket: maxPacket, errors: errors,
                log: { logger.info("\($0)") })
            rooms.withLock { $0 = service }
            return service.server
        }
    }
}
