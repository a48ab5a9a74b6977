import Reactor
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

extension EventLoop {
    /// Runs `body` on this loop's thread and returns its result to the
    /// calling (test) thread: how a test reads state that may only be read
    /// on the loop (`Connection.isWritable`, `pendingOutputBytes`...). It is
    /// also a barrier: tasks run in order, so everything this thread asked
    /// of the loop before has been done. Throws if the loop does not run it
    /// within `seconds`.
    public func onLoop<Result: Sendable>(
        within seconds: Double = 10, _ body: @escaping @Sendable () -> Result
    ) throws -> Result {
        let result = Mutex<Result?>(nil)
        execute { result.withLock { $0 = body() } }
        guard eventually(within: seconds, { result.withLock { $0 != nil } }) else {
            throw TestFailure("the loop did not run the task within \(seconds) s")
        }
        return result.withLock { $0! }
    }
}

/// Where `actual` first differs from `expected`, or nil when they are equal:
/// a failure message that names the byte instead of printing megabytes.
/// (Compared with memcmp: a byte loop in a debug build is slow for megabytes.)
public func firstDifference(_ actual: some Collection<UInt8>, _ expected: some Collection<UInt8>) -> String? {
    let actual = Array(actual)
    let expected = Array(expected)
    let common = min(actual.count, expected.count)
    let equalPrefix = actual.withUnsafeBytes { a in
        expected.withUnsafeBytes { e in common == 0 || memcmp(a.baseAddress!, e.baseAddress!, common) == 0 }
    }
    if equalPrefix {
        return actual.count == expected.count ? nil : "\(actual.count) bytes, expected \(expected.count) (equal up to there)"
    }
    let index = (0..<common).first { actual[$0] != expected[$0] }!
    return "byte \(index): \(actual[index]) instead of \(expected[index]) (\(actual.count) bytes, expected \(expected.count))"
}
