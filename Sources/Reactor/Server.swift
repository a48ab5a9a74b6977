import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A TCP server: one listener and N event loops, each on its own thread, each
/// connection owned by one loop for its whole life.
///
/// Distribution: the listener lives on loop 0, which accepts and hands each
/// new socket to the loops in turn (muduo's design). Unlike one SO_REUSEPORT
/// listener per loop, it spreads even a handful of connections evenly, keeps
/// the connection limit and EMFILE handling in one place, and a second server
/// on the same port fails with EADDRINUSE instead of silently sharing it.
/// The hand-off costs one cross-thread task per accepted connection, off the
/// echo path.
public final class Server: Sendable {
    /// Where and how a server listens and serves. Every field has a default:
    /// 127.0.0.1:7777, one loop per core.
    public struct Configuration: Sendable {
        /// The address to listen on: numeric IPv4 or IPv6, or a name to resolve.
        /// Loopback by default, so nothing is exposed unless asked (`0.0.0.0`, `::`).
        public var host = "127.0.0.1"
        /// The TCP port, 7777 by default; 0 lets the kernel choose one (read it from
        /// `Server.localAddress`).
        public var port: UInt16 = 7777
        /// Event loops (threads); default one per core.
        public var loops = Server.coreCount
        /// The `listen` backlog: connections whose handshake the kernel has completed
        /// and that wait to be accepted (capped by `net.core.somaxconn`).
        public var backlog: Int32 = 1024
        /// Connections beyond this are accepted and closed at once (counted as refused).
        public var maxConnections = 10_000
        /// Close connections that have received nothing for this long; nil: never.
        public var idleTimeout: Duration?
        /// The output limits of every connection.
        public var backpressure = Backpressure()
        /// Connections accepted per wake-up at most.
        public var acceptBatch = 64
        /// Kernel send and receive buffer per connection (SO_SNDBUF and
        /// SO_RCVBUF; the kernel doubles it for bookkeeping); nil: the
        /// kernel's autotuning, which on loopback grows to megabytes each.
        public var socketBufferSize: Int?
        /// A socket already listening to serve instead of binding one (then
        /// `host`, `port`, `backlog` and `socketBufferSize` are not used): one
        /// from systemd (`SocketActivation.passedSockets`), or the one a
        /// process being upgraded hands its successor. The server owns it.
        public var listeningSocket: Int32?
        /// Behind a load balancer: every connection starts with a PROXY
        /// protocol header (v1 or v2), read before the handler hears of it;
        /// nil (the default): none is expected.
        public var proxyProtocol: ProxyProtocol?

        /// The defaults; set the fields to change them.
        public init() {}
    }

    /// What `Configuration.proxyProtocol` asks of each accepted connection.
    public struct ProxyProtocol: Sendable {
        /// A connection whose header is not all there this long after the
        /// accept is closed and counted, like a malformed one.
        public var headerTimeout = Duration.seconds(2)

        /// The defaults; set the fields to change them.
        public init() {}
    }

    /// The configuration the server was made with.
    public let configuration: Configuration
    /// Where the server listens; with port 0, the port the kernel chose.
    public let localAddress: SocketAddress
    /// The listening socket's fd: what a successor process inherits in a
    /// zero-downtime upgrade. The server closes it; nobody else should.
    public var listeningSocket: Int32 { listenFD }
    /// The event loops, one thread each. Loop 0 also runs the listener.
    public let loops: [EventLoop]
    private let listenFD: Int32
    private let openConnections = Atomic<Int>(0)
    private let started = Atomic<Bool>(false)
    private let threads = Locked<[LoopThread]>([])
    /// Makes each connection's own handler; nil when every connection uses
    /// the loops' shared handler.
    private let makeHandler: (@Sendable (EventLoop) -> any ConnectionHandler)?
    // Touched only on loop 0, by the listener's admit callback.
    private nonisolated(unsafe) var nextLoop = 0
    private let errors: @Sendable (any Error) -> Void

    /// Processors online (`sysconf(_SC_NPROCESSORS_ONLN)`), at least 1: the default
    /// number of loops.
    public static var coreCount: Int { max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN)))) }

    /// Binds and listens now, so a bad address or a port in use fails here
    /// (`bind 127.0.0.1:7777: Address already in use`); serving starts with
    /// `start()` or `run()`. `makeHandler` is called on a connection's loop for
    /// each new connection. `errors` hears of accept failures the server
    /// survives (e.g. EMFILE).
    public convenience init(
        configuration: Configuration,
        errors: @escaping @Sendable (any Error) -> Void = { _ in },
        makeHandler: @escaping @Sendable (EventLoop) -> any ConnectionHandler
    ) throws {
        try self.init(configuration: configuration, errors: errors, shared: { _ in nil }, makeHandler: makeHandler)
    }

    /// Like `init(configuration:errors:makeHandler:)`, with one stateless
    /// handler serving every connection: the cheapest way to run, since the
    /// loops call a shared handler without reference counting it.
    public convenience init(
        configuration: Configuration,
        errors: @escaping @Sendable (any Error) -> Void = { _ in },
        handler: any ConnectionHandler & Sendable
    ) throws {
        try self.init(configuration: configuration, errors: errors, shared: { _ in handler }, makeHandler: nil)
    }

    /// Like `init(configuration:errors:handler:)`, with one handler per
    /// loop: `loopHandlers[index]`, one for each of `configuration.loops`,
    /// serves every connection of loop `index` and is called on that loop's
    /// thread only. What a protocol does that keeps its connections' state
    /// in a table per loop rather than in an object per connection.
    public convenience init(
        configuration: Configuration,
        errors: @escaping @Sendable (any Error) -> Void = { _ in },
        loopHandlers: [any ConnectionHandler]
    ) throws {
        precondition(loopHandlers.count == configuration.loops, "one handler per loop")
        try self.init(configuration: configuration, errors: errors, shared: { loopHandlers[$0] }, makeHandler: nil)
    }

    private init(
        configuration: Configuration,
        errors: @escaping @Sendable (any Error) -> Void,
        shared: (Int) -> (any ConnectionHandler)?,
        makeHandler: (@Sendable (EventLoop) -> any ConnectionHandler)?
    ) throws {
        precondition(configuration.loops >= 1 && configuration.maxConnections >= 1)
        self.configuration = configuration
        self.makeHandler = makeHandler
        self.errors = errors
        let address = try SocketAddress(host: configuration.host, port: configuration.port)
        let fd = try configuration.listeningSocket.map { fd throws(SystemError) in try Socket.adoptListening(fd) }
            ?? Socket.listen(on: address, backlog: configuration.backlog, bufferSize: configuration.socketBufferSize)
        var loops: [EventLoop] = []
        do {
            for index in 0..<configuration.loops {
                loops.append(try EventLoop(backpressure: configuration.backpressure, sharedHandler: shared(index)))
            }
        } catch {
            for loop in loops { loop.releaseIfNeverRun() }
            Glibc.close(fd)
            throw error
        }
        self.loops = loops
        localAddress = SocketAddress(of: fd, peer: false) ?? address
        listenFD = fd
    }

    /// A server never started still holds its listening socket and its loops' fds.
    deinit {
        guard !started.load(ordering: .relaxed) else { return }
        Glibc.close(listenFD)
        for loop in loops { loop.releaseIfNeverRun() }
    }

    /// Starts every loop on its own thread.
    public func start() throws {
        try start(onCurrentThread: false)
    }

    /// Serves with loop 0 on the calling thread (the others on threads of
    /// their own) until the server has shut down and every loop stopped.
    /// With one loop the process stays single-threaded, which spares glibc's
    /// cancellation bookkeeping on every recv and send.
    public func run() throws {
        try start(onCurrentThread: true)
        loops[0].run()
        wait()
    }

    private func start(onCurrentThread: Bool) throws {
        precondition(!started.exchange(true, ordering: .relaxed), "Server started twice")
        loops[0].execute { [self] in
            let listener = Listener(
                fd: listenFD, loop: loops[0], acceptBatch: configuration.acceptBatch,
                admit: { [self] fd in admit(fd) }, reportError: errors)
            do throws(SystemError) {
                try loops[0].register(listener)
            } catch {
                errors(error)
            }
        }
        for (index, loop) in loops.enumerated() {
            loop.execute { [self] in
                loop.connectionClosedHook = { [self] in openConnections.subtract(1, ordering: .relaxed) }
                if let timeout = configuration.idleTimeout {
                    loop.idleTimeouts = IdleTimeouts(timeout: timeout, loop: loop)
                }
            }
            if index == 0 && onCurrentThread { continue }
            let thread = try LoopThread(name: "reactor-\(index)") { loop.run() }
            threads.withLock { $0.append(thread) }
        }
    }

    /// Loop 0: admit a freshly accepted socket or refuse it over the limit.
    private func admit(_ fd: Int32) {
        let loop0 = loops[0]
        if openConnections.load(ordering: .relaxed) >= configuration.maxConnections {
            // Counted before the close, so a peer that has seen its FIN sees the count too.
            increment(loop0.stats.refused)
            close(fd)
            return
        }
        openConnections.add(1, ordering: .relaxed)
        let target = loops[nextLoop]
        nextLoop = (nextLoop + 1) % loops.count
        if target === loop0 {
            adopt(fd, on: target)
        } else {
            target.execute { [self] in adopt(fd, on: target) }
        }
    }

    private func adopt(_ fd: Int32, on loop: EventLoop) {
        guard let proxyProtocol = configuration.proxyProtocol else {
            // A connection that fails to register is closed at once, and the
            // closed hook gives its place back.
            loop.adopt(fd, handler: makeHandler?(loop))
            return
        }
        ProxyHeaderReader(fd: fd, loop: loop, timeout: proxyProtocol.headerTimeout) { [self] outcome in
            switch outcome {
            case .header(let header):
                loop.adopt(fd, handler: makeHandler?(loop), proxyHeader: header)
            case .rejected(let reason, let peer):
                openConnections.subtract(1, ordering: .relaxed)
                increment(loop.stats.proxyHeadersRejected)
                errors(ProxyHeaderRejection(peer: peer, reason: reason))
            case .closed:
                openConnections.subtract(1, ordering: .relaxed)
            }
        }
    }

    /// Totals over all loops. Any thread.
    public var statistics: LoopStatistics.Snapshot {
        loops.reduce(LoopStatistics.Snapshot()) { $0 + $1.stats.snapshot }
    }

    /// Connections open right now. Any thread.
    public var connectionCount: Int { openConnections.load(ordering: .relaxed) }

    /// Stops accepting, lets every connection answer what it already read and
    /// flush its output, then closes it; whatever is still open after
    /// `gracePeriod` is closed regardless. Any thread; `wait()` returns after.
    public func shutdown(gracePeriod: Duration = .seconds(5)) {
        afterTheAcceptor { loop in
            loop.closeGracefully()
            loop.schedule(after: gracePeriod) { loop.stop() }
        }
    }

    /// Stops accepting and lets every connection go on until its peer ends
    /// it; whatever is still open after `gracePeriod` is closed. What a
    /// process does once its successor serves the listening socket (the
    /// socket stays open there, so no connection waiting in its backlog is
    /// lost). Any thread; `wait()` returns after.
    public func drain(gracePeriod: Duration) {
        afterTheAcceptor { loop in
            loop.stopAccepting()
            loop.schedule(after: gracePeriod) { loop.stop() }
        }
    }

    /// Runs `body` on loop 0 (whose listener it closes), and from there on
    /// every other loop: each then runs it after every connection loop 0
    /// handed it before, never stopping with a hand-off still in its queue.
    private func afterTheAcceptor(_ body: @escaping @Sendable (EventLoop) -> Void) {
        let acceptor = loops[0]
        acceptor.execute { [loops] in
            body(acceptor)
            for loop in loops.dropFirst() { loop.execute { body(loop) } }
        }
    }

    /// Blocks until every loop has stopped (after `shutdown`).
    public func wait() {
        let started = threads.withLock { threads in
            defer { threads.removeAll() }
            return threads
        }
        for thread in started { thread.join() }
    }
}
