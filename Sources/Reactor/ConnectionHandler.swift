/// What a protocol implements to live on a connection: six callbacks, all
/// made on the connection's loop thread. Only `received` is required.
///
/// ```swift
/// final class Echo: ConnectionHandler {
///     func connection(_ connection: Connection, received bytes: UnsafeRawBufferPointer) -> Int {
///         connection.write(bytes)
///         return bytes.count
///     }
/// }
/// ```
public protocol ConnectionHandler: AnyObject {
    /// The connection is established and registered; it may write at once.
    func connectionOpened(_ connection: Connection)
    /// Bytes arrived. They are lent for the call only (usually the loop's
    /// read buffer). Returns how many it consumed: the rest (a partial
    /// frame) is kept for this connection and handed back, followed by the
    /// next bytes read, on the next call. What it leaves, it bounds: the
    /// framers refuse a frame over their maximum as soon as its header says so.
    func connection(_ connection: Connection, received bytes: UnsafeRawBufferPointer) -> Int
    /// Everything queued by `write` has been handed to the kernel.
    func connectionDrained(_ connection: Connection)
    /// Nothing more will be read: the peer sent FIN, or the server is
    /// shutting down gracefully. Returns whether the handler keeps the
    /// connection open to write until it calls `close()`, as one that
    /// answers later does (ReactorAsync). The default, false, closes it once
    /// the output is flushed: what was read is answered by then.
    func connectionInputEnded(_ connection: Connection) -> Bool
    /// Pending output went above the loop's high-water mark (`false`: the
    /// peer is not keeping up, and reading from it is paused), or drained to
    /// the low-water mark again (`true`). Told after the write that crossed,
    /// never from inside it.
    func connectionWritabilityChanged(_ connection: Connection, isWritable: Bool)
    /// The connection is closed and its fd released; called exactly once.
    func connectionClosed(_ connection: Connection, reason: CloseReason)
}

extension ConnectionHandler {
    /// Does nothing: a handler that has nothing to do on open need not implement it.
    public func connectionOpened(_ connection: Connection) {}
    /// Does nothing: a handler that does not wait for its output to drain need not implement it.
    public func connectionDrained(_ connection: Connection) {}
    /// Returns false: the connection closes once what was read is answered and flushed.
    public func connectionInputEnded(_ connection: Connection) -> Bool { false }
    /// Does nothing: reading pauses and resumes with the marks all the same.
    public func connectionWritabilityChanged(_ connection: Connection, isWritable: Bool) {}
    /// Does nothing: a handler that keeps nothing per connection need not implement it.
    public func connectionClosed(_ connection: Connection, reason: CloseReason) {}
}

/// Why a connection closed.
public enum CloseReason: Sendable, Equatable, CustomStringConvertible {
    /// The peer sent FIN and everything received was answered and flushed.
    case peerClosed
    /// The peer reset the connection (ECONNRESET, EPIPE).
    case reset
    /// Nothing was received for the configured idle timeout.
    case idleTimeout
    /// `close()` was called on this side.
    case local
    /// The server or loop shut down.
    case shutdown
    /// Any other failure, with the call and errno (e.g. `connect` refused).
    case error(SystemError)
    /// The peer broke the protocol's framing: a frame over the limit, a
    /// length that overflows, no delimiter within the line limit.
    case framing(FramingError)
    /// The peer broke the protocol in a way the handler found (an unknown
    /// packet kind, a body of the wrong length); the text says how.
    case protocolError(String)
    /// The handler closed a peer that did not keep up with its output
    /// (`pendingBytes` queued when it gave up on it).
    case slowPeer(pendingBytes: Int)

    /// A short text for logs: `peer FIN`, `reset`, `idle timeout`, `closed locally`,
    /// `shutdown`, the error's own text, `protocol error: ...`, or
    /// `slow peer: N B of output pending`.
    public var description: String {
        switch self {
        case .peerClosed: "peer FIN"
        case .reset: "reset"
        case .idleTimeout: "idle timeout"
        case .local: "closed locally"
        case .shutdown: "shutdown"
        case .error(let error): "\(error)"
        case .framing(let error): "\(error)"
        case .protocolError(let text): "protocol error: \(text)"
        case .slowPeer(let pendingBytes): "slow peer: \(pendingBytes) B of output pending"
        }
    }

    /// The kind of reason, without its details: what closes are counted by
    /// (`LoopStatistics.Snapshot.closedByKind`).
    public var kind: Kind {
        switch self {
        case .peerClosed: .peerClosed
        case .reset: .reset
        case .idleTimeout: .idleTimeout
        case .local: .local
        case .shutdown: .shutdown
        case .error: .error
        case .framing: .framing
        case .protocolError: .protocolError
        case .slowPeer: .slowPeer
        }
    }

    /// The kinds of `CloseReason`; the raw value names one in metrics.
    public enum Kind: String, CaseIterable, Sendable {
        case peerClosed = "peer_closed", reset, idleTimeout = "idle_timeout", local, shutdown, error, framing
        case protocolError = "protocol_error", slowPeer = "slow_peer"

        /// Its index in `allCases`, without making that array.
        var ordinal: Int {
            switch self {
            case .peerClosed: 0
            case .reset: 1
            case .idleTimeout: 2
            case .local: 3
            case .shutdown: 4
            case .error: 5
            case .framing: 6
            case .protocolError: 7
            case .slowPeer: 8
            }
        }
    }

    /// The peer broke the protocol: counted in `LoopStatistics.Snapshot.protocolErrors`.
    public var isProtocolError: Bool {
        switch self {
        case .framing, .protocolError: true
        default: false
        }
    }

    static func failure(_ call: String, code: Int32) -> CloseReason {
        code == ECONNRESET || code == EPIPE ? .reset : .error(SystemError(call, code: code))
    }
}

#if canImport(Glibc)
import Glibc
#endif
