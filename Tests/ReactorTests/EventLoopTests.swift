import Reactor
import Synchronization
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite("Event loop")
struct EventLoopTests {
    /// Starts a loop on its own thread and stops it after `body`.
    private func withLoop(_ body: (EventLoop) throws -> Void) throws {
        let loop = try EventLoop()
        let thread = try LoopThread(name: "test-loop") { loop.run() }
        defer {
            loop.stop()
            thread.join()
        }
        try body(loop)
    }

    @Test func executeFromAnotherThreadRunsOnTheLoop() throws {
        try withLoop { loop in
            let ranOnLoop = Recorded<Bool>()
            for _ in 0..<100 { loop.execute { ranOnLoop.append(loop.inEventLoop) } }
            #expect(eventually { ranOnLoop.count == 100 })
            #expect(ranOnLoop.values.allSatisfy { $0 })
            #expect(!loop.inEventLoop)
        }
    }

    @Test func timersFireInDeadlineOrderAndCancelledOnesNever() throws {
        try withLoop { loop in
            let fired = Recorded<Int>()
            let start = monotonicNanoseconds()
            loop.schedule(after: .milliseconds(60)) { fired.append(3) }
            loop.schedule(after: .milliseconds(20)) { fired.append(1) }
            let cancelled = loop.schedule(after: .milliseconds(40)) { fired.append(99) }
            loop.schedule(after: .milliseconds(40)) { fired.append(2) }
            cancelled.cancel()
            #expect(eventually { fired.count == 3 })
            #expect(monotonicNanoseconds() - start >= 60_000_000)
            #expect(fired.values == [1, 2, 3])
        }
    }

    /// Delays beyond what 64-bit nanoseconds hold saturate to "never": they
    /// neither crash nor wrap around to fire soon.
    @Test func timersFarOffNeverFireSoon() throws {
        try withLoop { loop in
            let fired = Recorded<String>()
            loop.schedule(after: .seconds(Int64.max)) { fired.append("never") }
            loop.schedule(after: .seconds(18_446_744_074)) { fired.append("585 years") } // wrapped to 0.29 s once
            loop.schedule(after: .milliseconds(500)) { fired.append("soon") }
            #expect(eventually { fired.count >= 1 })
            #expect(fired.values == ["soon"])
        }
    }

    /// The loop computes epoll_wait's timeout from the clock read at its last
    /// wake-up. After a long idle stretch that reading is old, yet a timer
    /// scheduled then must fire on time: the scheduling wakes the loop, which
    /// reads the clock afresh. Stale by the idle second, it would fire a
    /// second late.
    @Test func timerScheduledAfterAnIdleStretchFiresOnTime() throws {
        try withLoop { loop in
            let started = Recorded<Bool>()
            loop.execute { started.append(true) } // the loop has run and is now idle, timeout -1
            #expect(eventually { started.count == 1 })
            usleep(1_000_000) // the idle stretch is the scenario, not a synchronisation
            let firedAfter = Recorded<UInt64>()
            let scheduledAt = monotonicNanoseconds()
            loop.schedule(after: .milliseconds(20)) { firedAfter.append(monotonicNanoseconds() - scheduledAt) }
            #expect(eventually { firedAfter.count == 1 })
            let delay = try #require(firedAfter.values.first)
            #expect(delay >= 20_000_000, "never early")
            #expect(delay < 700_000_000, "late by \(delay / 1_000_000) ms")
        }
    }

    /// `stop()` ends `run()`, which closes the loop's connections on its
    /// way out: each handler hears `.shutdown`, and the peer sees FIN.
    @Test func stopEndsRunAndReleasesConnections() throws {
        try withServer(loops: 1) { server in
            let probe = ObservingEcho()
            let loop = try EventLoop()
            let thread = try LoopThread(name: "test-loop") { loop.run() }
            let address = try SocketAddress(host: "127.0.0.1", port: server.port)
            for _ in 0..<3 { loop.execute { loop.connect(to: address, handler: probe) } }
            #expect(eventually { probe.opened.count == 3 && server.connectionCount == 3 })
            loop.stop()
            thread.join()
            #expect(probe.reasons.values == [.shutdown, .shutdown, .shutdown])
            #expect(loop.connectionCount == 0)
            #expect(eventually { server.connectionCount == 0 }, "the server saw every FIN")
        }
    }

    @Test func connectToClosedPortReportsConnectionRefused() throws {
        let port = try unusedPort()
        let reasons = ObservingEcho()
        try withLoop { loop in
            loop.execute {
                loop.connect(to: try! SocketAddress(host: "127.0.0.1", port: port), handler: reasons)
            }
            #expect(eventually { reasons.reasons.count == 1 })
            #expect(reasons.reasons.values.first?.description == "connect 127.0.0.1:\(port): Connection refused")
        }
    }
}
