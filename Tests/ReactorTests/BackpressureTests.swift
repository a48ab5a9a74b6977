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
        let probe = PendingProbe()
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
}

/// Echo that records the most output ever queued and how often reading paused.
final class PendingProbe: ConnectionHandler, Sendable {
    private let state = Mutex((maximum: 0, paused: 0))

    var maximumPending: Int { state.withLock { $0.maximum } }
    var pausedCount: Int { state.withLock { $0.paused } }

    func connection(_ connection: Connection, received bytes: UnsafeRawBufferPointer) {
        connection.write(bytes)
        let pending = connection.pendingOutputBytes
        let paused = connection.isReadingPaused
        state.withLock {
            $0.maximum = max($0.maximum, pending)
            if paused { $0.paused += 1 }
        }
    }
}
