// Floods the Reactor echo server the way the course's DummyClient does, with
// the server and the client in this one process, and measures throughput,
// wall clock, heap allocations and peak resident memory.
//
// One benchmark iteration is one echoed round of every connection: each
// connection sends its messages back to back (one `send` per message), then
// reads until the whole echo is back. The malloc count per iteration is thus
// the count per round, over the server's loop thread and the client together.
// Connections are set up in the benchmark's setup hook, outside the measured
// iterations, and warmed up before measuring.

import Benchmark
import Reactor
import ReactorAsync

#if canImport(Glibc)
import Glibc
#endif

/// The server side of a flood: how the echo is written.
enum EchoServerKind: String, Sendable {
    /// The library's `EchoHandler`, one shared by every connection.
    case builtIn = "echo"
    /// A handler of this module's own, one per connection, counting its bytes.
    case ownHandler = "own handler"
    /// The course's packets: each message is a `PacketHeader` packet, cut by
    /// `LengthPrefixedFramer` and echoed frame by frame.
    case framed = "framed"
    /// ReactorAsync: a task per connection on its loop, `for try await chunk
    /// in inbound { try await outbound.write(chunk) }`.
    case async = "async"
}

/// Echo with per-connection state, from outside the Reactor module: what a
/// library user's handler costs.
final class CountingEchoHandler: ConnectionHandler {
    private var bytesEchoed = 0

    func connection(_ connection: Connection, received bytes: UnsafeRawBufferPointer) -> Int {
        bytesEchoed += bytes.count
        connection.write(bytes)
        return bytes.count
    }
}

/// Echoes each whole packet (u16 little-endian size counting the 4-byte
/// header, then an id); a partial one waits in the reactor for the rest.
final class PacketEchoHandler: ConnectionHandler, Sendable {
    let framer = LengthPrefixedFramer.packetHeader(maximumFrameSize: 64 * 1024)

    func connection(_ connection: Connection, received bytes: UnsafeRawBufferPointer) -> Int {
        framer.frames(in: bytes, of: connection) { packet in connection.write(packet) }
    }
}

/// One flood variant: `connections` clients, each sending `messages` messages
/// of `messageSize` bytes per round with at most `window` bytes in flight.
struct FloodShape: Sendable {
    var connections: Int
    var messageSize: Int
    var messages: Int
    /// Bytes a connection may have sent and not yet seen echoed.
    var window: Int
    /// SO_RCVBUF of the client sockets, when set: a small one makes the
    /// server's sends fall short, so its output buffers come into play.
    var receiveBuffer: Int32? = nil
    var server = EchoServerKind.builtIn

    var bytesPerConnection: Int { messageSize * messages }
}

/// Fatal setup errors: the benchmark reports them and stops.
struct FloodError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String, errno code: Int32 = errno) {
        self.description = code == 0 ? description : "\(description): \(String(cString: strerror(code)))"
    }
}

/// The in-process echo server (one loop) and the loopback clients flooding it.
///
/// The client side is plain non-blocking sockets driven by one `poll` loop on
/// the benchmark thread. Everything it touches per round (the pollfd array,
/// the per-connection counters, the payload and the receive sink) is allocated
/// once in `start()`, so a round allocates nothing on the client side.
final class EchoFlood: @unchecked Sendable {
    // @unchecked Sendable: touched only by the benchmark thread; the server's
    // loop thread never sees this object.
    let shape: FloodShape
    private var server: Server?
    /// The async server around `server`, kept for the `.async` kind.
    private var asyncServer: AsyncServer?
    private let pollfds: UnsafeMutablePointer<pollfd>
    private let sent: UnsafeMutablePointer<Int>
    private let received: UnsafeMutablePointer<Int>
    private let payload: UnsafeMutableRawPointer
    private let sink: UnsafeMutableRawPointer
    private static let sinkSize = 256 * 1024
    /// Longest wait for one poll; a round that makes no progress for this long fails.
    private static let stallMilliseconds: Int32 = 5_000
    private var connected = 0
    /// Samples taken so far, to read the peak RSS only now and then.
    private var samples = 0
    /// Set when a round failed: the first failure, for the benchmark's error.
    private(set) var failure: String?

    init(_ shape: FloodShape) {
        self.shape = shape
        pollfds = .allocate(capacity: shape.connections)
        pollfds.initialize(repeating: pollfd(fd: -1, events: 0, revents: 0), count: shape.connections)
        sent = .allocate(capacity: shape.connections)
        sent.initialize(repeating: 0, count: shape.connections)
        received = .allocate(capacity: shape.connections)
        received.initialize(repeating: 0, count: shape.connections)
        payload = .allocate(byteCount: shape.messageSize, alignment: 64)
        for index in 0..<shape.messageSize {
            payload.storeBytes(of: UInt8(truncatingIfNeeded: index &* 31 &+ 7), toByteOffset: index, as: UInt8.self)
        }
        if shape.server == .framed { // each message a whole packet: its size, then id 1
            payload.storeBytes(of: UInt16(shape.messageSize).littleEndian, toByteOffset: 0, as: UInt16.self)
            payload.storeBytes(of: UInt16(1).littleEndian, toByteOffset: 2, as: UInt16.self)
        }
        sink = .allocate(byteCount: Self.sinkSize, alignment: 64)
    }

    deinit {
        stop()
        pollfds.deallocate()
        sent.deallocate()
        received.deallocate()
        payload.deallocate()
        sink.deallocate()
    }

    // MARK: Setup and teardown (outside the measurement)

    /// Starts the server on an ephemeral 127.0.0.1 port with one loop, opens
    /// the connections, waits until the server has them all, and warms up.
    func start() throws {
        stop()
        failure = nil
        var configuration = Server.Configuration()
        configuration.host = "127.0.0.1"
        configuration.port = 0
        configuration.loops = 1
        let server = switch shape.server {
        case .builtIn: try Server(configuration: configuration, handler: EchoHandler())
        case .ownHandler: try Server(configuration: configuration) { _ in CountingEchoHandler() }
        case .framed: try Server(configuration: configuration, handler: PacketEchoHandler())
        case .async: try startAsyncEcho(configuration)
        }
        try server.start()
        self.server = server
        guard case .v4(var address) = server.localAddress else {
            throw FloodError("expected an IPv4 listen address, got \(server.localAddress)", errno: 0)
        }
        for index in 0..<shape.connections {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw FloodError("socket") }
            pollfds[index] = pollfd(fd: fd, events: 0, revents: 0)
            connected += 1
            if var size = shape.receiveBuffer { // before connect: it sets the window scale
                setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
            }
            let status = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                    connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
                }
            }
            guard status == 0 else { throw FloodError("connect \(server.localAddress)") }
            // Like the Reactor's own client connections: no Nagle delay, non-blocking.
            var one: Int32 = 1
            setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            guard fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK) == 0 else { throw FloodError("fcntl") }
        }
        // The listener accepts on the server's loop: wait (bounded) until all are in.
        let deadline = monotonicNanoseconds() + 10_000_000_000
        while server.connectionCount < shape.connections {
            guard monotonicNanoseconds() < deadline else {
                throw FloodError("server accepted \(server.connectionCount) of \(shape.connections) connections in 10 s", errno: 0)
            }
            usleep(1_000)
        }
        // Warm up: first-touch of socket buffers, the server's read buffer, caches.
        for _ in 0..<20 {
            guard round() else { throw FloodError("warm-up: \(failure ?? "failed")", errno: 0) }
        }
    }

    private func startAsyncEcho(_ configuration: Server.Configuration) throws -> Server {
        let service = try AsyncServer(configuration: configuration)
        Task(executorPreference: service.server.loops[0]) {
            await service.serve { inbound, outbound in
                for try await chunk in inbound { try await outbound.write(chunk) }
            }
        }
        asyncServer = service
        return service.server
    }

    /// Closes the client sockets, shuts the server down and waits for its loop.
    func stop() {
        for index in 0..<connected where pollfds[index].fd >= 0 {
            close(pollfds[index].fd)
            pollfds[index].fd = -1
        }
        connected = 0
        if let asyncServer {
            asyncServer.shutdown(gracePeriod: .seconds(1))
            self.asyncServer = nil
        }
        if let server {
            server.shutdown(gracePeriod: .seconds(1))
            server.wait()
            self.server = nil
        }
    }

    // MARK: One round (measured)

    /// One echoed round of every connection. Returns false (and sets `failure`)
    /// on an error, an unexpected EOF or a stall.
    @inline(never)
    func round() -> Bool {
        let connections = shape.connections
        let total = shape.bytesPerConnection
        for index in 0..<connections {
            sent[index] = 0
            received[index] = 0
            // Send right away: on loopback the first messages go out without a poll.
            guard pump(index) else { return false }
        }
        var pending = connections
        while pending > 0 {
            let ready = poll(pollfds, nfds_t(connections), Self.stallMilliseconds)
            if ready < 0 {
                if errno == EINTR { continue }
                return fail("poll", errno)
            }
            if ready == 0 { return fail("no progress for \(Self.stallMilliseconds) ms", 0) }
            for index in 0..<connections {
                let revents = pollfds[index].revents
                if revents == 0 { continue }
                if revents & Int16(POLLERR | POLLNVAL) != 0 { return fail("socket error on connection \(index)", 0) }
                if revents & Int16(POLLIN | POLLHUP) != 0 {
                    guard drain(index) else { return false }
                    if received[index] == total { pending -= 1 }
                }
                guard pump(index) else { return false }
            }
        }
        return true
    }

    /// Sends what the window allows, one `send` per message (the rest of a
    /// message a short send left), then sets the poll interest.
    @inline(__always)
    private func pump(_ index: Int) -> Bool {
        let fd = pollfds[index].fd
        let size = shape.messageSize
        let total = shape.bytesPerConnection
        var blocked = false
        while sent[index] < total, sent[index] - received[index] < shape.window {
            let offset = sent[index] % size
            let count = min(size - offset, shape.window - (sent[index] - received[index]))
            let n = send(fd, payload + offset, count, Int32(MSG_NOSIGNAL))
            if n > 0 {
                sent[index] += n
            } else if n < 0, errno == EAGAIN || errno == EWOULDBLOCK {
                blocked = true
                break
            } else if n < 0, errno == EINTR {
                continue
            } else {
                return fail("send on connection \(index)", errno)
            }
        }
        var events: Int16 = 0
        if received[index] < total { events |= Int16(POLLIN) }
        if blocked { events |= Int16(POLLOUT) }
        pollfds[index].events = events
        return true
    }

    /// Reads everything the socket holds into the sink.
    @inline(__always)
    private func drain(_ index: Int) -> Bool {
        let fd = pollfds[index].fd
        let total = shape.bytesPerConnection
        while received[index] < total {
            let n = recv(fd, sink, Self.sinkSize, 0)
            if n > 0 {
                received[index] += n
                if received[index] > sent[index] {
                    return fail("connection \(index): \(received[index] - sent[index]) B echoed that were never sent", 0)
                }
            } else if n == 0 {
                return fail("connection \(index): server closed after \(received[index]) of \(total) B", 0)
            } else if errno == EAGAIN || errno == EWOULDBLOCK {
                return true
            } else if errno != EINTR {
                return fail("recv on connection \(index)", errno)
            }
        }
        return true
    }

    @inline(never)
    private func fail(_ what: String, _ code: Int32) -> Bool {
        if failure == nil {
            failure = code == 0 ? what : "\(what): \(String(cString: strerror(code)))"
        }
        return false
    }

    // MARK: Registration

    /// Registers this flood as a benchmark: one iteration = one round.
    func register(_ name: String, maxDuration: Duration, maxIterations: Int) {
        Benchmark(
            name,
            configuration: .init(
                metrics: [.throughput, .wallClock, .mallocCountTotal, peakResidentMemory],
                units: [peakResidentMemory: .count], // KiB as they are, not rounded to thousands
                // One iteration is one round. With `.kilo` a sample would average
                // 1,000 rounds; the rows marked * would still read per round.
                scalingFactor: .one,
                maxDuration: maxDuration,
                maxIterations: maxIterations,
                setup: { [self] in try start() },
                teardown: { [self] in stop() }
            )
        ) { [self] benchmark in
            for _ in benchmark.scaledIterations {
                guard round() else { break }
            }
            // Outside the malloc-counted region: failures and the RSS high-water
            // mark (every 16th sample: reading /proc costs a few microseconds).
            benchmark.stopMeasurement()
            if let failure { benchmark.error(failure) }
            if samples % 16 == 0 { benchmark.measurement(peakResidentMemory, peakResidentKiB()) }
            samples += 1
        }
    }
}

/// Peak resident memory of this benchmark process: VmHWM from
/// /proc/self/status, read outside the malloc-counted region. A custom metric
/// because package-benchmark's own `peakMemoryResident` samples /proc from a
/// background thread that allocates as it goes (16 mallocs per iteration
/// here), which would land in the malloc count this benchmark exists to show.
/// Not getrusage's ru_maxrss: a process spawned with vfork semantics inherits
/// its parent's peak in it, and the parent is the benchmark driver.
let peakResidentMemory = BenchmarkMetric.custom("Peak resident memory (KiB)", polarity: .prefersSmaller, useScalingFactor: false)

private nonisolated(unsafe) let statusBuffer = UnsafeMutableRawBufferPointer.allocate(byteCount: 16 * 1024, alignment: 8)

/// VmHWM in KiB, or 0 if /proc is unreadable. Allocates nothing.
func peakResidentKiB() -> Int {
    let fd = open("/proc/self/status", O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return 0 }
    defer { close(fd) }
    var length = 0
    while length < statusBuffer.count {
        let n = read(fd, statusBuffer.baseAddress! + length, statusBuffer.count - length)
        if n <= 0 { break }
        length += n
    }
    let bytes = UnsafeRawBufferPointer(rebasing: statusBuffer[..<length])
    let key: StaticString = "VmHWM:"
    let keyBytes = UnsafeRawBufferPointer(start: key.utf8Start, count: key.utf8CodeUnitCount)
    var index = 0
    while index + keyBytes.count <= bytes.count {
        // Lines start at index 0 or after a newline.
        if (index == 0 || bytes[index - 1] == UInt8(ascii: "\n")),
           memcmp(bytes.baseAddress! + index, keyBytes.baseAddress!, keyBytes.count) == 0 {
            var cursor = index + keyBytes.count
            while cursor < bytes.count, bytes[cursor] == UInt8(ascii: " ") || bytes[cursor] == UInt8(ascii: "\t") { cursor += 1 }
            var kilobytes = 0
            while cursor < bytes.count, bytes[cursor] >= UInt8(ascii: "0"), bytes[cursor] <= UInt8(ascii: "9") {
                kilobytes = kilobytes * 10 + Int(bytes[cursor] - UInt8(ascii: "0"))
                cursor += 1
            }
            return kilobytes
        }
        index += 1
    }
    return 0
}

let benchmarks: @Sendable () -> Void = {
    // Short by default: `make bench` should finish in well under a minute.
    let maxDuration = Duration.seconds(3)
    // The course's pattern: ten 100-byte messages per round, echoed whole.
    for connections in [1, 10, 100] {
        EchoFlood(FloodShape(connections: connections, messageSize: 100, messages: 10, window: 1_000))
            .register("Flood 10x100B c=\(connections)", maxDuration: maxDuration, maxIterations: 100_000)
    }
    // The same at c=100 with a handler of one's own, and with the course's
    // packets framed (steady state: no allocation per frame).
    for kind in [EchoServerKind.ownHandler, .framed, .async] {
        EchoFlood(FloodShape(connections: 100, messageSize: 100, messages: 10, window: 1_000, server: kind))
            .register("Flood 10x100B c=100 \(kind.rawValue)", maxDuration: maxDuration, maxIterations: 100_000)
    }
    EchoFlood(FloodShape(connections: 1, messageSize: 100, messages: 10, window: 1_000, server: .async))
        .register("Flood 10x100B c=1 async", maxDuration: maxDuration, maxIterations: 100_000)
    // Streaming: 16 KiB messages, 64 KiB in flight per connection, 256 KiB per connection per round.
    EchoFlood(FloodShape(connections: 10, messageSize: 16 * 1024, messages: 16, window: 64 * 1024))
        .register("Stream 16x16KiB w=64KiB c=10", maxDuration: maxDuration, maxIterations: 100_000)
    // Backpressure: one connection keeps 8 MiB in flight (more than the
    // server socket's send buffer can grow to, tcp_wmem max 4 MiB) and reads
    // through a 16 KiB receive buffer, so the server's sends fall short and
    // the rest waits in its output buffer: the one path of the echo that
    // allocates (the buffer's storage, freed again each time it drains).
    EchoFlood(FloodShape(connections: 1, messageSize: 16 * 1024, messages: 512, window: 8 * 1024 * 1024, receiveBuffer: 16 * 1024))
        .register("Stream 512x16KiB w=8MiB c=1 rcvbuf=16KiB (backpressure)", maxDuration: maxDuration, maxIterations: 100_000)
}
