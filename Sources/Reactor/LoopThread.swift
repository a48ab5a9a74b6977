import CEpoll
#if canImport(Glibc)
import Glibc
#endif

/// A POSIX thread running one closure: what each event loop runs on. Plain
/// pthreads keep the library free of Foundation.
public struct LoopThread: Sendable {
    private let thread: pthread_t

    private final class Body {
        let name: String
        let run: @Sendable () -> Void
        init(name: String, _ run: @escaping @Sendable () -> Void) {
            self.name = String(name.prefix(15)) // the kernel's limit, 16 B with the NUL
            self.run = run
        }
    }

    /// Starts `body` on a new thread named `name` (visible in top -H and perf).
    public init(name: String, _ body: @escaping @Sendable () -> Void) throws(SystemError) {
        let context = Unmanaged.passRetained(Body(name: name, body)).toOpaque()
        var thread = pthread_t()
        let status = pthread_create(&thread, nil, { context in
            let body = Unmanaged<Body>.fromOpaque(context!).takeRetainedValue()
            _ = cepoll_name_current_thread(body.name)
            body.run()
            return nil
        }, context)
        guard status == 0 else {
            Unmanaged<Body>.fromOpaque(context).release()
            throw SystemError("pthread_create", code: status)
        }
        self.thread = thread
    }

    /// Waits for the thread to finish.
    public func join() {
        pthread_join(thread, nil)
    }
}
