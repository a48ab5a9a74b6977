import PropertyBased
import Reactor
import Testing

@Suite("Framers")
struct FramerTests {
    @Suite("LengthPrefixedFramer")
    struct LengthPrefixed {
        @Test(arguments: LengthPrefixShape.all)
        func everySplitPointDeliversTheFramesSent(_ shape: LengthPrefixShape) async {
            // The empty body and the largest allowed frame are in every stream.
            let edges: [[UInt8]] = [[], pattern(count: shape.largestBody, seed: 1)]
            await propertyCheck(count: 3, input: bodies(upTo: 40, count: 0...5)) { bodies in
                let stream = shape.stream(of: edges + bodies)
                #expect(firstSplitProblem(shape.framer, stream) == nil)
            }
        }

        @Test(arguments: LengthPrefixShape.all)
        func randomPiecesDeliverTheFramesSent(_ shape: LengthPrefixShape) async {
            await propertyCheck(input: bodies(upTo: shape.largestBody, count: 0...8), cuts) { bodies, cuts in
                let stream = shape.stream(of: bodies)
                let cutPoints = cuts.map { $0 % (stream.bytes.count + 1) }
                #expect(deliveryProblem(shape.framer, stream, cutAt: cutPoints) == nil)
            }
        }

        @Test(arguments: LengthPrefixShape.all)
        func frameOverTheLimitIsRefusedAsSoonAsItsHeaderArrives(_ shape: LengthPrefixShape) {
            let limit = shape.maximumFrameSize
            let oversized = shape.header(bodyCount: limit + 1 - shape.headerSize)
            #expect(frameOnce(shape.framer, Array(oversized.dropLast())) == ([], .success(0)))
            #expect(frameOnce(shape.framer, oversized) == ([], .failure(.frameTooLarge(size: limit + 1, limit: limit))))

            let largest = shape.header(bodyCount: limit - shape.headerSize)
            #expect(frameOnce(shape.framer, largest) == ([], .success(0)), "a frame of exactly the limit is awaited")
            let body = pattern(count: limit - shape.headerSize, seed: 9)
            #expect(frameOnce(shape.framer, largest + body) == ([largest + body], .success(limit)))
        }

        @Test func lengthShorterThanTheHeaderItCountsIsRefused() {
            let packets = LengthPrefixedFramer.packetHeader(maximumFrameSize: 64)
            for size: UInt8 in 0...3 {
                #expect(
                    frameOnce(packets, [size, 0, 7, 0])
                        == ([], .failure(.lengthShorterThanHeader(length: Int(size), headerSize: 4))))
            }
            #expect(frameOnce(packets, [4, 0, 7, 0]) == ([[4, 0, 7, 0]], .success(4)), "an empty body is a frame")

            let byteLength = LengthPrefixedFramer(
                lengthFieldSize: 1, byteOrder: .littleEndian, lengthIncludesHeader: true, maximumFrameSize: 64)
            #expect(frameOnce(byteLength, [0]) == ([], .failure(.lengthShorterThanHeader(length: 0, headerSize: 1))))
            #expect(frameOnce(byteLength, [1]) == ([[1]], .success(1)))
        }

        @Test func eightByteLengthThatOverflowsIsRefused() {
            let limit = 1 << 20
            let bodyLength = LengthPrefixedFramer(
                lengthFieldSize: 8, byteOrder: .bigEndian, lengthIncludesHeader: false, maximumFrameSize: limit)
            let wholeLength = LengthPrefixedFramer(
                lengthFieldSize: 8, byteOrder: .littleEndian, lengthIncludesHeader: true, maximumFrameSize: limit)
            let intMax = UInt64(Int.max)

            // A body length plus the 8-byte header must fit in an Int.
            for raw in [UInt64.max, intMax, intMax - 7] {
                #expect(frameOnce(bodyLength, bigEndian(raw)) == ([], .failure(.lengthOverflows(rawValue: raw))))
            }
            #expect(
                frameOnce(bodyLength, bigEndian(intMax - 8))
                    == ([], .failure(.frameTooLarge(size: Int.max, limit: limit))))

            for raw in [UInt64.max, intMax + 1] {
                #expect(frameOnce(wholeLength, littleEndian(raw)) == ([], .failure(.lengthOverflows(rawValue: raw))))
            }
            #expect(
                frameOnce(wholeLength, littleEndian(intMax))
                    == ([], .failure(.frameTooLarge(size: Int.max, limit: limit))))
        }

        @Test func framesBeforeTheBadOneAreDeliveredFirst() {
            let packets = LengthPrefixedFramer.packetHeader(maximumFrameSize: 64)
            let first: [UInt8] = [6, 0, 1, 0, 0xAA, 0xBB]
            let second: [UInt8] = [4, 0, 2, 0]
            let afterwards: [UInt8] = [4, 0, 3, 0]
            #expect(
                frameOnce(packets, first + second + [65, 0, 9, 0] + afterwards)
                    == ([first, second], .failure(.frameTooLarge(size: 65, limit: 64))))
            #expect(
                frameOnce(packets, first + second + [3, 0, 9, 0] + afterwards)
                    == ([first, second], .failure(.lengthShorterThanHeader(length: 3, headerSize: 4))))
        }

        @Test func coursePacketsHandTheIdToTheHandler() {
            let packets = LengthPrefixedFramer.packetHeader(maximumFrameSize: 64)
            let bytes: [UInt8] = [6, 0, 7, 0, 0x68, 0x69] + [4, 0, 0x34, 0x12] + [5, 0]
            var ids: [UInt16] = []
            var bodies: [[UInt8]] = []
            let consumed = bytes.withUnsafeBytes { buffer in
                try? packets.frames(in: buffer) { frame in
                    ids.append(UInt16(littleEndian: frame.loadUnaligned(fromByteOffset: 2, as: UInt16.self)))
                    bodies.append(Array(frame.dropFirst(4)))
                }
            }
            #expect(ids == [7, 0x1234])
            #expect(bodies == [Array("hi".utf8), []])
            #expect(consumed == 10, "the 2 bytes of the next header wait for the rest")
        }
    }

    @Suite("LineFramer")
    struct Line {
        @Test(arguments: LineShape.all)
        func everySplitPointDeliversTheLinesSent(_ shape: LineShape) async {
            // An empty line and one as long as allowed are in every stream.
            let edges: [[UInt8]] = [[], [UInt8](repeating: UInt8(ascii: "a"), count: LineShape.maximumLineLength)]
            await propertyCheck(count: 3, input: shape.lines(count: 0...8)) { lines in
                let stream = shape.stream(of: edges + lines)
                #expect(firstSplitProblem(shape.framer, stream) == nil)
            }
        }

        @Test(arguments: LineShape.all)
        func randomPiecesDeliverTheLinesSent(_ shape: LineShape) async {
            await propertyCheck(input: shape.lines(count: 0...12), cuts) { lines, cuts in
                let stream = shape.stream(of: lines)
                let cutPoints = cuts.map { $0 % (stream.bytes.count + 1) }
                #expect(deliveryProblem(shape.framer, stream, cutAt: cutPoints) == nil)
            }
        }

        @Test func crlfAndLfLinesReadTheSame() {
            let bytes = Array("GET\r\nPING\n\r\n\nx\r\r\na\rb\n".utf8)
            let lines = ["GET", "PING", "", "", "x\r", "a\rb"].map { Array($0.utf8) }
            #expect(frameOnce(LineFramer(maximumLineLength: 16), bytes) == (lines, .success(bytes.count)))

            let kept = ["GET\r", "PING", "\r", "", "x\r\r", "a\rb"].map { Array($0.utf8) }
            let keeping = LineFramer(maximumLineLength: 16, stripsCarriageReturn: false)
            #expect(frameOnce(keeping, bytes) == (kept, .success(bytes.count)))
        }

        @Test func lineOfExactlyTheMaximumLengthIsAccepted() {
            let framer = LineFramer(maximumLineLength: 8)
            #expect(frameOnce(framer, Array("12345678\n".utf8)) == ([Array("12345678".utf8)], .success(9)))
            // The stripped \r counts: the limit is on the bytes before the delimiter.
            #expect(frameOnce(framer, Array("1234567\r\n".utf8)) == ([Array("1234567".utf8)], .success(9)))
            #expect(
                frameOnce(framer, Array("12345678\r\n".utf8))
                    == ([], .failure(.lineTooLong(bytesWithoutDelimiter: 9, limit: 8))))
        }

        @Test func lineWithoutDelimiterIsRefusedOnceOneByteOverTheLimitHasArrived() {
            let framer = LineFramer(maximumLineLength: 8)
            var pending: [UInt8] = []
            for byte in Array("12345678".utf8) {
                pending.append(byte)
                #expect(frameOnce(framer, pending) == ([], .success(0)), "\(pending.count) bytes are within the limit")
            }
            pending.append(UInt8(ascii: "9"))
            #expect(frameOnce(framer, pending) == ([], .failure(.lineTooLong(bytesWithoutDelimiter: 9, limit: 8))))
        }

        @Test func delimiterBeyondTheLimitDoesNotSaveTheLine() {
            let framer = LineFramer(maximumLineLength: 8)
            #expect(
                frameOnce(framer, Array("123456789012\nok\n".utf8))
                    == ([], .failure(.lineTooLong(bytesWithoutDelimiter: 12, limit: 8))))
        }

        @Test func linesBeforeTheLongOneAreDeliveredFirst() {
            let framer = LineFramer(maximumLineLength: 8)
            #expect(
                frameOnce(framer, Array("ok\r\n\nfine\n0123456789".utf8))
                    == (
                        ["ok", "", "fine"].map { Array($0.utf8) },
                        .failure(.lineTooLong(bytesWithoutDelimiter: 10, limit: 8))
                    ))
        }

        @Test func zeroMaximumAllowsOnlyEmptyLines() {
            let framer = LineFramer(maximumLineLength: 0, stripsCarriageReturn: false)
            #expect(frameOnce(framer, Array("\n\n".utf8)) == ([[], []], .success(2)))
            #expect(
                frameOnce(framer, Array("\na".utf8))
                    == ([[]], .failure(.lineTooLong(bytesWithoutDelimiter: 1, limit: 0))))
        }
    }

    @Suite("FramingError descriptions")
    struct Descriptions {
        @Test func eachErrorNamesItsNumbers() {
            #expect(
                FramingError.frameTooLarge(size: 70_000, limit: 65_536).description
                    == "frame of 70000 B over the limit of 65536 B")
            #expect(
                FramingError.lengthOverflows(rawValue: UInt64.max).description
                    == "length field value 18446744073709551615 overflows a frame size")
            #expect(
                FramingError.lengthShorterThanHeader(length: 2, headerSize: 4).description
                    == "frame length 2 B is shorter than its 4 B header")
            #expect(
                FramingError.lineTooLong(bytesWithoutDelimiter: 65_537, limit: 65_536).description
                    == "65537 B without a delimiter, over the line limit of 65536 B")
        }

        @Test func thrownErrorReadsAsTheCloseReason() {
            let framer = LengthPrefixedFramer(
                lengthFieldSize: 4, byteOrder: .bigEndian, lengthIncludesHeader: true, maximumFrameSize: 65_536)
            guard case .failure(let error) = frameOnce(framer, [0x00, 0x01, 0x11, 0x70]).outcome else {  // 70,000
                Issue.record("a 70,000 B frame was not refused")
                return
            }
            #expect("\(error)" == "frame of 70000 B over the limit of 65536 B")
        }
    }
}

// MARK: - Configurations under test, each with its own encoder

/// A way to configure a `LengthPrefixedFramer`, with an encoder that writes the
/// wire format from the shape's own description (not from the framer).
struct LengthPrefixShape: Sendable, CustomTestStringConvertible {
    let framer: LengthPrefixedFramer
    let fieldSize: Int
    let bigEndian: Bool
    let fieldOffset: Int
    let headerSize: Int
    let countsHeader: Bool
    let testDescription: String

    var maximumFrameSize: Int { framer.maximumFrameSize }
    var largestBody: Int { maximumFrameSize - headerSize }

    /// A one-byte field cannot announce more than 255; wider fields get frames
    /// over 255 B so their high bytes are not always zero.
    static func limit(forFieldSize fieldSize: Int) -> Int { fieldSize == 1 ? 200 : 300 }

    static let all: [LengthPrefixShape] = plain + [
        LengthPrefixShape(
            framer: .packetHeader(maximumFrameSize: limit(forFieldSize: 2)),
            fieldSize: 2, bigEndian: false, fieldOffset: 0, headerSize: 4, countsHeader: true,
            testDescription: "course PacketHeader (u16 LE size counting the 4 B header, then u16 id)"),
        LengthPrefixShape(
            framer: LengthPrefixedFramer(
                lengthFieldSize: 2, byteOrder: .bigEndian, lengthFieldOffset: 2, headerSize: 4,
                lengthIncludesHeader: true, maximumFrameSize: limit(forFieldSize: 2)),
            fieldSize: 2, bigEndian: true, fieldOffset: 2, headerSize: 4, countsHeader: true,
            testDescription: "u16 id, then u16 BE length counting the header"),
        LengthPrefixShape(
            framer: LengthPrefixedFramer(
                lengthFieldSize: 4, byteOrder: .littleEndian, lengthFieldOffset: 1, headerSize: 7,
                lengthIncludesHeader: false, maximumFrameSize: limit(forFieldSize: 4)),
            fieldSize: 4, bigEndian: false, fieldOffset: 1, headerSize: 7, countsHeader: false,
            testDescription: "u32 LE body length at offset 1 of a 7 B header"),
    ]

    /// Length field alone as the header: every size, order and count.
    static let plain: [LengthPrefixShape] = [1, 2, 4, 8].flatMap { fieldSize in
        [false, true].flatMap { bigEndian in
            [false, true].map { countsHeader in
                LengthPrefixShape(
                    framer: LengthPrefixedFramer(
                        lengthFieldSize: fieldSize, byteOrder: bigEndian ? .bigEndian : .littleEndian,
                        lengthIncludesHeader: countsHeader, maximumFrameSize: limit(forFieldSize: fieldSize)),
                    fieldSize: fieldSize, bigEndian: bigEndian, fieldOffset: 0, headerSize: fieldSize,
                    countsHeader: countsHeader,
                    testDescription: "u\(fieldSize * 8) \(bigEndian ? "BE" : "LE") counting "
                        + (countsHeader ? "the header too" : "the body"))
            }
        }
    }

    /// A header for a body of `bodyCount` bytes. The other header bytes are
    /// `tag`, `tag + 1`, … so a frame cut in the wrong place shows.
    func header(bodyCount: Int, tag: UInt8 = 0xE0) -> [UInt8] {
        var header = (0..<headerSize).map { tag &+ UInt8($0) }
        let length = UInt64(countsHeader ? headerSize + bodyCount : bodyCount)
        for index in 0..<fieldSize {
            let significance = bigEndian ? fieldSize - 1 - index : index  // 0: the least significant byte
            header[fieldOffset + index] = UInt8(truncatingIfNeeded: length >> (8 * significance))
        }
        return header
    }

    /// The frames as sent; the framer hands each one over whole, header included.
    func stream(of bodies: [[UInt8]]) -> EncodedStream {
        var stream = EncodedStream()
        for (index, body) in bodies.enumerated() {
            let frame = header(bodyCount: body.count, tag: UInt8(truncatingIfNeeded: index &* 41)) + body
            stream.append(frame, delivering: frame.count)
        }
        return stream
    }
}

/// A way to configure a `LineFramer` and end the lines sent to it.
struct LineShape: Sendable, CustomTestStringConvertible {
    enum Ending: Sendable {
        case delimiter
        case carriageReturnAndDelimiter
        /// CR + delimiter on even lines, the delimiter alone on odd ones.
        case alternating
    }

    static let maximumLineLength = 48
    static let carriageReturn = UInt8(ascii: "\r")

    let framer: LineFramer
    let delimiter: UInt8
    let stripsCarriageReturn: Bool
    let ending: Ending
    let testDescription: String

    static let all: [LineShape] = [
        LineShape(delimiter: "\n", stripsCarriageReturn: true, ending: .delimiter, "LF"),
        LineShape(delimiter: "\n", stripsCarriageReturn: true, ending: .carriageReturnAndDelimiter, "CRLF"),
        LineShape(delimiter: "\n", stripsCarriageReturn: true, ending: .alternating, "CRLF and LF mixed"),
        LineShape(delimiter: "\n", stripsCarriageReturn: false, ending: .delimiter, "LF, \\r kept"),
        LineShape(delimiter: "\n", stripsCarriageReturn: false, ending: .carriageReturnAndDelimiter, "CRLF, \\r kept"),
        LineShape(delimiter: "\0", stripsCarriageReturn: false, ending: .delimiter, "NUL-delimited"),
        LineShape(delimiter: ";", stripsCarriageReturn: true, ending: .alternating, "';'-delimited, \\r stripped"),
    ]

    private init(delimiter: Unicode.Scalar, stripsCarriageReturn: Bool, ending: Ending, _ description: String) {
        self.delimiter = UInt8(ascii: delimiter)
        self.stripsCarriageReturn = stripsCarriageReturn
        self.ending = ending
        self.testDescription = description
        // The default delimiter and stripping are what most shapes use.
        framer =
            delimiter == "\n" && stripsCarriageReturn
            ? LineFramer(maximumLineLength: Self.maximumLineLength)
            : LineFramer(
                delimiter: self.delimiter, maximumLineLength: Self.maximumLineLength,
                stripsCarriageReturn: stripsCarriageReturn)
    }

    /// Lines of up to the maximum length, drawn mostly from the bytes that
    /// matter (\r, \n, NUL, ';'), never holding this shape's delimiter.
    func lines(count: ClosedRange<Int>) -> Generator<[[UInt8]], some SendableSequenceType> {
        let alphabet = Array("a \r\n\0;".utf8).filter { $0 != delimiter } + [0xFF]
        return Gen.int(in: 0...alphabet.count - 1).map { alphabet[$0] }
            .array(of: 0...Self.maximumLineLength).array(of: count)
    }

    /// The lines as sent. Each is cut to fit the limit with its ending; the
    /// framer hands over the bytes before the delimiter, less one \r if it strips.
    func stream(of lines: [[UInt8]]) -> EncodedStream {
        var stream = EncodedStream()
        for (index, line) in lines.enumerated() {
            let withCarriageReturn =
                switch ending {
                case .delimiter: false
                case .carriageReturnAndDelimiter: true
                case .alternating: index.isMultiple(of: 2)
                }
            let beforeDelimiter =
                line.prefix(Self.maximumLineLength - (withCarriageReturn ? 1 : 0))
                + (withCarriageReturn ? [Self.carriageReturn] : [])
            let stripped = stripsCarriageReturn && beforeDelimiter.last == Self.carriageReturn
            stream.append(beforeDelimiter + [delimiter], delivering: beforeDelimiter.count - (stripped ? 1 : 0))
        }
        return stream
    }
}

// MARK: - Feeding a framer the way the reactor does

/// Frames as a peer sent them: the bytes on the wire and, for each frame, what
/// a framer must hand over and where the frame lies.
struct EncodedStream {
    private(set) var bytes: [UInt8] = []
    /// What the framer hands over for each frame, in order.
    private(set) var delivered: [[UInt8]] = []
    /// Where each frame's delivered bytes start in `bytes`.
    private(set) var starts: [Int] = []
    /// Where each frame ends in `bytes`, delimiter included: what the framer
    /// has consumed once it has handed the frame over.
    private(set) var ends: [Int] = []

    /// Appends a frame whose first `deliveredCount` bytes are what the framer hands over.
    mutating func append(_ encoded: [UInt8], delivering deliveredCount: Int) {
        starts.append(bytes.count)
        delivered.append(Array(encoded.prefix(deliveredCount)))
        bytes += encoded
        ends.append(bytes.count)
    }
}

/// Feeds `stream` to `framer` in pieces cut at `cuts`, as the reactor does:
/// what a call leaves unconsumed is handed back, followed by the next piece.
/// After every call, exactly the frames complete so far must have been handed
/// over, each as a slice of the given buffer at its place, and exactly their
/// bytes consumed. Returns the first deviation, or nil.
func deliveryProblem(_ framer: some Framer, _ stream: EncodedStream, cutAt cuts: [Int]) -> String? {
    var pending: [UInt8] = []
    var pendingOffset = 0  // where `pending` starts in the stream
    var deliveredCount = 0
    var fed = 0
    for pieceEnd in cuts.sorted() + [stream.bytes.count] {
        pending += stream.bytes[fed..<pieceEnd]
        fed = pieceEnd
        var problem: String?
        let outcome = pending.withUnsafeBytes { buffer in
            Result { () throws(FramingError) -> Int in
                try framer.frames(in: buffer) { frame in
                    if problem == nil {
                        problem = misplacement(
                            of: frame, number: deliveredCount, in: buffer, at: pendingOffset, of: stream)
                    }
                    deliveredCount += 1
                }
            }
        }
        if let problem { return "after \(fed) B: \(problem)" }
        let consumed: Int
        switch outcome {
        case .failure(let error): return "after \(fed) B: threw \(error)"
        case .success(let count): consumed = count
        }
        guard consumed <= pending.count else {
            return "after \(fed) B: consumed \(consumed) of \(pending.count) B given"
        }
        let complete = stream.ends.count(where: { $0 <= fed })
        guard deliveredCount == complete else {
            return "after \(fed) B: \(deliveredCount) frames handed over, \(complete) complete"
        }
        let completeBytes = complete == 0 ? 0 : stream.ends[complete - 1]
        guard pendingOffset + consumed == completeBytes else {
            return "after \(fed) B: consumed up to \(pendingOffset + consumed), frames end at \(completeBytes)"
        }
        pending.removeFirst(consumed)
        pendingOffset += consumed
    }
    return nil
}

/// Whether `frame`, the `index`th handed over, differs from what was sent or is
/// not the buffer's own bytes at the frame's place.
func misplacement(
    of frame: UnsafeRawBufferPointer, number index: Int, in buffer: UnsafeRawBufferPointer,
    at bufferOffset: Int, of stream: EncodedStream
) -> String? {
    guard index < stream.delivered.count else { return "frame \(index) handed over, \(stream.delivered.count) sent" }
    guard Array(frame) == stream.delivered[index] else {
        return "frame \(index) is \(Array(frame)), sent \(stream.delivered[index])"
    }
    let expectedOffset = stream.starts[index] - bufferOffset
    // An empty frame has no bytes whose place could be wrong.
    guard frame.isEmpty || frame.baseAddress.map({ $0 - buffer.baseAddress! }) == expectedOffset else {
        return "frame \(index) is not a slice of the buffer at offset \(expectedOffset)"
    }
    return nil
}

/// Cuts `stream` in two at every point, then feeds it one byte at a time.
func firstSplitProblem(_ framer: some Framer, _ stream: EncodedStream) -> String? {
    for cut in 0...stream.bytes.count {
        if let problem = deliveryProblem(framer, stream, cutAt: [cut]) { return "cut at \(cut): \(problem)" }
    }
    return deliveryProblem(framer, stream, cutAt: Array(0...stream.bytes.count)).map { "byte by byte: \($0)" }
}

/// Hands `bytes` to `framer` once: the frames it delivered and what it returned or threw.
func frameOnce(_ framer: some Framer, _ bytes: [UInt8]) -> (frames: [[UInt8]], outcome: Result<Int, FramingError>) {
    var frames: [[UInt8]] = []
    let outcome = bytes.withUnsafeBytes { buffer in
        Result { () throws(FramingError) -> Int in try framer.frames(in: buffer) { frames.append(Array($0)) } }
    }
    return (frames, outcome)
}

// MARK: - Inputs

/// Up to 24 cut points; each is taken modulo the stream length plus one.
let cuts = Gen.int(in: 0...1 << 16).array(of: 0...24)

/// Bodies of up to `largest` bytes each.
func bodies(upTo largest: Int, count: ClosedRange<Int>) -> Generator<[[UInt8]], some SendableSequenceType> {
    zip(Gen.int(in: 0...largest), Gen.uint8()).map { count, seed in pattern(count: count, seed: seed) }.array(of: count)
}

/// Bytes that differ from their neighbours and from other seeds' bytes.
func pattern(count: Int, seed: UInt8) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 7) &+ seed &* 13 }
}

func bigEndian(_ value: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: value >> (56 - 8 * $0)) } }
func littleEndian(_ value: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: value >> (8 * $0)) } }
