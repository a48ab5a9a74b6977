#if canImport(Glibc)
import Glibc
#endif

/// A value guarded by a pthread mutex: what other threads share with a loop.
///
/// Not the Synchronization module's `Mutex`: its futex-based lock lives in
/// uninstrumented code, so ThreadSanitizer sees no ordering between the
/// threads that take it and reports every access it guards as a race.
/// ThreadSanitizer understands `pthread_mutex_lock`, and `make test-sanitize`
/// must mean something.
public final class Locked<Value>: @unchecked Sendable {
    // @unchecked Sendable: `value` is touched only between lock and unlock.
    // @usableFromInline: `withLock` is inlined into other modules, so a lock
    // taken per event (ReactorAsync) is a call to pthread, not a generic thunk.
    @usableFromInline let mutex: UnsafeMutablePointer<pthread_mutex_t>
    // @exclusivity(unchecked): only touched with the mutex held, so never in overlapping accesses.
    @usableFromInline @exclusivity(unchecked) var value: Value

    /// Guards `value` with a new mutex.
    public init(_ value: Value) {
        mutex = .allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        pthread_mutex_init(mutex, nil)
        self.value = value
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Runs `body` with the value, the lock held.
    @inlinable
    public func withLock<Result>(_ body: (inout Value) throws -> Result) rethrows -> Result {
        pthread_mutex_lock(mutex)
        defer { pthread_mutex_unlock(mutex) }
        return try body(&value)
    }
}
