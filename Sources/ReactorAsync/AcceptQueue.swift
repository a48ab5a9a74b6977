import Reactor

/// Accepted connections on their way from the loops to the one task that
/// iterates `AsyncServer.connections`: a FIFO behind a lock, and that
/// task's continuation while it waits. Ends when the server shuts down.
final class AcceptQueue: Sendable {
    private struct State {
        var ready: [AsyncConnection] = []
        var head = 0
        var waiter: UnsafeContinuation<AsyncConnection?, Never>?
        var finished = false
    }
    private let state = Locked(State())

    /// Any thread (a loop's, as a connection opens).
    func push(_ connection: AsyncConnection) {
        let waiter: UnsafeContinuation<AsyncConnection?, Never>? = state.withLock { state in
            guard !state.finished else { return nil }
            if let waiter = state.waiter {
                state.waiter = nil
                return waiter
            }
            state.ready.append(connection)
            return nil
        }
        waiter?.resume(returning: connection)
    }

    /// No connection comes any more: the waiting iterator ends.
    func finish() {
        let waiter = state.withLock { state in
            state.finished = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: nil)
    }

    /// The next connection; nil once finished, or when the waiting task is cancelled.
    func next() async -> AsyncConnection? {
        await withTaskCancellationHandler {
            await wait()
        } onCancel: {
            let waiter = state.withLock { state in
                defer { state.waiter = nil }
                return state.waiter
            }
            waiter?.resume(returning: nil)
        }
    }

    private func wait() async -> AsyncConnection? {
        await withUnsafeContinuation { continuation in
            let ready: AsyncConnection?? = state.withLock { state in
                if state.head < state.ready.count {
                    let connection = state.ready[state.head]
                    state.head += 1
                    if state.head == state.ready.count {
                        state.ready.removeAll(keepingCapacity: true)
                        state.head = 0
                    }
                    return .some(connection)
                }
                // Under the lock: a cancellation handler either ran before (and the
                // task shows cancelled) or runs after and finds the waiter.
                if state.finished || Task.isCancelled { return .some(nil) }
                state.waiter = continuation
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }
}
