import ArgumentParser
import Reactor

/// How a connection paces its traffic.
enum LoadMode: String, Sendable, CaseIterable, ExpressibleByArgument {
    /// Send a round, wait for its whole echo, repeat (the course's loop).
    case closed
    /// Send rounds at a fixed rate whatever the echoes do; latency from each
    /// round's intended send time.
    case open
    /// Keep a window of bytes in flight, refilled as echoes come back.
    case stream
}

/// Everything a run needs, fixed before the first connection opens.
struct RunConfiguration: Sendable {
    var mode = LoadMode.closed
    var address: SocketAddress
    var connections = 1
    var threads = 1
    var size = 100
    var burst = 10
    var coalesce = false
    /// Stream mode: bytes in flight per connection.
    var window = 65_536
    /// Open loop: rounds per second per connection.
    var rate = 0.0
    var warmup: UInt64 = 0
    /// Measured window; `UInt64.max` runs until stopped (ping).
    var duration = UInt64.max
    /// Connections opened per second over all loops; nil opens them all at once.
    var connectRate: Double?
    /// The local address every connection is bound to before it connects; nil: the kernel's choice.
    var sourceAddress: SocketAddress?
    /// Flood: rounds after which a connection closes and a fresh one opens in
    /// its place; nil keeps each connection for the whole run.
    var roundsPerConnection: Int?
    /// Flood: a failed connection is counted and replaced (after a short
    /// backoff) instead of ending, and failures alone do not fail the run.
    var reconnect = false
    /// Ping mode: rounds to run (nil: until interrupted), pause between rounds, and whether to print each.
    var ping: PingSettings?
    /// Room mode: how many rooms of how many members (`connections` is their product).
    var room: RoomSettings?

    struct PingSettings: Sendable {
        var rounds: Int?
        var interval: UInt64
        var printRounds: Bool
    }

    struct RoomSettings: Sendable {
        var rooms: Int
        var members: Int
    }

    /// The unit whose echo is awaited and timed: a round (`burst` messages of
    /// `size` bytes) in closed and open loop, one `size` chunk in stream mode.
    var unitBytes: Int { mode == .stream ? size : size * burst }
    /// Messages one unit counts for.
    var messagesPerUnit: Int { mode == .stream ? 1 : burst }
    /// Bytes per `write`: one message, or a whole round with `--coalesce`
    /// (never more than the pattern can lend in one piece).
    var writeSize: Int { min(coalesce ? unitBytes : size, Pattern.slack) }
    /// Open loop: nanoseconds between two rounds of one connection.
    var roundPeriod: UInt64 { rate > 0 ? max(1, UInt64((1e9 / rate).rounded())) : 0 }
    /// Whether connections that end before the run does are replaced, which
    /// makes the server's orderly close between rounds a normal event.
    var replacesConnections: Bool { reconnect || roundsPerConnection != nil }
    /// Open loop: output a connection may have queued before it skips sending
    /// (the skipped rounds go out later, still timed from their intended time).
    var maxPendingOutput: Int { max(4 * unitBytes, 256 * 1024) }
}
