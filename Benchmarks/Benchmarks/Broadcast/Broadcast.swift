// One room of the room server (one loop), in this process, and its members
// as plain blocking loopback sockets: one iteration is one broadcast. A
// member sends a C_CHAT of 32 bytes and every member, the sender included,
// reads the S_CHAT back. "Malloc (total)" is then heap allocations per
// broadcast, server and client together; divided by the members, per
// delivery. The members connect and enter in the setup hook, outside the
// measurement, and the client side allocates nothing per iteration.

import Benchmark
import Reactor
import Rooms

#if canImport(Glibc)
import Glibc
#endif

struct BroadcastError: Error, CustomStringConvertible {
    let description: String
}

/// The room server and `members` clients in room 1.
final class RoomBroadcast: @unchecked Sendable {
    // @unchecked Sendable: touched only by the benchmark thread; the server's
    // loop never sees this object.
    let members: Int
    private static let payload = 32
    private var service: RoomService?
    private var sockets: [Int32] = []
    private let chat: UnsafeMutableRawBufferPointer
    private let sink: UnsafeMutableRawBufferPointer
    private var sender = 0
    private(set) var failure: String?

    init(members: Int) {
        self.members = members
        chat = .allocate(byteCount: RoomPacket.headerSize + Self.payload, alignment: 16)
        chat.initializeMemory(as: UInt8.self, repeating: 0x42)
        RoomPacket.writeHeader(.clientChat, size: chat.count, into: chat)
        sink = .allocate(byteCount: 64 * 1024, alignment: 16)
    }

    deinit {
        stop()
        chat.deallocate()
        sink.deallocate()
    }

    func start() throws {
        stop()
        var configuration = Server.Configuration()
        configuration.port = 0
        configuration.loops = 1
        let service = try RoomService(configuration: configuration, maximumPacket: RoomPacket.maximumSize)
        try service.server.start()
        self.service = service
        guard case .v4(var address) = service.server.localAddress else { throw BroadcastError(description: "not IPv4") }
        let enter = RoomPacket.fixed(.clientEnter, [1])
        for _ in 0..<members {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw BroadcastError(description: "socket: \(String(cString: strerror(errno)))") }
            sockets.append(fd)
            var timeout = timeval(tv_sec: 5, tv_usec: 0) // a lost delivery fails the run instead of hanging it
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            let connected = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard connected == 0 else { throw BroadcastError(description: "connect: \(String(cString: strerror(errno)))") }
            _ = enter.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, 0) }
            guard receive(fd, RoomPacket.headerSize + 12) else { throw BroadcastError(description: "no S_ENTER") }
        }
        for _ in 0..<100 where broadcast() {} // warm up: the loop's spare queues, the allocator
    }

    func stop() {
        for fd in sockets { close(fd) }
        sockets.removeAll()
        if let service {
            service.server.shutdown(gracePeriod: .seconds(1))
            service.server.wait()
        }
        service = nil
    }

    /// One broadcast: a chat from the next member, read back by all.
    @inline(__always)
    func broadcast() -> Bool {
        let from = sockets[sender]
        sender = (sender + 1) % sockets.count
        guard send(from, chat.baseAddress, chat.count, Int32(MSG_NOSIGNAL)) == chat.count else {
            return fail("send")
        }
        for fd in sockets where !receive(fd, RoomPacket.headerSize + 4 + Self.payload) { return fail("recv") }
        return true
    }

    private func receive(_ fd: Int32, _ count: Int) -> Bool {
        recv(fd, sink.baseAddress, count, Int32(MSG_WAITALL)) == count
    }

    @inline(never)
    private func fail(_ what: String) -> Bool {
        if failure == nil { failure = "\(what): \(String(cString: strerror(errno)))" }
        return false
    }

    func register() {
        Benchmark(
            "Broadcast 1 room x \(members) members, 32 B",
            configuration: .init(
                metrics: [.throughput, .wallClock, .mallocCountTotal],
                scalingFactor: .one,
                maxDuration: .seconds(3),
                maxIterations: 100_000,
                setup: { [self] in try start() },
                teardown: { [self] in stop() }
            )
        ) { [self] benchmark in
            for _ in benchmark.scaledIterations {
                guard broadcast() else { break }
            }
            benchmark.stopMeasurement()
            if let failure { benchmark.error(failure) }
        }
    }
}

let benchmarks: @Sendable () -> Void = {
    for members in [10, 100] { RoomBroadcast(members: members).register() }
}
