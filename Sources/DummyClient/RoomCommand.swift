import ArgumentParser
import CommandLineSupport
import Reactor
import Rooms

struct Room: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Room protocol load (../shared/protocols/room.md): rooms of members chatting, every delivery verified.",
        discussion: """
            Every member connects, sends C_ENTER for its room and waits for S_ENTER; once all have \
            entered, closed loop (default): each member sends a --size B chat and the next once its own \
            S_CHAT is back; open loop (--rate R): each member starts R chats per second, latency from \
            the intended send time. Every S_CHAT is checked: S_ENTER first, its sender a member of the \
            room, its payload byte for byte, each sender's sequence 0, 1, 2, ... and one order for the \
            whole room. Room r lives on loop r % --threads. Traffic counts after --warmup (from the \
            last S_ENTER) for --duration seconds.
            """)

    @OptionGroup var server: AddressOptions
    @Option(help: "Rooms (1-100000).")
    var rooms = 100
    @Option(help: "Members per room (1-100000; --rooms x --members at most 100000).")
    var members = 10
    @Option(help: "Bytes per chat payload: sequence number, send time, checkable filler (16-65527).")
    var size = 32
    @OptionGroup var load: LoadOptions
    @Option(help: "Open loop: chats per second per member (0.01-10000000); default: closed loop.")
    var rate: Double?
    @OptionGroup var histogramOutput: HistogramOutputOptions

    static let maximumMembers = 100_000

    func validate() throws {
        try check("--rooms", rooms, 1...100_000)
        try check("--members", members, 1...100_000)
        if rooms * members > Self.maximumMembers {
            throw ValidationError("""
                --rooms \(rooms) x --members \(members) is \(rooms * members) members, over \(Self.maximumMembers): \
                --members must be in 1...\(Self.maximumMembers / rooms)
                """)
        }
        try check("--size", size, RoomChat.fieldsSize...RoomPacket.maximumChatPayload)
        if let rate { try check("--rate", rate, 0.01...10_000_000) }
        try load.checkDescriptors(for: rooms * members, flag: "--members")
    }

    func run() throws {
        let total = rooms * members
        let configuration = RunConfiguration(
            mode: rate == nil ? .closed : .open, address: try server.address(), connections: total,
            threads: min(load.threads, rooms), size: size, burst: 1, rate: rate ?? 0,
            warmup: nanoseconds(load.warmup), duration: nanoseconds(load.duration), connectRate: load.connectRate,
            sourceAddress: try server.source(), room: .init(rooms: rooms, members: members))
        load.warnAboutPorts(total)
        let control = RunControl(loops: configuration.threads, participants: total)
        let pattern = Pattern.flood()
        var workers: [RoomWorker] = []
        for index in 0..<configuration.threads {
            workers.append(RoomWorker(index: index, loop: try EventLoop(backpressure: ClientConnection.alwaysRead),
                                      configuration: configuration, pattern: pattern, control: control))
        }
        for worker in workers { worker.peers = workers }
        // Entering may take a while with many members: 10 s, plus the connect rate's time.
        let entryDeadline = nanoseconds(10 + (load.connectRate.map { Double(total) / $0 } ?? 0))
        let times = try Runner.drive(workers, control: control, configuration: configuration, progress: !load.quiet,
                                     unit: "deliveries/s", loadStartsAtOnce: false, entryDeadline: entryDeadline)
        let report = RoomReport(configuration: configuration, workers: workers, times: times)
        for line in report.problems { Output.standardError("dummy-client: \(line)\n") }
        Output.standardOutput((load.json ? report.json() : report.summary()) + "\n")
        let wroteHistogram = histogramOutput.write(report.latencyLog)
        if !report.succeeded || !wroteHistogram { throw ExitCode.failure }
    }
}
