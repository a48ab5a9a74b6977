@testable import Reactor
import TestSupport
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The output queue on its own: what `gather` points a `sendmsg` at is read
/// back byte by byte, so every check is on the bytes that would go out.
@Suite("OutputQueue")
struct OutputQueueTests {
    /// The ranges `gather` hands out, at most `capacity` of them.
    private static func gathered(_ queue: OutputQueue, capacity: Int = 1_024) -> [UnsafeRawBufferPointer] {
        let vectors = UnsafeMutablePointer<iovec>.allocate(capacity: capacity)
        defer { vectors.deallocate() }
        let count = queue.gather(into: vectors, capacity: capacity)
        return (0..<count).map { UnsafeRawBufferPointer(start: vectors[$0].iov_base, count: vectors[$0].iov_len) }
    }

    /// Everything the queue would send, read through its gathered ranges.
    private static func contents(_ queue: OutputQueue) -> [UInt8] {
        gathered(queue).flatMap { Array($0) }
    }

    private static func appendCopy(_ bytes: [UInt8], to queue: OutputQueue) {
        bytes.withUnsafeBytes { queue.append(copying: $0) }
    }

    @Test func smallCopiesCoalesceIntoOneChunkOfTheQueuesOwn() {
        let queue = OutputQueue()
        var expected: [UInt8] = []
        for piece in 0..<10 {
            let bytes = patternBytes(count: 100, seed: UInt64(piece) + 1)
            bytes.withUnsafeBytes { source in
                queue.append(copying: source)
                // A copy: the queue does not point into the caller's memory.
                #expect(Self.gathered(queue).allSatisfy { range in
                    range.baseAddress! + range.count <= source.baseAddress! || range.baseAddress! >= source.baseAddress! + source.count
                })
            }
            expected += bytes
        }
        #expect(queue.byteCount == 1_000)
        #expect(!queue.isEmpty)
        #expect(Self.gathered(queue).count == 1, "ten small copies share one chunk")
        #expect(firstDifference(Self.contents(queue), expected) == nil)
    }

    /// Copies fill the current chunk to the brim before a new one starts.
    @Test func copiesFillAChunkBeforeStartingTheNext() {
        let queue = OutputQueue()
        var expected: [UInt8] = []
        for piece in 0..<200 {
            let bytes = patternBytes(count: 100, seed: UInt64(piece) + 7)
            Self.appendCopy(bytes, to: queue)
            expected += bytes
        }
        let ranges = Self.gathered(queue)
        #expect(ranges.count == 2)
        #expect(ranges[0].count >= OutputQueue.chunkSize, "the first chunk is full (the allocator may round it up)")
        #expect(ranges[0].count < 20_000)
        #expect(ranges.map(\.count).reduce(0, +) == 20_000)
        #expect(firstDifference(Self.contents(queue), expected) == nil)
        #expect(queue.byteCount == 20_000)
    }

    /// A growing backlog gets larger chunks: 1 MB in 100-byte writes is a
    /// handful of allocations, not one per 16 KiB.
    @Test func chunksGrowWithTheBacklog() {
        let queue = OutputQueue()
        var expected: [UInt8] = []
        for piece in 0..<10_000 {
            let bytes = patternBytes(count: 100, seed: UInt64(piece) + 11)
            Self.appendCopy(bytes, to: queue)
            expected += bytes
        }
        let ranges = Self.gathered(queue)
        #expect(ranges.count <= 8, "\(ranges.map(\.count))")
        #expect(firstDifference(Self.contents(queue), expected) == nil)
    }

    /// A write larger than a chunk: it tops up the current chunk, and the rest
    /// goes into one chunk of its own size, not into many small ones.
    @Test func writeLargerThanAChunk() {
        let queue = OutputQueue()
        let large = patternBytes(count: 40_000, seed: 3)
        Self.appendCopy(large, to: queue)
        #expect(Self.gathered(queue).map(\.count) == [40_000])
        #expect(firstDifference(Self.contents(queue), large) == nil)

        let topped = OutputQueue()
        let small = patternBytes(count: 100, seed: 4)
        Self.appendCopy(small, to: topped)
        Self.appendCopy(large, to: topped)
        let ranges = Self.gathered(topped)
        #expect(ranges.count == 2)
        #expect(ranges[0].count >= OutputQueue.chunkSize)
        #expect(ranges[0].count + ranges[1].count == 40_100)
        #expect(firstDifference(Self.contents(topped), small + large) == nil)
        #expect(topped.byteCount == 40_100)
    }

    /// A shared buffer is queued by reference, from the offset given.
    @Test func sharedBufferIsReferencedFromItsOffset() {
        let bytes = patternBytes(count: 1_000, seed: 5)
        let buffer = SharedBuffer(bytes)
        let queue = OutputQueue()
        queue.append(buffer, from: 300)
        #expect(queue.byteCount == 700)
        let ranges = Self.gathered(queue)
        #expect(ranges.count == 1)
        #expect(ranges.first?.baseAddress == UnsafeRawPointer(buffer.storage.bytes + 300), "no copy")
        #expect(firstDifference(Self.contents(queue), Array(bytes[300...])) == nil)

        queue.append(buffer, from: buffer.count) // nothing left to send from there
        queue.append(buffer, from: 0)
        #expect(queue.byteCount == 1_700)
        #expect(Self.gathered(queue).count == 2)
        #expect(firstDifference(Self.contents(queue), Array(bytes[300...]) + bytes) == nil)
    }

    @Test func emptyAppendsAddNothing() {
        let queue = OutputQueue()
        queue.append(copying: UnsafeRawBufferPointer(start: nil, count: 0))
        queue.append(SharedBuffer([]))
        queue.append(SharedBuffer([1, 2, 3]), from: 3)
        #expect(queue.isEmpty)
        #expect(queue.byteCount == 0)
        #expect(Self.gathered(queue).isEmpty)
    }

    /// Copies after a shared buffer go after it, never back into the chunk
    /// before it: the bytes leave in the order they were written.
    @Test func orderIsKeptAcrossCopiesAndSharedBuffers() {
        let a = patternBytes(count: 100, seed: 10)
        let b = patternBytes(count: 5_000, seed: 11)
        let c = patternBytes(count: 50, seed: 12)
        let d = patternBytes(count: 60, seed: 13)
        let e = patternBytes(count: 300, seed: 14)
        let f = patternBytes(count: 7, seed: 15)
        let queue = OutputQueue()
        Self.appendCopy(a, to: queue)
        queue.append(SharedBuffer(b))
        Self.appendCopy(c, to: queue)
        Self.appendCopy(d, to: queue)
        queue.append(SharedBuffer(e), from: 10)
        Self.appendCopy(f, to: queue)
        #expect(Self.gathered(queue).map(\.count) == [100, 5_000, 110, 290, 7])
        #expect(firstDifference(Self.contents(queue), a + b + c + d + Array(e[10...]) + f) == nil)
        #expect(queue.byteCount == 100 + 5_000 + 110 + 290 + 7)
    }

    @Test func gatherIsCappedByCapacity() {
        let queue = OutputQueue()
        let pieces = (0..<10).map { patternBytes(count: 10 + $0, seed: UInt64($0) + 20) }
        for piece in pieces { queue.append(SharedBuffer(piece)) }
        #expect(Self.gathered(queue).count == 10)
        let firstThree = Self.gathered(queue, capacity: 3)
        #expect(firstThree.map { Array($0) } == Array(pieces.prefix(3)))
        #expect(Self.gathered(queue, capacity: 1).map { Array($0) } == [pieces[0]])
        #expect(Self.gathered(queue, capacity: 0).isEmpty)

        // From where the sent bytes end: the middle of the third range.
        queue.consume(10 + 11 + 5)
        let next = Self.gathered(queue, capacity: 3)
        #expect(next.map { Array($0) } == [Array(pieces[2][5...]), pieces[3], pieces[4]])
        #expect(Self.gathered(queue, capacity: OutputQueue.maximumGather).count == 8)
    }

    @Test func consumeWithinASegment() {
        let bytes = patternBytes(count: 1_000, seed: 30)
        let queue = OutputQueue()
        Self.appendCopy(bytes, to: queue)
        queue.consume(0)
        #expect(firstDifference(Self.contents(queue), bytes) == nil)
        queue.consume(1)
        queue.consume(299)
        #expect(queue.byteCount == 700)
        #expect(Self.gathered(queue).map(\.count) == [700])
        #expect(firstDifference(Self.contents(queue), Array(bytes[300...])) == nil)
        // More copies still join the partly sent chunk.
        let more = patternBytes(count: 10, seed: 31)
        Self.appendCopy(more, to: queue)
        #expect(Self.gathered(queue).count == 1)
        #expect(firstDifference(Self.contents(queue), Array(bytes[300...]) + more) == nil)
    }

    @Test func consumeAcrossSegmentBoundaries() {
        let pieces = (0..<5).map { patternBytes(count: 100, seed: UInt64($0) + 40) }
        let all = pieces.flatMap { $0 }
        let queue = OutputQueue()
        for piece in pieces { queue.append(SharedBuffer(piece)) }

        queue.consume(100) // exactly the first segment
        #expect(Self.gathered(queue).count == 4)
        #expect(firstDifference(Self.contents(queue), Array(all[100...])) == nil)

        queue.consume(250) // two and a half segments
        #expect(Self.gathered(queue).map(\.count) == [50, 100])
        #expect(firstDifference(Self.contents(queue), Array(all[350...])) == nil)
        #expect(queue.byteCount == 150)

        queue.consume(150) // the rest
        #expect(queue.isEmpty)
        #expect(queue.byteCount == 0)
        #expect(Self.gathered(queue).isEmpty)

        // An emptied queue is as good as new.
        let again = patternBytes(count: 20, seed: 49)
        Self.appendCopy(again, to: queue)
        #expect(firstDifference(Self.contents(queue), again) == nil)
        #expect(queue.byteCount == 20)
    }

    /// A storage the queue references but the test does not.
    private final class Weak {
        weak var storage: ByteStorage?
    }

    /// Queues `count` shared buffers of 10 bytes (bytes `10 * i ..< 10 * i + 10`
    /// of the returned stream), keeping no reference to them here.
    private static func appendSharedBuffers(_ count: Int, to queue: OutputQueue) -> (stream: [UInt8], storages: [Weak]) {
        var stream: [UInt8] = []
        var storages: [Weak] = []
        for index in 0..<count {
            let bytes = patternBytes(count: 10, seed: UInt64(index) + 100)
            let buffer = SharedBuffer(bytes)
            let weak = Weak()
            weak.storage = buffer.storage
            queue.append(buffer)
            stream += bytes
            storages.append(weak)
        }
        return (stream, storages)
    }

    /// Many segments sent a few bytes at a time (within segments and across
    /// their boundaries): the sent ones are dropped in bulk (their buffers
    /// released), and what is left, and what is appended meanwhile, still
    /// comes out whole and in order.
    @Test func consumedSegmentsAreCompactedAway() {
        let queue = OutputQueue()
        let (queued, storages) = Self.appendSharedBuffers(100, to: queue)
        var stream = queued
        #expect(storages.allSatisfy { $0.storage != nil }, "the queue holds every buffer")
        var sent = 0
        var step = 0
        while sent < 900 {
            let now = min(7, 900 - sent)
            queue.consume(now)
            sent += now
            if step % 10 == 0 {
                // Copies appended while sending join a chunk of their own at the end.
                let copy = patternBytes(count: 3, seed: UInt64(step) + 500)
                Self.appendCopy(copy, to: queue)
                stream += copy
            }
            step += 1
            #expect(firstDifference(Self.contents(queue), stream[sent...]) == nil, "after \(sent) bytes sent")
            #expect(queue.byteCount == stream.count - sent)
        }
        #expect(storages.prefix(50).allSatisfy { $0.storage == nil }, "sent buffers are released, not kept until the queue empties")
        #expect(storages.suffix(10).allSatisfy { $0.storage != nil }, "unsent buffers are still referenced")

        // The three-byte copies appended after the last shared buffer share one chunk.
        let tail = Self.gathered(queue)
        #expect(tail.count == 11)
        #expect(tail.last?.count == 3 * ((step + 9) / 10))

        queue.consume(queue.byteCount)
        #expect(queue.isEmpty)
        #expect(storages.allSatisfy { $0.storage == nil })
    }
}
