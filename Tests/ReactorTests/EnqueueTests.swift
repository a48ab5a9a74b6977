import Reactor
import TestSupport
import Testing

/// On each request byte, enqueues `count` shared buffers, then writes one
/// more directly; records the pending output right after the enqueues.
final class EnqueueingHandler: ConnectionHandler, Sendable {
    let buffers: [SharedBuffer]
    let trailer: [UInt8]
    let pendingAfterEnqueue = Recorded<Int>()
    let writability = Recorded<Bool>()

    init(buffers: [SharedBuffer], trailer: [UInt8]) {
        self.buffers = buffers
        self.trailer = trailer
    }

    func connection(_ connection: Connection, received bytes: UnsafeRawBufferPointer) -> Int {
        for _ in 0..<bytes.count {
            for buffer in buffers { connection.enqueue(buffer) }
            pendingAfterEnqueue.append(connection.pendingOutputBytes)
            connection.write(trailer)
        }
        return bytes.count
    }

    func connectionWritabilityChanged(_ connection: Connection, isWritable: Bool) {
        writability.append(isWritable)
    }
}

@Suite("Enqueued output")
struct EnqueueTests {
    /// Enqueued buffers wait for the end of the batch (nothing is sent
    /// inside the callback), then go out in order, before a write made after them.
    @Test func enqueuedBuffersGoOutAfterTheBatchInOrder() throws {
        let buffers = (0..<50).map { SharedBuffer(patternBytes(count: 100 + $0, seed: UInt64($0) + 1)) }
        let expectedBatch = buffers.flatMap { buffer in buffer.withUnsafeBytes { Array($0) } }
        let trailer = Array("end".utf8)
        let handler = EnqueueingHandler(buffers: buffers, trailer: trailer)
        try withServer(loops: 1, sharing: handler) { server in
            let client = try BlockingClient(port: server.port)
            try client.send([1])
            #expect(try client.receive(exactly: expectedBatch.count + trailer.count) == expectedBatch + trailer)
            try client.send([2, 3])
            let twice = expectedBatch + trailer + expectedBatch + trailer
            #expect(try client.receive(exactly: twice.count) == twice)
        }
        #expect(handler.pendingAfterEnqueue.values.first == expectedBatch.count, "nothing sent inside the callback")
    }

    /// A peer that reads nothing: enqueued output piles up to the mark and
    /// the handler is told it is not writable; once read, every byte arrives.
    @Test func enqueuedOutputCountsTowardsTheMarks() throws {
        let big = SharedBuffer(patternBytes(count: 64 * 1024, seed: 4))
        let handler = EnqueueingHandler(buffers: Array(repeating: big, count: 16), trailer: [])
        try withServer(loops: 1, configure: {
            $0.backpressure = Backpressure(highWaterMark: 256 * 1024, lowWaterMark: 64 * 1024)
            $0.socketBufferSize = 16 * 1024
        }, handler: { _ in handler }) { server in
            let client = try BlockingClient(port: server.port, receiveBufferSize: 4_096)
            try client.send([1])
            let expected = big.withUnsafeBytes { Array($0) }
            #expect(eventually { handler.writability.count == 1 })
            #expect(handler.writability.values == [false], "1 MiB enqueued is over the 256 KiB mark")
            for index in 0..<16 {
                #expect(try client.receive(exactly: expected.count) == expected, "buffer \(index)")
            }
            #expect(eventually { handler.writability.count == 2 })
            #expect(handler.writability.values == [false, true])
        }
    }
}
