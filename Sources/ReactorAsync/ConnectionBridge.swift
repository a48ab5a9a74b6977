import Reactor

/// Where a connection's loop and its async consumer meet: the connection's
/// handler, which queues what arrives for `AsyncConnection.Inbound` and
/// tells `AsyncConnection.Outbound` when it may write again.
///
/// - Inbound is bounded: above `limits.highWaterMark` of bytes not yet
///   taken by the consumer, reading pauses at the socket, and resumes once
///   the consumer has taken the queue down to the low-water mark. Bytes
///   that arrive before the consumer starts wait here: none is lost.
/// - The peer's FIN (or a graceful shutdown) ends the inbound sequence
///   after what was queued; the connection stays open for the consumer's
///   answers until it closes it (`connectionInputEnded` returns true).
///
/// @unchecked Sendable: the handler callbacks run on the loop's thread; all
/// state they share with the consumer's threads is behind `state`'s lock.
final class ConnectionBridge: ConnectionHandler, @unchecked Sendable {
    let framer: (any Framer)?
    let limits: InboundLimits
    private let accepted: (AsyncConnection) -> Void

    struct State {
        var connection: Connection?
        var chunks: [[UInt8]] = []
        var head = 0
        var queuedBytes = 0
        /// Reading is paused because the consumer is behind.
        var paused = false
        var reader: UnsafeContinuation<[UInt8]?, any Error>?
        var writer: UnsafeContinuation<Void, any Error>?
        var inputEnded = false
        var closed: CloseReason?
        var cancelled = false
        var writable = true
    }
    let state = Locked(State())

    init(framer: (any Framer)?, limits: InboundLimits, accepted: @escaping (AsyncConnection) -> Void) {
        self.framer = framer
        self.limits = limits
        self.accepted = accepted
    }

    // MARK: The loop's side

    func connectionOpened(_ connection: Connection) {
        state.withLock { $0.connection = connection }
        accepted(AsyncConnection(connection: connection, bridge: self))
    }

    func connection(_ connection: Connection, received bytes: UnsafeRawBufferPointer) -> Int {
        guard let framer else {
            arrived(Array(bytes), on: connection)
            return bytes.count
        }
        return framer.frames(in: bytes, of: connection) { frame in arrived(Array(frame), on: connection) }
    }

    private func arrived(_ chunk: [UInt8], on connection: Connection) {
        let (reader, pause): (UnsafeContinuation<[UInt8]?, any Error>?, Bool) = state.withLock { state in
            if let reader = state.reader {
                state.reader = nil
                return (reader, false)
            }
            state.chunks.append(chunk)
            state.queuedBytes += chunk.count
            guard !state.paused, state.queuedBytes > limits.highWaterMark else { return (nil, false) }
            state.paused = true
            return (nil, true)
        }
        if let reader { reader.resume(returning: chunk) }
        if pause { connection.pauseReading() }
    }

    func connectionInputEnded(_ connection: Connection) -> Bool {
        let reader = state.withLock { state in
            state.inputEnded = true
            return state.chunks.count == state.head ? state.takeReader() : nil
        }
        reader?.resume(returning: nil)
        return true
    }

    func connectionWritabilityChanged(_ connection: Connection, isWritable: Bool) {
        let writer = state.withLock { state in
            state.writable = isWritable
            return isWritable ? state.takeWriter() : nil
        }
        writer?.resume()
    }

    func connectionClosed(_ connection: Connection, reason: CloseReason) {
        let (reader, writer) = state.withLock { state in
            state.closed = reason
            state.connection = nil
            return (state.chunks.count == state.head ? state.takeReader() : nil, state.takeWriter())
        }
        reader?.resume(returning: nil)
        writer?.resume(throwing: ConnectionClosedError(reason: reason))
    }

    // MARK: The consumer's side (any thread)

    /// The next chunk or frame, nil once the input has ended (FIN, close).
    /// Cancellation reaches it through `cancel()` (see `executeThenClose`):
    /// a cancellation handler per call would cost more than the read.
    func next() async throws -> [UInt8]? {
        if let ready = try state.withLock({ $0.step(limits) }).value() { return ready }
        return try await withUnsafeThrowingContinuation { continuation in
            let step = state.withLock { state in
                let step = state.step(limits)
                if case .wait = step { state.reader = continuation }
                return step
            }
            do {
                if let ready = try step.value() { continuation.resume(returning: ready) }
            } catch {
                continuation.resume(throwing: error)
            }
        }
    }

    /// The task consuming this connection was cancelled: the connection
    /// closes (after flushing what was written), and the consumer's waits end.
    func cancel() {
        let (reader, writer, connection) = state.withLock { state in
            state.cancelled = true
            return (state.takeReader(), state.takeWriter(), state.connection)
        }
        reader?.resume(throwing: CancellationError())
        writer?.resume(throwing: CancellationError())
        connection?.close()
    }

    /// Waits while the connection's pending output is above its high-water
    /// mark; throws once it is closed.
    func waitUntilWritable() async throws {
        if let ready = writeReadiness() { return try ready.get() }
        try await withUnsafeThrowingContinuation { (continuation: UnsafeContinuation<Void, any Error>) in
            let ready: Result<Void, any Error>? = state.withLock { state in
                if let settled = state.writeReadiness { return settled }
                state.writer = continuation
                return nil
            }
            if let ready { continuation.resume(with: ready) }
        }
    }

    private func writeReadiness() -> Result<Void, any Error>? {
        state.withLock { $0.writeReadiness }
    }
}

extension ConnectionBridge.State {
    mutating func takeReader() -> UnsafeContinuation<[UInt8]?, any Error>? {
        defer { reader = nil }
        return reader
    }

    mutating func takeWriter() -> UnsafeContinuation<Void, any Error>? {
        defer { writer = nil }
        return writer
    }

    /// What the consumer's `next()` finds.
    enum Step {
        /// A chunk; reading resumes on `resuming`, if set, now that the queue is low.
        case chunk([UInt8], resuming: Connection?)
        case end
        case cancelled
        case wait

        /// The chunk (reading resumed if due), `.some(nil)` at the end, nil to wait.
        func value() throws -> [UInt8]?? {
            switch self {
            case .chunk(let chunk, let connection):
                connection?.resumeReading()
                return .some(chunk)
            case .end: return .some(nil)
            case .cancelled: throw CancellationError()
            case .wait: return nil
            }
        }
    }

    /// Takes the first queued chunk, if any.
    mutating func step(_ limits: InboundLimits) -> Step {
        if cancelled { return .cancelled }
        guard head < chunks.count else { return inputEnded || closed != nil ? .end : .wait }
        let chunk = chunks[head]
        chunks[head] = []
        head += 1
        queuedBytes -= chunk.count
        if head == chunks.count {
            chunks.removeAll(keepingCapacity: true)
            head = 0
        } else if head >= 64, head * 2 >= chunks.count {
            chunks.removeFirst(head)
            head = 0
        }
        guard paused, queuedBytes <= limits.lowWaterMark else { return .chunk(chunk, resuming: nil) }
        paused = false
        return .chunk(chunk, resuming: connection)
    }

    /// Writing may go on (success) or never again (failure); nil: wait.
    var writeReadiness: Result<Void, any Error>? {
        if cancelled { return .failure(CancellationError()) }
        if let closed { return .failure(ConnectionClosedError(reason: closed)) }
        return writable ? .success(()) : nil
    }
}

/// What a write to, or a wait on, a closed connection throws.
public struct ConnectionClosedError: Error, Sendable, CustomStringConvertible {
    /// Why the connection closed.
    public let reason: CloseReason
    /// `connection closed: ` and the reason.
    public var description: String { "connection closed: \(reason)" }
}

/// Bounds on what a connection holds for its consumer before reading pauses.
public struct InboundLimits: Sendable {
    /// Queued bytes above which reading pauses at the socket.
    public var highWaterMark: Int
    /// Queued bytes at or below which it resumes.
    public var lowWaterMark: Int

    /// Limits with `lowWaterMark` below `highWaterMark`.
    public init(highWaterMark: Int = 256 * 1024, lowWaterMark: Int = 64 * 1024) {
        precondition(lowWaterMark >= 0 && lowWaterMark < highWaterMark)
        self.highWaterMark = highWaterMark
        self.lowWaterMark = lowWaterMark
    }
}
