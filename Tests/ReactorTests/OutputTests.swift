@testable import Reactor
import Synchronization
import TestSupport
import Testing

/// Writes `header` and `body` with one gathering write and closes, when the
/// peer's request byte arrives (if `onRequest`); records what it is told.
final class GatherWriter: ConnectionHandler {
    private let header: [UInt8]
    private let body: [UInt8]
    private let onRequest: Bool
    private let opened: Recorded<Connection>
    private let reasons: Recorded<CloseReason>
    /// Output still queued right after the write.
    let pendingAfterWrite = Recorded<Int>()

    init(header: [UInt8], body: [UInt8], onRequest: Bool, opened: Recorded<Connection>, reasons: Recorded<CloseReason>) {
        self.header = header
        self.body = body
        self.onRequest = onRequest
        self.opened = opened
        self.reasons = reasons
    }

    func connectionOpened(_ connection: Connection) { opened.append(connection) }

    func connection(_ connection: Connection, received bytes: UnsafeRawBufferPointer) -> Int {
        if onRequest {
            header.withUnsafeBytes { header in body.withUnsafeBytes { body in connection.write(header, body) } }
            pendingAfterWrite.append(connection.pendingOutputBytes)
            connection.close()
        }
        return bytes.count
    }

    func connectionClosed(_ connection: Connection, reason: CloseReason) { reasons.append(reason) }
}

/// What a flooding handler was told about writability, as seen inside the callbacks.
struct WritabilityNotice: Sendable, Equatable {
    let isWritable: Bool
    let connectionIsWritable: Bool
    let readingPaused: Bool
    let pending: Int
}

/// Writes `payload` as soon as the connection opens, far more than the peer takes.
final class FloodingHandler: ConnectionHandler {
    private let payload: [UInt8]
    let notices: Recorded<WritabilityNotice>
    let drained: Recorded<Int>
    let writableRightAfterWriting: Recorded<Bool>

    init(payload: [UInt8], notices: Recorded<WritabilityNotice>, drained: Recorded<Int>, writableRightAfterWriting: Recorded<Bool>) {
        self.payload = payload
        self.notices = notices
        self.drained = drained
        self.writableRightAfterWriting = writableRightAfterWriting
    }

    func connectionOpened(_ connection: Connection) {
        payload.withUnsafeBytes { bytes in
            for start in stride(from: 0, to: bytes.count, by: 65_536) {
                connection.write(UnsafeRawBufferPointer(rebasing: bytes[start..<min(start + 65_536, bytes.count)]))
            }
        }
        writableRightAfterWriting.append(connection.isWritable)
    }

    func connection(_ connection: Connection, received bytes: UnsafeRawBufferPointer) -> Int { bytes.count }

    func connectionWritabilityChanged(_ connection: Connection, isWritable: Bool) {
        notices.append(WritabilityNotice(
            isWritable: isWritable, connectionIsWritable: connection.isWritable,
            readingPaused: connection.isReadingPaused, pending: connection.pendingOutputBytes))
    }

    func connectionDrained(_ connection: Connection) { drained.append(connection.pendingOutputBytes) }
}

/// One call of `received`: where in the stream its bytes began, the bytes, and how many were consumed.
struct ReceivedCall: Sendable {
    let offset: Int
    let bytes: [UInt8]
    let consumed: Int
}

/// Consumes `firstConsumption` bytes of its first call and pauses reading;
/// consumes everything offered after that.
final class PausingHandler: ConnectionHandler {
    private let firstConsumption: Int
    let calls: Recorded<ReceivedCall>
    let opened: Recorded<Connection>
    private var consumedTotal = 0
    private var first = true

    init(firstConsumption: Int, calls: Recorded<ReceivedCall>, opened: Recorded<Connection>) {
        self.firstConsumption = firstConsumption
        self.calls = calls
        self.opened = opened
    }

    func connectionOpened(_ connection: Connection) { opened.append(connection) }

    func connection(_ connection: Connection, received bytes: UnsafeRawBufferPointer) -> Int {
        let consumed = first ? min(firstConsumption, bytes.count) : bytes.count
        if first { connection.pauseReading() }
        first = false
        calls.append(ReceivedCall(offset: consumedTotal, bytes: Array(bytes), consumed: consumed))
        consumedTotal += consumed
        return consumed
    }
}

/// Takes one frame of `frameSize` bytes per call, then pauses: a handler
/// that serves one request at a time.
final class OneFrameAtATime: ConnectionHandler {
    private let frameSize: Int
    let frames: Recorded<[UInt8]>
    let opened: Recorded<Connection>

    init(frameSize: Int, frames: Recorded<[UInt8]>, opened: Recorded<Connection>) {
        self.frameSize = frameSize
        self.frames = frames
        self.opened = opened
    }

    func connectionOpened(_ connection: Connection) { opened.append(connection) }

    func connection(_ connection: Connection, received bytes: UnsafeRawBufferPointer) -> Int {
        guard bytes.count >= frameSize else { return 0 }
        frames.append(Array(bytes.prefix(frameSize)))
        connection.pauseReading()
        return frameSize
    }
}

@Suite("Output")
struct OutputTests {
    struct HeaderAndBody: Sendable, CustomTestStringConvertible {
        let header: Int
        let body: Int
        /// Written by the handler on the loop, or by the test's thread (copied and hopped over).
        let fromLoop: Bool
        var testDescription: String { "\(header) B + \(body) B from \(fromLoop ? "the loop" : "another thread")" }

        static let all: [HeaderAndBody] = [(4, 100), (100, 0), (0, 100), (16, 4 << 20), (300_000, 4 << 20)].flatMap { sizes in
            [true, false].map { HeaderAndBody(header: sizes.0, body: sizes.1, fromLoop: $0) }
        }
    }

    /// Made once, the cases taking prefixes: `patternBytes` makes a byte at a time, slow in a debug build.
    static let headerPattern = patternBytes(count: 300_000, seed: 1)
    static let bodyPattern = patternBytes(count: 4 << 20, seed: 2)

    /// `write(header, body)`: the peer receives the header, then the body,
    /// exactly, then EOF (the close waits for the flush). Large ones go to a
    /// peer with small socket buffers, so most of them is queued: the body's
    /// rest, or (header larger than the socket takes) the header's rest and
    /// all of the body.

    @Test(arguments: HeaderAndBody.all)
    func headerThenBodyArriveExactly(_ sizes: HeaderAndBody) throws {
        let header = Array(Self.headerPattern.prefix(sizes.header))
        let body = Array(Self.bodyPattern.prefix(sizes.body))
        let opened = Recorded<Connection>()
        let reasons = Recorded<CloseReason>()
        let pendingAfterWrite = Mutex<Recorded<Int>?>(nil)
        try withServer(loops: 1, configure: { $0.socketBufferSize = 16 * 1024 }, handler: { _ in
            let writer = GatherWriter(header: header, body: body, onRequest: sizes.fromLoop, opened: opened, reasons: reasons)
            pendingAfterWrite.withLock { $0 = writer.pendingAfterWrite }
            return writer
        }) { server in
            let client = try BlockingClient(port: server.port, receiveBufferSize: 16 * 1024)
            if sizes.fromLoop {
                try client.send([1])
            } else {
                #expect(eventually { opened.count == 1 })
                let connection = try #require(opened.values.first)
                header.withUnsafeBytes { header in body.withUnsafeBytes { body in connection.write(header, body) } }
                connection.close()
            }
            let received = try client.receiveUntilEOF(limit: header.count + body.count)
            #expect(received.count == header.count + body.count)
            #expect(firstDifference(received.prefix(header.count), header) == nil, "header")
            #expect(firstDifference(received.dropFirst(header.count), body) == nil, "body")
            #expect(eventually { reasons.count == 1 })
            #expect(reasons.values == [.local])
            if sizes.fromLoop && sizes.body >= 1 << 20 {
                // What the first sendmsg did not take was queued: the queued path really ran.
                let pending = try #require(pendingAfterWrite.withLock { $0 }?.values.first)
                #expect(pending > sizes.body / 2)
                if sizes.header > 100_000 { #expect(pending > sizes.body, "part of the header was queued too") }
            }
        }
    }

    private final class WeakStorage {
        weak var storage: ByteStorage?
    }

    /// Writes one new shared buffer of `bytes` to every connection from this
    /// thread and keeps no reference to it: only the loops' queues may.
    private static func broadcast(_ bytes: [UInt8], to connections: [Connection], watching weak: WeakStorage) {
        let buffer = SharedBuffer(bytes)
        weak.storage = buffer.storage
        for connection in connections { connection.write(buffer) }
    }

    /// One 256 KiB shared buffer to 20 peers that read nothing at first: each
    /// connection queues the rest of it by reference (the buffer outlives the
    /// writer's reference while queued); every peer then gets it exactly; once
    /// drained nothing keeps it alive, no copy, no leak.
    @Test func sharedBufferToManyConnectionsIsQueuedByReferenceAndReleased() throws {
        let probe = ObservingEcho()
        try withServer(configure: { $0.socketBufferSize = 16 * 1024 }, handler: { _ in probe }) { server in
            let clients = try (0..<20).map { _ in try BlockingClient(port: server.port, receiveBufferSize: 8 * 1024) }
            #expect(eventually { probe.opened.count == 20 })
            let connections = probe.opened.values
            let payload = patternBytes(count: 256 * 1024, seed: 99)
            let weak = WeakStorage()
            Self.broadcast(payload, to: connections, watching: weak)

            // After the hopped writes (tasks run in order): each holds part of it queued.
            for connection in connections {
                let pending = try connection.eventLoop.onLoop { connection.pendingOutputBytes }
                #expect(pending > 0 && pending <= payload.count, "pending \(pending)")
            }
            // One more round on each loop: the hopped write tasks (which captured the
            // buffer) are released after their batch, so now only a queue can hold it.
            for loop in server.loops { _ = try loop.onLoop { 0 } }
            #expect(weak.storage != nil, "queued by reference: the queues keep the one buffer alive")

            for (index, client) in clients.enumerated() {
                #expect(firstDifference(try client.receive(exactly: payload.count), payload) == nil, "client \(index)")
            }
            #expect(eventually { weak.storage == nil }, "drained: no queue still holds the buffer")

            for client in clients { client.close() }
            #expect(eventually { probe.reasons.count == 20 })
            #expect(probe.reasons.values.allSatisfy { $0 == .peerClosed })
            #expect(weak.storage == nil)
            #expect(server.connectionCount == 0)
        }
    }

    /// A handler that writes far more than a non-reading peer takes hears
    /// `isWritable: false` once, and `true` once the peer has drained it, in
    /// that order; `connection.isWritable` (and the paused reading) agree
    /// inside the callbacks; every byte arrives.
    @Test func writabilityFlipsOnceEachWayAroundTheMarks() throws {
        let backpressure = Backpressure(highWaterMark: 128 * 1024, lowWaterMark: 32 * 1024)
        let payload = patternBytes(count: 2 << 20, seed: 5)
        let notices = Recorded<WritabilityNotice>()
        let drained = Recorded<Int>()
        let writableRightAfterWriting = Recorded<Bool>()
        try withServer(loops: 1, configure: {
            $0.backpressure = backpressure
            $0.socketBufferSize = 16 * 1024
        }, handler: { _ in
            FloodingHandler(payload: payload, notices: notices, drained: drained, writableRightAfterWriting: writableRightAfterWriting)
        }) { server in
            let client = try BlockingClient(port: server.port, receiveBufferSize: 8 * 1024)
            #expect(eventually { notices.count == 1 })
            let unwritable = try #require(notices.values.first)
            #expect(unwritable.isWritable == false)
            #expect(unwritable.connectionIsWritable == false)
            #expect(unwritable.readingPaused)
            #expect(unwritable.pending > backpressure.highWaterMark)
            #expect(writableRightAfterWriting.values == [false], "the flag is set by the write; the notice comes after the batch")
            #expect(drained.count == 0)

            #expect(firstDifference(try client.receive(exactly: payload.count), payload) == nil)
            #expect(eventually { notices.count == 2 && drained.count == 1 })
            let notes = notices.values
            #expect(notes.map(\.isWritable) == [false, true])
            let writable = notes[1]
            #expect(writable.connectionIsWritable)
            #expect(!writable.readingPaused)
            #expect(writable.pending <= backpressure.lowWaterMark)
            #expect(drained.values == [0])
        }
    }

    /// The handler pauses after its first packet, consuming only part of it;
    /// what the peer sends meanwhile reaches the server's socket but not the
    /// handler. `resumeReading()` from the test's thread (a hop to the loop)
    /// offers the unconsumed rest first, then the new bytes: every byte once,
    /// in order.
    @Test func pausedHandlerIsOfferedNothingUntilResumedThenEveryByteOnceInOrder() throws {
        let calls = Recorded<ReceivedCall>()
        let opened = Recorded<Connection>()
        try withServer(loops: 1, handler: { _ in PausingHandler(firstConsumption: 10, calls: calls, opened: opened) }) { server in
            let client = try BlockingClient(port: server.port)
            let first = patternBytes(count: 1_000, seed: 1)
            let more = patternBytes(count: 20_000, seed: 2)
            let stream = first + more
            try client.send(first)
            #expect(eventually { calls.count == 1 })
            let connection = try #require(opened.values.first)

            try client.send(more)
            // In the server's kernel (acknowledged), and two loop iterations later...
            #expect(eventually { client.unacknowledgedBytes == 0 })
            _ = try connection.eventLoop.onLoop { 0 }
            let paused = try connection.eventLoop.onLoop { connection.isReadingPaused }
            // ...still not offered to the handler.
            #expect(paused)
            #expect(calls.count == 1)

            connection.resumeReading()
            #expect(eventually { calls.values.map(\.consumed).reduce(0, +) == stream.count })
            let offered = calls.values
            #expect(offered[0].offset == 0 && offered[0].bytes == first && offered[0].consumed == 10)
            #expect(offered.count >= 3)
            #expect(offered[1].offset == 10)
            #expect(firstDifference(offered[1].bytes, first[10...]) == nil, "the unconsumed rest first, before anything new")
            var position = 0
            for (index, call) in offered.enumerated() {
                #expect(call.offset == position, "call \(index) starts where consumption stopped")
                #expect(position + call.bytes.count <= stream.count)
                #expect(firstDifference(call.bytes, stream[position..<min(position + call.bytes.count, stream.count)]) == nil, "call \(index)")
                position += call.consumed
            }
            #expect(position == stream.count)
            let stillPaused = try connection.eventLoop.onLoop { connection.isReadingPaused }
            #expect(!stillPaused)
        }
    }

    /// Five requests in one send to a handler that takes one and pauses:
    /// each `resumeReading()` (from the test's thread) offers what is left
    /// with no new bytes from the peer, and exactly one more request is
    /// taken; reading is really on again after the last.
    @Test func eachResumeOffersTheRequestsLeftOneAtATime() throws {
        let frames = Recorded<[UInt8]>()
        let opened = Recorded<Connection>()
        try withServer(loops: 1, handler: { _ in OneFrameAtATime(frameSize: 100, frames: frames, opened: opened) }) { server in
            let client = try BlockingClient(port: server.port)
            let requests = (0..<6).map { patternBytes(count: 100, seed: UInt64($0) + 10) }
            try client.send(requests.prefix(5).flatMap { $0 })
            #expect(eventually { frames.count == 1 })
            let connection = try #require(opened.values.first)
            for taken in 1..<5 {
                _ = try connection.eventLoop.onLoop { 0 }
                let paused = try connection.eventLoop.onLoop { connection.isReadingPaused }
                #expect(paused)
                #expect(frames.count == taken, "nothing more while paused")
                connection.resumeReading()
                #expect(eventually { frames.count == taken + 1 })
            }
            connection.resumeReading()
            try client.send(requests[5])
            #expect(eventually { frames.count == 6 })
            #expect(frames.values == requests)
        }
    }
}
