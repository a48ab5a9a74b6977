import Reactor
import TestSupport
import Testing

/// What the framed servers' handlers saw, shared by all of them (each
/// connection has a handler of its own; they are numbered in accept order).
final class FramingProbe: Sendable {
    struct Seen: Sendable {
        /// The stream position up to which bytes have been offered to the handler.
        var offeredUpTo = 0
        /// Calls whose bytes began with bytes offered before and left unconsumed.
        var tailsOfferedAgain = 0
        /// The longest such unconsumed tail.
        var longestTailOfferedAgain = 0
        var frames = 0
    }

    // Locked, not Synchronization's Mutex: ThreadSanitizer sees pthread mutexes only.
    private let state = Locked((next: 0, connections: [Seen]()))
    let closed = Recorded<(connection: Int, reason: CloseReason)>()

    func opened() -> Int {
        state.withLock {
            $0.connections.append(Seen())
            $0.next += 1
            return $0.next - 1
        }
    }

    func update(_ index: Int, _ change: (inout Seen) -> Void) {
        state.withLock { change(&$0.connections[index]) }
    }

    func connection(_ index: Int) -> Seen? {
        state.withLock { index < $0.connections.count ? $0.connections[index] : nil }
    }
}

/// Cuts its connection's input with `framer` and answers each frame with `answer`.
final class FramedServerHandler: ConnectionHandler {
    private let framer: any Framer
    private let probe: FramingProbe
    private let answer: @Sendable (UnsafeRawBufferPointer, Connection) -> Void
    private let index: Int
    private var consumed = 0
    private var offeredUpTo = 0

    init(framer: any Framer, probe: FramingProbe, answer: @escaping @Sendable (UnsafeRawBufferPointer, Connection) -> Void) {
        self.framer = framer
        self.probe = probe
        self.answer = answer
        index = probe.opened()
    }

    func connection(_ connection: Connection, received bytes: UnsafeRawBufferPointer) -> Int {
        let tail = offeredUpTo - consumed
        offeredUpTo = consumed + bytes.count
        var frames = 0
        let used = framer.frames(in: bytes, of: connection) { frame in
            frames += 1
            answer(frame, connection)
        }
        consumed += used
        probe.update(index) { [offeredUpTo] state in
            state.offeredUpTo = offeredUpTo
            state.frames += frames
            if tail > 0 {
                state.tailsOfferedAgain += 1
                state.longestTailOfferedAgain = max(state.longestTailOfferedAgain, tail)
            }
        }
        return used
    }

    func connectionClosed(_ connection: Connection, reason: CloseReason) {
        probe.closed.append((index, reason))
    }
}

/// The course's packets, `{ u16 size; u16 id }` little-endian, size counting the header.
enum Packet {
    static func make(id: UInt16, body: [UInt8]) -> [UInt8] {
        let size = UInt16(4 + body.count)
        return [UInt8(size & 0xFF), UInt8(size >> 8), UInt8(id & 0xFF), UInt8(id >> 8)] + body
    }

    /// The server's answer to a packet: the same packet with id + 1.
    static func answer(to packet: [UInt8]) -> [UInt8] {
        let id = UInt16(packet[2]) | UInt16(packet[3]) << 8
        return make(id: id &+ 1, body: Array(packet[4...]))
    }

    /// Answers `frame` on `connection`: header and body in one gathering write.
    static func answer(_ frame: UnsafeRawBufferPointer, on connection: Connection) {
        let id = UInt16(littleEndian: frame.loadUnaligned(fromByteOffset: 2, as: UInt16.self)) &+ 1
        let header: [UInt8] = [frame[0], frame[1], UInt8(id & 0xFF), UInt8(id >> 8)]
        header.withUnsafeBytes { connection.write($0, UnsafeRawBufferPointer(rebasing: frame[4...])) }
    }
}

@Suite("Framing over sockets")
struct FramingOverSocketsTests {
    private static func packetServer<Result>(
        maximumFrameSize: Int, probe: FramingProbe, _ body: (Server) throws -> Result
    ) throws -> Result {
        let framer = LengthPrefixedFramer.packetHeader(maximumFrameSize: maximumFrameSize)
        return try withServer(loops: 1, handler: { _ in
            FramedServerHandler(framer: framer, probe: probe, answer: Packet.answer(_:on:))
        }, body)
    }

    /// A stream of packets sent in two parts, split at every byte; the second
    /// part goes only once the server has been offered the first, so every
    /// split inside a packet leaves a partial frame for the reactor to keep
    /// and hand back. Each packet is answered once, in order.
    @Test func packetsSplitAtEveryPointAreEachAnsweredOnceInOrder() throws {
        let probe = FramingProbe()
        try Self.packetServer(maximumFrameSize: 1_024, probe: probe) { server in
            let client = try BlockingClient(port: server.port)
            let bodySizes = [0, 1, 3, 17, 60, 120]
            var position = 0
            var splitsInsidePackets = 0
            var round = 0
            for split in 0...(bodySizes.reduce(0, +) + 4 * bodySizes.count) {
                let packets = bodySizes.enumerated().map { index, size in
                    let id = round * 16 + index
                    return Packet.make(id: UInt16(truncatingIfNeeded: id), body: patternBytes(count: size, seed: UInt64(id) + 1))
                }
                round += 1
                let stream = packets.flatMap { $0 }
                let boundaries = Set(packets.reduce(into: [0]) { $0.append($0.last! + $1.count) })
                if !boundaries.contains(split) { splitsInsidePackets += 1 }

                if split > 0 {
                    try client.send(Array(stream[..<split]))
                    let seen = eventually { probe.connection(0)?.offeredUpTo == position + split }
                    #expect(seen, "the server never saw the first \(split) bytes")
                }
                try client.send(Array(stream[split...]))
                let answers = try client.receive(exactly: stream.count)
                #expect(answers == packets.flatMap(Packet.answer(to:)), "split at \(split)")
                position += stream.count
            }
            // The answers may reach the client before the handler has recorded its last call.
            #expect(eventually { probe.connection(0)?.frames == round * bodySizes.count }, "each packet answered exactly once")
            let state = try #require(probe.connection(0))
            #expect(state.frames == round * bodySizes.count)
            #expect(state.tailsOfferedAgain == splitsInsidePackets, "each split inside a packet left a tail that was offered again")
            #expect(probe.closed.count == 0)
            #expect(server.statistics.protocolErrors == 0)
        }
    }

    /// A 40 KiB packet between two small ones, sent in pieces, each once the
    /// server has seen the one before: the unconsumed tail grows past 16 KiB,
    /// where new bytes are appended to it instead of copied in front.
    @Test func packetLargerThanTheShortTailLimitArrivesIntact() throws {
        let probe = FramingProbe()
        try Self.packetServer(maximumFrameSize: 64 * 1024, probe: probe) { server in
            let client = try BlockingClient(port: server.port)
            let packets = [
                Packet.make(id: 1, body: patternBytes(count: 10, seed: 1)),
                Packet.make(id: 2, body: patternBytes(count: 40 * 1024 - 4, seed: 2)),
                Packet.make(id: 3, body: patternBytes(count: 5, seed: 3)),
            ]
            let stream = packets.flatMap { $0 }
            var sent = 0
            for piece in [2, 5, 1, 9_000, 3, 7_000, 6_000, 9_000, 1, 8_000] {
                try client.send(Array(stream[sent..<sent + piece]))
                sent += piece
                let seen = eventually { probe.connection(0)?.offeredUpTo == sent }
                #expect(seen, "the server never saw the first \(sent) bytes")
            }
            try client.send(Array(stream[sent...]))
            let answers = try client.receive(exactly: stream.count)
            #expect(firstDifference(answers, packets.flatMap(Packet.answer(to:))) == nil)
            #expect(eventually { probe.connection(0)?.frames == 3 })
            let state = try #require(probe.connection(0))
            #expect(state.longestTailOfferedAgain > 16 * 1024, "the long-tail path ran")
        }
    }

    /// Input that can never be a valid frame, for one framer each.
    struct Violation: Sendable, CustomTestStringConvertible {
        let testDescription: String
        let framer: any Framer
        let answer: @Sendable (UnsafeRawBufferPointer, Connection) -> Void
        /// A valid frame, and what the server answers to it.
        let valid: [UInt8]
        let validAnswer: [UInt8]
        let bad: [UInt8]
        let error: FramingError
        /// What the error's description (the logged close reason) must name.
        let named: [String]

        static let all: [Violation] = {
            let packets = LengthPrefixedFramer.packetHeader(maximumFrameSize: 1_024)
            let packet = Packet.make(id: 7, body: Array("hello".utf8))
            let echo: @Sendable (UnsafeRawBufferPointer, Connection) -> Void = { frame, connection in connection.write(frame) }
            let bodyLength = LengthPrefixedFramer(
                lengthFieldSize: 8, byteOrder: .bigEndian, lengthIncludesHeader: false, maximumFrameSize: 64 * 1024)
            let lengthFrame: [UInt8] = [0, 0, 0, 0, 0, 0, 0, 3, 0xA, 0xB, 0xC]
            let intMaxMinus3 = UInt64(Int.max) - 3
            let lines = LineFramer(maximumLineLength: 64)
            return [
                Violation(
                    testDescription: "header announcing more than the maximum",
                    framer: packets, answer: Packet.answer(_:on:), valid: packet, validAnswer: Packet.answer(to: packet),
                    bad: [0x01, 0x10, 9, 0], error: .frameTooLarge(size: 4_097, limit: 1_024), named: ["4097 B", "limit of 1024 B"]),
                Violation(
                    testDescription: "packet length under its 4-byte header",
                    framer: packets, answer: Packet.answer(_:on:), valid: packet, validAnswer: Packet.answer(to: packet),
                    bad: [3, 0, 9, 0], error: .lengthShorterThanHeader(length: 3, headerSize: 4), named: ["length 3 B", "4 B header"]),
                Violation(
                    testDescription: "8-byte length field of UInt64.max",
                    framer: bodyLength, answer: echo, valid: lengthFrame, validAnswer: lengthFrame,
                    bad: [UInt8](repeating: 0xFF, count: 8), error: .lengthOverflows(rawValue: .max),
                    named: ["\(UInt64.max)"]),
                Violation(
                    testDescription: "8-byte body length that overflows with the header added",
                    framer: bodyLength, answer: echo, valid: lengthFrame, validAnswer: lengthFrame,
                    bad: (0..<8).map { UInt8(truncatingIfNeeded: intMaxMinus3 >> (56 - 8 * $0)) },
                    error: .lengthOverflows(rawValue: intMaxMinus3), named: ["\(intMaxMinus3)"]),
                Violation(
                    testDescription: "line with no delimiter within its maximum",
                    framer: lines, answer: { line, connection in connection.write(Array(line) + [UInt8(ascii: "\n")]) },
                    valid: Array("ping\r\n".utf8), validAnswer: Array("ping\n".utf8),
                    bad: [UInt8](repeating: UInt8(ascii: "a"), count: 100),
                    error: .lineTooLong(bytesWithoutDelimiter: 100, limit: 64), named: ["100 B", "limit of 64 B"]),
            ]
        }()
    }

    /// The offending connection, and only it, is closed with the framing
    /// error (after the frames before the bad one are answered), its peer
    /// sees EOF, the error is counted, and another connection on the same
    /// loop is served before and after.
    @Test(arguments: Violation.all)
    func badFrameClosesOnlyItsOwnConnection(_ violation: Violation) throws {
        let probe = FramingProbe()
        try withServer(loops: 1, handler: { _ in
            FramedServerHandler(framer: violation.framer, probe: probe, answer: violation.answer)
        }) { server in
            let steady = try BlockingClient(port: server.port) // connection 0
            try steady.send(violation.valid)
            #expect(try steady.receive(exactly: violation.validAnswer.count) == violation.validAnswer)

            let offender = try BlockingClient(port: server.port) // connection 1
            try offender.send(violation.valid + violation.bad)
            #expect(try offender.receive(exactly: violation.validAnswer.count) == violation.validAnswer)
            #expect(try offender.receiveUntilEOF(limit: 0).isEmpty, "the peer sees EOF, not a reset")

            #expect(eventually { probe.closed.count == 1 })
            let closed = try #require(probe.closed.values.first)
            #expect(closed.connection == 1)
            #expect(closed.reason == .framing(violation.error))
            for number in violation.named {
                #expect(closed.reason.description.contains(number), "\(closed.reason) names \(number)")
            }
            #expect(server.statistics.protocolErrors == 1)

            for _ in 0..<20 {
                try steady.send(violation.valid)
                #expect(try steady.receive(exactly: violation.validAnswer.count) == violation.validAnswer)
            }
            #expect(server.connectionCount == 1)
            #expect(probe.closed.count == 1)
        }
    }
}
