import Reactor
import Synchronization
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite("Backpressure")
struct BackpressureTests {
    /// 16 MiB to a client that reads slowly: the server stops reading while
    /// its queued output is above the high-water mark, so what it holds stays
    /// bounded, and every byte still arrives in order.
    @Test func slowReaderBoundsQueuedOutput() throws {
        let backpressure = Backpressure(highWaterMark: 128 * 1024, lowWaterMark: 32 * 1024)
        let probe = ObservingEcho()
        try withServer(loops: 1, configure: { $0.backpressure = backpressure }, handler: { _ in probe }) { server in
            let client = try BlockingClient(port: server.port)
            let payload = patternBytes(count: 16 << 20, seed: 11)
            let sender = try client.sendInBackground(payload, piece: 65_536)
            // Read nothing until the server has paused reading: the peer is "stalled".
            #expect(eventually { probe.pausedCount > 0 })
            var echoed: [UInt8] = []
            echoed.reserveCapacity(payload.count)
            while echoed.count < payload.count {
                let chunk = try client.receiveSome(maximum: 16 * 1024)
                if chunk.isEmpty { break }
                echoed += chunk
            }
            sender.join()
            #expect(echoed == payload)
            // At most one read's worth beyond the mark: reading stops right after it is crossed.
            #expect(probe.maximumPending <= backpressure.highWaterMark + EventLoop.readBufferSize)
            #expect(probe.maximumPending > 0)
        }
    }

    /// A peer that sends and never reads is paused, not served at the expense
    /// of others: on the same loop, ten other clients keep getting their
    /// echoes meanwhile; when it reads at last, every byte arrives in order.
    @Test func stalledReaderDoesNotHoldUpOthersOnItsLoop() throws {
        let probe = ObservingEcho()
        let backpressure = Backpressure(highWaterMark: 64 * 1024, lowWaterMark: 16 * 1024)
        try withServer(loops: 1, configure: { $0.backpressure = backpressure }, handler: { _ in probe }) { server in
            let stalled = try BlockingClient(port: server.port)
            let payload = patternBytes(count: 8 << 20, seed: 5)
            let sender = try stalled.sendInBackground(payload, piece: 65_536)
            #expect(eventually { probe.pausedCount > 0 })
            let others = try (0..<10).map { _ in try BlockingClient(port: server.port) }
            for round in 0..<50 {
                for (index, client) in others.enumerated() {
                    let message = patternBytes(count: 1_000, seed: UInt64(round * 10 + index) + 1)
                    try client.send(message)
                    #expect(try client.receive(exactly: message.count) == message)
                }
            }
            let echoed = try stalled.receive(exactly: payload.count)
            sender.join()
            #expect(echoed == payload)
            #expect(probe.maximumPending <= backpressure.highWaterMark + EventLoop.readBufferSize)
        }
    }

    /// A peer that goes away while its echo is still queued: the server drops
    /// that output and closes just that connection (reported as a reset, as
    /// the kernel answers unread data with RST, whether the peer closed or reset).
    @Test(arguments: [false, true])
    func peerLeavingWithEchoQueuedIsDroppedQuietly(reset: Bool) throws {
        let probe = ObservingEcho()
        let backpressure = Backpressure(highWaterMark: 64 * 1024, lowWaterMark: 16 * 1024)
        try withServer(loops: 1, configure: { $0.backpressure = backpressure }, handler: { _ in probe }) { server in
            let steady = try BlockingClient(port: server.port)
            let leaving = try BlockingClient(port: server.port)
            // Sent without blocking, so that nothing is stuck in send when it leaves.
            let payload = patternBytes(count: 16 << 20, seed: 9)
            var sent = 0
            #expect(eventually {
                sent += leaving.sendWithoutBlocking(payload[sent...])
                return probe.pausedCount > 0
            })
            if reset { leaving.reset() } else { leaving.close() }
            #expect(eventually { probe.reasons.count == 1 })
            #expect(probe.reasons.values == [.reset])
            #expect(server.connectionCount == 1)
            try steady.send([1, 2, 3])
            #expect(try steady.receive(exactly: 3) == [1, 2, 3])
        }
    }
}
