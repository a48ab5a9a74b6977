#if canImport(Glibc)
import Glibc
#endif

/// What every connection sends, as a pure function of (connection, byte offset
/// in its stream): so an echo is verified with one `memcmp` against bytes that
/// already exist, and nothing is generated, copied or allocated per round.
///
/// One read-only buffer holds `period` bytes followed by a copy of its first
/// `slack` bytes, so any run of up to `slack` bytes starting anywhere in the
/// period is contiguous: a write goes straight from the pattern to the socket.
/// Connection `id` starts at its own phase in the period, and since the period
/// is prime, consecutive rounds of one connection start at different phases
/// too: a byte echoed on the wrong connection, or from the wrong round, shows.
///
/// Shared by every loop thread; `@unchecked Sendable` because the buffer is
/// written only in `init` and is immutable (and never freed) afterwards.
struct Pattern: @unchecked Sendable {
    /// The longest contiguous slice: writes and compares are split into runs of at most this.
    static let slack = 256 * 1024
    /// The flood period: a prime, so it never lines up with round or chunk sizes.
    static let floodPeriod = 65_521

    private let base: UnsafeMutableRawPointer
    let period: Int
    /// How far apart consecutive connections start (0: all alike, as in ping mode).
    private let phaseStride: Int

    private init(period: Int, phaseStride: Int, fill: (Int) -> UInt8) {
        self.period = period
        self.phaseStride = phaseStride
        let length = period + Self.slack
        base = .allocate(byteCount: length, alignment: 64)
        for index in 0..<length { base.storeBytes(of: fill(index % period), toByteOffset: index, as: UInt8.self) }
    }

    /// Pseudo-random bytes (xorshift): every connection and round distinct.
    static func flood() -> Pattern {
        var bytes = [UInt8](repeating: 0, count: floodPeriod)
        var state: UInt32 = 0x9E37_79B9
        for index in bytes.indices {
            state ^= state << 13
            state ^= state >> 17
            state ^= state << 5
            bytes[index] = UInt8(truncatingIfNeeded: state >> 11)
        }
        return Pattern(period: floodPeriod, phaseStride: 40_503) { bytes[$0] }
    }

    /// The course's message: "Hello world" in a `size`-byte buffer padded with
    /// zeros (C's `char buffer[100] = "Hello world";`), the same every message.
    static func hello(size: Int) -> Pattern {
        let text = Array("Hello world".utf8)
        return Pattern(period: size, phaseStride: 0) { $0 < text.count ? text[$0] : 0 }
    }

    /// Where connection `id`'s stream starts in the period.
    func phase(for id: Int) -> Int {
        (id &* phaseStride) % period
    }

    /// The `count` bytes (at most `slack`) at `offset` of a stream starting at `phase`.
    @inline(__always)
    func bytes(phase: Int, offset: UInt64, count: Int) -> UnsafeRawBufferPointer {
        let start = Int((UInt64(phase) &+ offset) % UInt64(period))
        return UnsafeRawBufferPointer(start: base + start, count: count)
    }

    /// Whether `received` equals the stream's bytes at `offset`.
    @inline(__always)
    func matches(_ received: UnsafeRawBufferPointer, phase: Int, offset: UInt64) -> Bool {
        var done = 0
        while done < received.count {
            let run = min(received.count - done, Self.slack)
            let expected = bytes(phase: phase, offset: offset &+ UInt64(done), count: run)
            if memcmp(received.baseAddress! + done, expected.baseAddress!, run) != 0 { return false }
            done += run
        }
        return true
    }

    /// The index in `received` of the first byte that differs, if any. Error path only.
    func firstMismatch(in received: UnsafeRawBufferPointer, phase: Int, offset: UInt64) -> (index: Int, expected: UInt8)? {
        for index in 0..<received.count {
            let expected = bytes(phase: phase, offset: offset &+ UInt64(index), count: 1)[0]
            if received[index] != expected { return (index, expected) }
        }
        return nil
    }
}
