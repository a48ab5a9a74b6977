import Reactor
import Synchronization
import TestSupport
import Testing

/// A `Connection` is Sendable: from any thread its writes and closes hop to
/// its loop, in each thread's order, and a handle outliving its connection,
/// or its whole server, does nothing.
@Suite("Connection handles from any thread")
struct HandleSafetyTests {
    /// A chunk: writer number, sequence number, then filler derived from both.
    private static let chunkSize = 512

    private static func chunk(writer: Int, sequence: Int) -> [UInt8] {
        var bytes = [UInt8(writer)] + withUnsafeBytes(of: UInt32(sequence).littleEndian, Array.init)
        bytes += (bytes.count..<chunkSize).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ writer &* 31 &+ sequence) }
        return bytes
    }

    /// Four threads write to one connection whose kernel buffers are small,
    /// so most writes queue: every chunk arrives whole, exactly once, and
    /// each thread's chunks in the order that thread wrote them.
    @Test func fourThreadsWritingToOneConnectionKeepEachThreadsOrder() throws {
        let probe = ObservingEcho()
        try withServer(loops: 1, configure: { $0.socketBufferSize = 4_096 }, handler: { _ in probe }) { server in
            let client = try BlockingClient(port: server.port, receiveBufferSize: 4_096)
            #expect(eventually { probe.opened.count == 1 })
            let connection = try #require(probe.opened.values.first)
            let writers = 4, chunksPerWriter = 300
            let threads = try (0..<writers).map { writer in
                try LoopThread(name: "writer-\(writer)") {
                    for sequence in 0..<chunksPerWriter { connection.write(Self.chunk(writer: writer, sequence: sequence)) }
                }
            }
            let received = try client.receive(exactly: writers * chunksPerWriter * Self.chunkSize)
            for thread in threads { thread.join() }
            var nextSequence = [Int](repeating: 0, count: writers)
            for start in stride(from: 0, to: received.count, by: Self.chunkSize) {
                let bytes = Array(received[start..<start + Self.chunkSize])
                let writer = Int(bytes[0])
                try #require(writer < writers, "chunk at \(start) from no writer")
                let sequence = Int(bytes[1]) | Int(bytes[2]) << 8 | Int(bytes[3]) << 16 | Int(bytes[4]) << 24
                #expect(sequence == nextSequence[writer], "writer \(writer): chunk \(sequence) where \(nextSequence[writer]) was due")
                #expect(bytes == Self.chunk(writer: writer, sequence: sequence), "chunk at \(start) mangled")
                nextSequence[writer] = sequence + 1
            }
            #expect(nextSequence == [Int](repeating: chunksPerWriter, count: writers))
        }
    }

    /// A close from another thread comes after that thread's writes: they
    /// are all flushed, then the peer sees FIN.
    @Test func closeFromAnotherThreadFollowsItsWrites() throws {
        let probe = ObservingEcho()
        try withServer(loops: 1, handler: { _ in probe }) { server in
            let client = try BlockingClient(port: server.port, receiveBufferSize: 4_096)
            #expect(eventually { probe.opened.count == 1 })
            let connection = try #require(probe.opened.values.first)
            let payload = patternBytes(count: 1 << 20, seed: 21)
            let writer = try LoopThread(name: "writer") {
                for start in stride(from: 0, to: payload.count, by: 10_000) {
                    connection.write(Array(payload[start..<min(start + 10_000, payload.count)]))
                }
                connection.close()
            }
            writer.join()
            #expect(try client.receiveUntilEOF(limit: payload.count) == payload)
            #expect(eventually { probe.reasons.values == [.local] })
        }
    }

    /// After its connection closed, a handle does nothing, from the loop's
    /// thread or any other, even once its fd number serves a new connection.
    @Test func handleOfAClosedConnectionDoesNothing() throws {
        let probe = ObservingEcho()
        try withServer(loops: 1, handler: { _ in probe }) { server in
            let first = try BlockingClient(port: server.port)
            #expect(eventually { probe.opened.count == 1 })
            let stale = try #require(probe.opened.values.first)
            first.close()
            #expect(eventually { probe.reasons.count == 1 })
            let second = try BlockingClient(port: server.port)
            #expect(eventually { probe.opened.count == 2 })
            let fresh = probe.opened.values[1]
            #expect(fresh.fd == stale.fd, "the new connection reuses the fd number")
            #expect(fresh != stale)
            stale.write([0xFF])
            stale.pauseReading()
            stale.close()
            let seenOnLoop = Recorded<Bool>()
            stale.eventLoop.execute {
                stale.write([0xFE])
                stale.close(reason: .local)
                seenOnLoop.append(stale.isClosed)
            }
            #expect(eventually { seenOnLoop.count == 1 })
            #expect(seenOnLoop.values == [true])
            try second.send([1, 2, 3])
            #expect(try second.receive(exactly: 3) == [1, 2, 3], "nothing of the stale handle's")
            #expect(probe.reasons.count == 1)
        }
    }

    /// A handle kept after its server shut down and was released: using it
    /// does nothing, and bytes written through it never reach a connection
    /// of a later server that reuses the same fd number.
    @Test func handleOutlivingItsServerDoesNothing() throws {
        let probe = ObservingEcho()
        var stale: Connection?
        do {
            let server = try makeServer(handler: probe)
            let client = try BlockingClient(port: server.port)
            #expect(eventually { probe.opened.count == 1 })
            stale = probe.opened.values.first
            server.shutdown(gracePeriod: .seconds(1))
            server.wait()
            #expect(try client.receiveUntilEOF(limit: 0).isEmpty)
        }
        let handle = try #require(stale)
        let laterProbe = ObservingEcho()
        try withServer(loops: 1, handler: { _ in laterProbe }) { server in
            let client = try BlockingClient(port: server.port)
            #expect(eventually { laterProbe.opened.count == 1 })
            handle.write(patternBytes(count: 100, seed: 1))
            handle.write(SharedBuffer([9, 9, 9]))
            handle.resumeReading()
            handle.close()
            let ran = Recorded<Bool>()
            handle.eventLoop.execute { ran.append(true) } // a finished loop runs nothing
            try client.send([7])
            #expect(try client.receive(exactly: 1) == [7])
            #expect(ran.count == 0)
        }
        #expect(probe.reasons.values == [.shutdown])
    }

    private func makeServer(handler: ObservingEcho) throws -> Server {
        var configuration = Server.Configuration()
        configuration.port = 0
        configuration.loops = 1
        let server = try Server(configuration: configuration) { _ in handler }
        try server.start()
        return server
    }
}
