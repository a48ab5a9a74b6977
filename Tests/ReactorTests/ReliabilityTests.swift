import Reactor
import Synchronization
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// What peers on an open network do to a server, and what it must do back.
@Suite("Reliability")
struct ReliabilityTests {
    /// Half-close: N bytes then FIN; all N come back, then the server's FIN.
    @Test(arguments: EchoPath.allCases, [0, 1, 100, 65_536, 1 << 20, 16 << 20])
    func halfCloseEchoesEveryByteThenEOF(path: EchoPath, count: Int) throws {
        try withServer(echo: path) { server in
            let client = try BlockingClient(port: server.port)
            let payload = patternBytes(count: count, seed: UInt64(count) + 1)
            let sender = try client.sendInBackground(payload, thenShutdown: true)
            let echoed = try client.receiveUntilEOF(limit: count)
            sender.join()
            #expect(echoed.count == count)
            #expect(echoed == payload)
        }
    }

    /// Every byte value, every split point of a message, and zero-length
    /// sends between the pieces: the echo is always exactly the message.
    @Test(arguments: EchoPath.allCases)
    func everyByteValueAndSplitPointEchoesExactly(path: EchoPath) throws {
        try withServer(echo: path) { server in
            let client = try BlockingClient(port: server.port)
            let message = (0...255).map(UInt8.init) + patternBytes(count: 256, seed: 77)
            for split in 0...message.count {
                try client.send(Array(message[..<split]))
                try client.send([])
                try client.send(Array(message[split...]))
                let echoed = try client.receive(exactly: message.count)
                #expect(echoed == message, "split at \(split)")
            }
        }
    }

    /// `maxConnections`: the ones beyond it are accepted and closed at once
    /// (FIN, no echo) and counted; the admitted ones are served throughout.
    @Test func connectionsBeyondTheLimitAreClosedAtOnceAndCounted() throws {
        try withServer(configure: { $0.maxConnections = 5 }) { server in
            let admitted = try (0..<5).map { _ in try BlockingClient(port: server.port) }
            for (index, client) in admitted.enumerated() {
                try client.send([UInt8(index)])
                #expect(try client.receive(exactly: 1) == [UInt8(index)])
            }
            for _ in 0..<3 {
                let refused = try BlockingClient(port: server.port)
                #expect(try refused.receiveUntilEOF(limit: 0).isEmpty)
            }
            #expect(server.statistics.refused == 3)
            #expect(server.connectionCount == 5)
            for client in admitted {
                try client.send([9])
                #expect(try client.receive(exactly: 1) == [9])
            }
        }
    }

    /// A connection silent for the idle timeout is closed (a slowloris that
    /// sends a byte now and then is, once the gaps exceed the timeout); one
    /// that keeps talking more often than that is not.
    @Test func silentConnectionsTimeOutAndTalkingOnesStay() throws {
        let probe = ObservingEcho()
        try withServer(configure: { $0.idleTimeout = .milliseconds(300) }, handler: { _ in probe }) { server in
            let silent = try BlockingClient(port: server.port)
            let talking = try BlockingClient(port: server.port)
            try silent.send([1])
            #expect(try silent.receive(exactly: 1) == [1])
            // Four timeouts long, one byte every 50 ms: pacing, not synchronisation.
            for round in 0..<24 {
                try talking.send([UInt8(round)])
                #expect(try talking.receive(exactly: 1) == [UInt8(round)])
                usleep(50_000)
            }
            #expect(try silent.receiveUntilEOF(limit: 0).isEmpty)
            #expect(eventually { probe.reasons.count == 1 }) // told after the fd is closed
            #expect(probe.reasons.values == [.idleTimeout])
            #expect(server.connectionCount == 1)
        }
    }

    /// 4,000 connects as fast as one thread can make them, while a client
    /// already connected keeps pinging: all are accepted and served, and
    /// the pings go on during the storm (accepts per wakeup are capped). The
    /// 2 s bound is for starvation, far above any normal round trip.
    @Test func connectionStormIsAcceptedWhileExistingClientsAreServed() throws {
        _ = FileDescriptorLimit.raiseToMaximum() // both ends of 4,000 connections live in this process
        try withServer { server in
            let storming = Atomic<Bool>(true)
            let pings = Locked((rounds: 0, wrong: 0, longest: UInt64(0)))
            let port = server.port
            let pinger = try LoopThread(name: "pinger") {
                guard let client = try? BlockingClient(port: port) else { return }
                var round = 0
                while storming.load(ordering: .relaxed), round < 1_000_000 {
                    let message = [UInt8(truncatingIfNeeded: round), 1, 2, 3]
                    let start = monotonicNanoseconds()
                    let echoed = (try? client.send(message)).flatMap { try? client.receive(exactly: 4) }
                    let elapsed = monotonicNanoseconds() - start
                    pings.withLock {
                        $0.rounds += 1
                        if echoed != message { $0.wrong += 1 }
                        $0.longest = max($0.longest, elapsed)
                    }
                    round += 1
                }
            }
            #expect(eventually { pings.withLock { $0.rounds } > 0 })
            let roundsBefore = pings.withLock { $0.rounds }
            let storm = try (0..<4_000).map { _ in try BlockingClient(port: server.port) }
            for (index, client) in storm.enumerated() {
                try client.send([UInt8(truncatingIfNeeded: index)])
            }
            for (index, client) in storm.enumerated() {
                #expect(try client.receive(exactly: 1) == [UInt8(truncatingIfNeeded: index)])
            }
            storming.store(false, ordering: .relaxed)
            pinger.join()
            let result = pings.withLock { $0 }
            #expect(server.statistics.opened == 4_001)
            #expect(result.rounds > roundsBefore)
            #expect(result.wrong == 0)
            #expect(result.longest < 2_000_000_000, "longest ping \(result.longest / 1_000) us")
        }
    }

    /// Shutdown while a peer is paused with input still unread: everything
    /// the server sent arrives, then FIN. (Closing a socket with unread input
    /// makes the kernel send RST, destroying output in flight: the server
    /// sends FIN and drops the input until the peer's FIN instead.)
    @Test func shutdownWithUnreadInputStillDeliversEverySentByte() throws {
        let probe = ObservingEcho()
        let backpressure = Backpressure(highWaterMark: 64 * 1024, lowWaterMark: 16 * 1024)
        try withServer(loops: 1, configure: { $0.backpressure = backpressure }, handler: { _ in probe }) { server in
            let client = try BlockingClient(port: server.port, receiveBufferSize: 4_096)
            let payload = patternBytes(count: 32 << 20, seed: 21)
            var sent = 0
            var stalledSends = 0
            // Paused, and the pipe full up to the client's send buffer: input is left unread.
            #expect(eventually {
                let now = client.sendWithoutBlocking(payload[sent...])
                sent += now
                stalledSends = now == 0 ? stalledSends + 1 : 0
                return probe.pausedCount > 0 && stalledSends >= 10
            })
            server.shutdown(gracePeriod: .seconds(10))
            let echoed = try client.receiveUntilEOF(limit: sent)
            #expect(echoed.count > 0)
            #expect(echoed == Array(payload.prefix(echoed.count)))
            #expect(UInt64(echoed.count) == server.statistics.bytesSent)
            client.close()
            server.wait()
        }
    }

    /// A handle kept after its connection closed never reaches the connection
    /// that got the same fd number next: the id carries a generation, and
    /// the same id is the epoll token, so events are filtered the same way.
    @Test func staleHandleNeverReachesTheConnectionReusingItsFd() throws {
        let probe = ObservingEcho()
        try withServer(loops: 1, handler: { _ in probe }) { server in
            // Connect, echo once, close; the next connection usually gets the freed fd number.
            func connectAndEcho() throws -> (BlockingClient, Connection) {
                let client = try BlockingClient(port: server.port)
                try client.send([1])
                _ = try client.receive(exactly: 1)
                return (client, probe.opened.values.last!)
            }
            var closed = 0
            var reused: (old: Connection, new: Connection, client: BlockingClient)?
            for _ in 0..<20 where reused == nil {
                let (first, old) = try connectAndEcho()
                first.close()
                closed += 1
                #expect(eventually { probe.reasons.count == closed })
                let (second, new) = try connectAndEcho()
                if new.fd == old.fd {
                    reused = (old, new, second)
                } else {
                    second.close()
                    closed += 1
                    #expect(eventually { probe.reasons.count == closed })
                }
            }
            let (old, new, client) = try #require(reused, "the kernel never reused an fd number")
            #expect(old != new)
            let staleState = Locked((closed: false, pending: -1))
            let done = Atomic<Bool>(false)
            old.eventLoop.execute {
                old.write([0xEE, 0xEE])
                old.close()
                staleState.withLock { $0 = (old.isClosed, old.pendingOutputBytes) }
                done.store(true, ordering: .relaxed)
            }
            #expect(eventually { done.load(ordering: .relaxed) })
            #expect(staleState.withLock { $0.closed && $0.pending == 0 })
            try client.send([3, 4])
            #expect(try client.receive(exactly: 2) == [3, 4])
            #expect(server.connectionCount == 1)
        }
    }
}
