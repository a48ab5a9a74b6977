import CEpoll
#if canImport(Glibc)
import Glibc
#endif

/// A POSIX thread running one closure: what each event loop runs on. Plain
/// pthreads keep the library free of Foundation.
public struct LoopThread: Sendable {
    private let thread: pthread_t

    private final class Body {
        let run: @Sendable () -> Void
        init(_ run: @escaping @Sendable () -> Void) { self.run = run }
    }

    /// Starts `body` on a new thread named `name` (visible in top -H and perf).
    public init(name: String, _ body: @escaping @Sendable () -> Void) throws(SystemError) {
        let context = Unmanaged.passRetained(Body(body)).toOpaque()
        var thread = pthread_t()
        let status = pthread_create(&thread, nil, { context in
            let body = Unmanaged<Body>.fromOpaque(context!).takeRetainedValue()
            body.run()
            return nil
        }, context)
        guard status == 0 else {
            Unmanaged<Body>.fromOpaque(context).release()
            throw SystemError("pthread_create", code: status)
        }
        _ = cepoll_set_thread_name(thread, String(name.prefix(15)))
        self.thread = thread
    }

    /// Waits for the thread to finish.
    public func join() {
        pthread_join(thread, nil)
    }
}
