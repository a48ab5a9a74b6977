// Micro-benchmarks of the pieces on the echo hot path, through the public
// Reactor API only: the ByteBuffer that holds a connection's unconsumed input
// (append/consume), and an EventLoop
// dispatching ready sockets (epoll_wait → connection → handler → send).
//
// Each sample runs `benchmark.scaledIterations` operations (a million of the
// 100-byte buffer operations, a thousand of the others, one 64-socket batch
// for the dispatch benchmark); the rows marked * in the results are per
// operation.

import Benchmark
import Reactor

#if canImport(Glibc)
import Glibc
#endif

// MARK: ByteBuffer

// Written once at first use, read-only after: safe to share.
private nonisolated(unsafe) let chunk100: UnsafeMutableRawBufferPointer = {
    let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: 100, alignment: 16)
    bytes.initializeMemory(as: UInt8.self, repeating: 0x5A)
    return bytes
}()

private nonisolated(unsafe) let chunk16K: UnsafeMutableRawBufferPointer = {
    let bytes = UnsafeMutableRawBufferPointer.allocate(byteCount: 16 * 1024, alignment: 64)
    bytes.initializeMemory(as: UInt8.self, repeating: 0xA5)
    return bytes
}()

private func registerByteBufferBenchmarks(_ configuration: Benchmark.Configuration) {
    // Steady state of a connection with a partial frame pending: the buffer never
    // empties, so it keeps its storage and only slides unread bytes down when it must.
    Benchmark("ByteBuffer append+consume 100B (stays non-empty)", configuration: configuration) { benchmark in
        var buffer = ByteBuffer()
        buffer.append(UnsafeRawBufferPointer(rebasing: chunk100[..<1]))
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            buffer.append(UnsafeRawBufferPointer(chunk100))
            buffer.consume(100)
        }
        benchmark.stopMeasurement()
        blackHole(buffer.count)
    }

    // The backpressure path as the Reactor runs it: a send falls short, the rest
    // is queued into an empty buffer, and the next flush drains it, which frees
    // the storage. One malloc and one free per episode, by design (idle
    // connections hold no buffer memory).
    Benchmark("ByteBuffer append+drain 100B (empty each time)", configuration: configuration) { benchmark in
        var buffer = ByteBuffer()
        for _ in benchmark.scaledIterations {
            buffer.append(UnsafeRawBufferPointer(chunk100))
            buffer.consume(100)
        }
        blackHole(buffer.count)
    }

    // Streaming with 48 KiB queued: each 16 KiB append slides the 48 KiB of
    // unread bytes down to the front of the 64 KiB storage (a memmove per append).
    var streaming = configuration
    streaming.scalingFactor = .kilo // ~1 µs per operation
    Benchmark("ByteBuffer append+consume 16KiB (48KiB queued)", configuration: streaming) { benchmark in
        var buffer = ByteBuffer()
        for _ in 0..<3 { buffer.append(UnsafeRawBufferPointer(chunk16K)) }
        benchmark.startMeasurement()
        for _ in benchmark.scaledIterations {
            buffer.append(UnsafeRawBufferPointer(chunk16K))
            buffer.consume(16 * 1024)
        }
        benchmark.stopMeasurement()
        blackHole(buffer.count)
    }
}

// MARK: EventLoop dispatch

/// A blocking pipe: one thread writes a byte, another waits for it (at most 2 s).
struct Signal {
    let readFD: Int32
    let writeFD: Int32

    init() throws {
        var fds: [Int32] = [-1, -1]
        guard pipe(&fds) == 0 else { throw BenchError("pipe") }
        readFD = fds[0]
        writeFD = fds[1]
    }

    func close() {
        Glibc.close(readFD)
        Glibc.close(writeFD)
    }

    @inline(__always)
    func post() {
        var byte: UInt8 = 1
        _ = write(writeFD, &byte, 1)
    }

    /// Waits for one posted byte; false after 2 s without one.
    @inline(__always)
    func wait() -> Bool {
        var waiter = pollfd(fd: readFD, events: Int16(POLLIN), revents: 0)
        guard poll(&waiter, 1, 2_000) == 1 else { return false }
        var byte: UInt8 = 0
        return read(readFD, &byte, 1) == 1
    }
}

/// Holds its loop inside a handler call until the benchmark thread lets it go,
/// so that the sockets made readable meanwhile are all reported by the loop's
/// next epoll_wait. Blocks in poll (bounded), never spins: on two cores shared
/// with the benchmark thread a spinning loop would steal its CPU.
final class GateHandler: ConnectionHandler, @unchecked Sendable {
    // @unchecked Sendable: immutable after init; the pipes are thread-safe.
    let entered: Signal
    let release: Signal

    init() throws {
        entered = try Signal()
        release = try Signal()
    }

    func connection(_ connection: Connection, received bytes: UnsafeRawBufferPointer) -> Int {
        entered.post()
        _ = release.wait()
        return bytes.count
    }

    func close() {
        entered.close()
        release.close()
    }
}

/// Completion of `execute`d tasks: a global, so the task literal captures
/// nothing and needs no closure context.
nonisolated(unsafe) private var taskDone: Signal?

/// One EventLoop on its own thread with `pairs` socketpairs: one end of each
/// adopted by the loop with an EchoHandler, the other end a blocking socket
/// the benchmark thread writes to and reads from; plus, with a gate, one more
/// pair whose loop end is served by a `GateHandler`.
final class LoopFixture: @unchecked Sendable {
    // @unchecked Sendable: the mutable state is touched only by the benchmark thread.
    let pairs: Int
    let gated: Bool
    private var loop: EventLoop?
    private var thread: LoopThread?
    private var clientFDs: [Int32] = []
    private var gate: GateHandler?
    private var gateFD: Int32 = -1
    private let byte = UnsafeMutableRawPointer.allocate(byteCount: 1, alignment: 1)

    init(pairs: Int, gated: Bool) {
        self.pairs = pairs
        self.gated = gated
    }

    deinit {
        stop()
        byte.deallocate()
    }

    /// A socketpair: the non-blocking end for the loop, the blocking end for us.
    private func socketPair() throws -> (loopEnd: Int32, ourEnd: Int32) {
        var fds: [Int32] = [-1, -1]
        guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &fds) == 0 else {
            throw BenchError("socketpair")
        }
        _ = fcntl(fds[0], F_SETFL, fcntl(fds[0], F_GETFL) | O_NONBLOCK)
        return (fds[0], fds[1])
    }

    func start() throws {
        stop()
        let loop = try EventLoop()
        thread = try LoopThread(name: "bench-loop") { loop.run() }
        self.loop = loop
        let done = try Signal()
        taskDone = done
        let echo = EchoHandler()
        for _ in 0..<pairs {
            let (loopEnd, ourEnd) = try socketPair()
            clientFDs.append(ourEnd)
            loop.execute { loop.adopt(loopEnd, handler: echo) }
        }
        if gated {
            let gate = try GateHandler()
            let (loopEnd, ourEnd) = try socketPair()
            self.gate = gate
            gateFD = ourEnd
            loop.execute { loop.adopt(loopEnd, handler: gate) }
        }
        // Tasks run in order: once this one has run, every socket is adopted.
        loop.execute { done.post() }
        guard done.wait() else { throw BenchError("loop did not adopt its sockets in 2 s", errno: 0) }
        for _ in 0..<100 { // warm up
            guard dispatchBatch() else { throw BenchError("warm-up echo failed", errno: 0) }
        }
    }

    func stop() {
        if let loop, let thread {
            loop.stop()
            thread.join()
        }
        loop = nil
        thread = nil
        for fd in clientFDs { close(fd) }
        clientFDs.removeAll()
        if gateFD >= 0 { close(gateFD) }
        gateFD = -1
        gate?.close()
        gate = nil
        taskDone?.close()
        taskDone = nil
    }

    /// One byte to every echo socket and back. Gated: the loop is held in the
    /// gate handler while the bytes are sent, so one epoll_wait reports all.
    @inline(never)
    func dispatchBatch() -> Bool {
        if let gate {
            guard send(gateFD, byte, 1, Int32(MSG_NOSIGNAL)) == 1, gate.entered.wait() else { return false }
        }
        for fd in clientFDs {
            guard send(fd, byte, 1, Int32(MSG_NOSIGNAL)) == 1 else { return false }
        }
        gate?.release.post()
        for fd in clientFDs {
            guard recv(fd, byte, 1, 0) == 1 else { return false }
        }
        return true
    }

    /// A task handed to the loop from this thread, and its completion seen here.
    @inline(never)
    func executeRoundTrip() -> Bool {
        guard let loop, let done = taskDone else { return false }
        loop.execute { taskDone?.post() }
        return done.wait()
    }
}

private func registerEventLoopBenchmarks(_ configuration: Benchmark.Configuration) {
    let batch = LoopFixture(pairs: 64, gated: true)
    var batchConfiguration = configuration
    batchConfiguration.scalingFactor = .one // ~0.3 ms per batch already
    batchConfiguration.setup = { try batch.start() }
    batchConfiguration.teardown = { batch.stop() }
    // Per iteration: 64 sockets become readable while the loop is held, one
    // epoll_wait reports them, and each is dispatched to its connection, read
    // and echoed (recv + send); the benchmark thread reads the 64 echoes.
    Benchmark("EventLoop dispatch 64 ready sockets (1B echo each)", configuration: batchConfiguration) { benchmark in
        for _ in benchmark.scaledIterations {
            guard batch.dispatchBatch() else { return benchmark.error("socketpair echo failed") }
        }
    }

    let single = LoopFixture(pairs: 1, gated: false)
    var singleConfiguration = configuration
    singleConfiguration.setup = { try single.start() }
    singleConfiguration.teardown = { single.stop() }
    // Per iteration: one 1-byte echo through the loop: wake-up, dispatch, recv,
    // send, and the benchmark thread's wake-up on the reply.
    Benchmark("EventLoop ping-pong 1B (socketpair)", configuration: singleConfiguration) { benchmark in
        for _ in benchmark.scaledIterations {
            guard single.dispatchBatch() else { return benchmark.error("socketpair echo failed") }
        }
    }
    // Per iteration: `execute` from another thread (task queue + eventfd
    // wake-up) of a task that captures nothing, and its completion seen back here.
    Benchmark("EventLoop execute round trip", configuration: singleConfiguration) { benchmark in
        for _ in benchmark.scaledIterations {
            guard single.executeRoundTrip() else { return benchmark.error("task did not run in 2 s") }
        }
    }
}

struct BenchError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String, errno code: Int32 = errno) {
        self.description = code == 0 ? description : "\(description): \(String(cString: strerror(code)))"
    }
}

let benchmarks: @Sendable () -> Void = {
    let metrics: [BenchmarkMetric] = [.throughput, .wallClock, .mallocCountTotal]
    registerByteBufferBenchmarks(.init(metrics: metrics, scalingFactor: .mega, maxDuration: .seconds(2), maxIterations: 1_000))
    registerEventLoopBenchmarks(.init(metrics: metrics, scalingFactor: .kilo, maxDuration: .seconds(2), maxIterations: 10_000))
}
