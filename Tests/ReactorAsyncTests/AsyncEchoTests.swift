import Reactor
import ReactorAsync
import TestSupport
import Testing

@Suite("Async connections")
struct AsyncEchoTests {
    /// Ten clients on two loops, 256 KiB each, sent while the echo is read:
    /// every byte comes back, then EOF after the client's FIN.
    @Test func echoesEveryByteToEveryClientThenFIN() throws {
        try withAsyncServer(serving: echo) { server in
            for index in 0..<10 {
                let payload = patternBytes(count: 256 * 1024, seed: UInt64(index) + 1)
                let client = try BlockingClient(port: server.port)
                let sender = try client.sendInBackground(payload, piece: 10_000, thenShutdown: true)
                #expect(try client.receiveUntilEOF(limit: payload.count) == payload, "client \(index)")
                sender.join()
            }
            #expect(eventually { server.server.connectionCount == 0 }, "every connection closed and released")
        }
    }

    /// Bytes that arrive before the consumer starts wait for it: the client
    /// sends and FINs, the loop has read it all, and only then does the
    /// consumer take the connection; it reads every byte.
    @Test func noReadIsLostBeforeTheConsumerStarts() async throws {
        let server = try startedAsyncServer(loops: 1)
        defer { server.stop() }
        let payload = patternBytes(count: 100_000, seed: 7)
        let client = try BlockingClient(port: server.port)
        try client.send(payload)
        client.shutdownWrite()
        var iterator = server.connections.makeAsyncIterator()
        let connection = try #require(await iterator.next())
        #expect(eventually { server.server.statistics.bytesReceived == UInt64(payload.count) })
        let received = try await connection.executeThenClose { inbound, _ in
            var all: [UInt8] = []
            for try await chunk in inbound { all += chunk }
            return all
        }
        #expect(received == payload)
        #expect(try client.receiveUntilEOF(limit: 0) == [], "closed after the body returned")
    }

    /// A consumer that does not read holds the connection at its inbound
    /// mark: the loop stops reading, so the server takes in at most the
    /// mark plus one read; once the consumer reads, every byte arrives.
    @Test func aLaggingConsumerPausesReadingAtTheSocket() throws {
        let limits = InboundLimits(highWaterMark: 64 * 1024, lowWaterMark: 16 * 1024)
        let gate = Gate()
        let total = 8 * 1024 * 1024
        try withAsyncServer(loops: 1, configure: { $0.socketBufferSize = 32 * 1024 }, inbound: limits, serving: { inbound, outbound in
            await gate.wait()
            var count = 0
            for try await chunk in inbound { count += chunk.count }
            try await outbound.write(Array("\(count)".utf8))
        }) { server in
            let client = try BlockingClient(port: server.port)
            let sender = try client.sendInBackground(patternBytes(count: total, seed: 3), piece: 64 * 1024, thenShutdown: true)
            // Reading paused: the count stops below the mark plus one 64 KiB read.
            #expect(eventually { server.server.statistics.bytesReceived > UInt64(limits.highWaterMark) })
            #expect(!eventually(within: 0.5) { server.server.statistics.bytesReceived > UInt64(limits.highWaterMark + EventLoop.readBufferSize) })
            gate.open()
            sender.join()
            #expect(try client.receiveUntilEOF(limit: 32) == Array("\(total)".utf8))
        }
    }

    /// A body that throws closes its own connection; the others go on.
    @Test func aThrowingConsumerClosesOnlyItsConnection() throws {
        let failures = Recorded<String>()
        try withAsyncServer(failed: { _, error in failures.append("\(error)") }, serving: { inbound, outbound in
            for try await chunk in inbound {
                if chunk.contains(UInt8(ascii: "!")) { throw TestFailure("bang") }
                try await outbound.write(chunk)
            }
        }) { server in
            let good = try BlockingClient(port: server.port)
            let bad = try BlockingClient(port: server.port)
            try good.send(Array("one".utf8))
            #expect(try good.receive(exactly: 3) == Array("one".utf8))
            try bad.send(Array("!".utf8))
            #expect(try bad.receiveUntilEOF(limit: 0) == [])
            try good.send(Array("two".utf8))
            #expect(try good.receive(exactly: 3) == Array("two".utf8))
            #expect(eventually { failures.values == ["bang"] }, "told after the close")
        }
    }

    /// Cancelling the tasks that serve connections closes them.
    @Test func cancellingTheServingTaskClosesItsConnections() throws {
        let server = try startedAsyncServer(loops: 2)
        defer { server.stop() }
        let serving = Task(executorPreference: server.server.loops[0]) { await server.serve(echo) }
        let clients = try (0..<4).map { _ in try BlockingClient(port: server.port) }
        for client in clients {
            try client.send([1, 2, 3])
            #expect(try client.receive(exactly: 3) == [1, 2, 3])
        }
        serving.cancel()
        for client in clients { #expect(try client.receiveUntilEOF(limit: 0) == []) }
        #expect(eventually { server.server.connectionCount == 0 })
    }

    /// With a framer, each element is one whole frame, wherever the client's
    /// writes split it.
    @Test func framesArriveWholeAtEverySplitPoint() throws {
        let framer = LengthPrefixedFramer.packetHeader(maximumFrameSize: 1024)
        let frames: [[UInt8]] = (1...4).map { id in
            let body = patternBytes(count: 10 * id, seed: UInt64(id))
            return [UInt8(4 + body.count), 0, UInt8(id), 0] + body
        }
        let stream = frames.flatMap { $0 }
        try withAsyncServer(loops: 1, framer: framer, serving: { inbound, outbound in
            for try await frame in inbound { try await outbound.write([UInt8(frame.count), frame[2]]) }
        }) { server in
            for split in 1..<stream.count {
                let client = try BlockingClient(port: server.port)
                try client.send(Array(stream[..<split]))
                try client.send(Array(stream[split...]))
                let answers = try client.receive(exactly: 2 * frames.count)
                #expect(answers == frames.flatMap { [UInt8($0.count), $0[2]] }, "split at \(split)")
            }
        }
    }

    /// SIGTERM's path, `shutdown`: what was read is answered and flushed
    /// before the FIN.
    @Test func shutdownAnswersWhatWasReadBeforeTheFIN() throws {
        let payload = patternBytes(count: 1_000_000, seed: 11)
        try withAsyncServer(loops: 1, serving: echo) { server in
            let client = try BlockingClient(port: server.port)
            try client.send([0])
            #expect(try client.receive(exactly: 1) == [0])
            let sender = try client.sendInBackground(payload)
            sender.join()
            #expect(eventually { server.server.statistics.bytesReceived == UInt64(payload.count + 1) })
            server.shutdown(gracePeriod: .seconds(5))
            #expect(try client.receiveUntilEOF(limit: payload.count) == payload)
        }
    }
}

/// A one-shot gate a task waits on and a test thread opens.
final class Gate: Sendable {
    private let state = Locked<(open: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))

    func wait() async {
        await withCheckedContinuation { continuation in
            let open = state.withLock { state in
                if !state.open { state.waiters.append(continuation) }
                return state.open
            }
            if open { continuation.resume() }
        }
    }

    func open() {
        let waiters = state.withLock { state in
            state.open = true
            defer { state.waiters = [] }
            return state.waiters
        }
        for waiter in waiters { waiter.resume() }
    }
}
