import ArgumentParser
import CommandLineSupport
import Reactor
#if canImport(Glibc)
import Glibc
#endif

@main
struct DummyClient: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dummy-client",
        abstract: "A verifying load generator for TCP echo and room servers, on the Reactor event loop.",
        discussion: """
            Every echoed byte is compared with what was sent (room: every delivery is checked against \
            the room protocol's guarantees). Exit status: 0 when everything verified, 1 on any \
            mismatch, violation, short echo, reset or connect failure (flood --reconnect: on a mismatch \
            only), 64 for bad flags (merge: 65 for a file it cannot read or decode).
            """,
        subcommands: [Ping.self, Flood.self, Room.self, Merge.self],
        defaultSubcommand: Ping.self)
}

/// Where to connect: shared by every mode.
struct AddressOptions: ParsableArguments {
    @Option(help: "Server address: numeric IPv4/IPv6 or a name such as localhost.")
    var host = "127.0.0.1"
    @Option(help: "Server port (1-65535).")
    var port = 7777
    @Option(help: ArgumentHelp("""
        Bind every connection to this local IPv4/IPv6 address before connecting, so that the \
        server sees it as the client (e.g. 127.0.0.2, 127.0.0.3, ... as separate client hosts on \
        loopback; default: the kernel's choice).
        """, valueName: "ADDR"))
    var sourceAddress: String?

    func validate() throws {
        try check("--port", port, 1...65535)
        _ = try address()
        _ = try source()
    }

    func address() throws -> SocketAddress {
        do {
            return try SocketAddress(host: host, port: UInt16(port))
        } catch {
            throw ValidationError("--host: \(error)")
        }
    }

    /// `--source-address`, checked: a numeric address of the server's family that this host has.
    func source() throws -> SocketAddress? {
        guard let sourceAddress else { return nil }
        let flag = "--source-address \(sourceAddress)"
        let source: SocketAddress
        do {
            source = try SocketAddress(host: sourceAddress, port: 0)
        } catch {
            throw ValidationError("\(flag): \(error)")
        }
        switch (source, try address()) {
        case (.v4, .v6), (.v6, .v4):
            throw ValidationError("\(flag): not of the server's family (--host \(host)): IPv4 connects from IPv4, IPv6 from IPv6")
        default:
            break
        }
        if let reason = SourceAddress.bindError(source) {
            throw ValidationError("\(flag): not an address of this host (bind: \(reason))")
        }
        return source
    }
}

/// Where to connect and what one round is: shared by ping and flood.
struct TrafficOptions: ParsableArguments {
    @OptionGroup var server: AddressOptions
    @Option(help: "Bytes per message (1-1048576).")
    var size = 100
    @Option(help: "Messages per round, sent back to back (1-100000; at most 64 MiB per round).")
    var burst = 10
    @Flag(help: "Write each round with one send instead of --burst sends (same bytes on the wire, fewer syscalls).")
    var coalesce = false

    func validate() throws {
        try check("--size", size, 1...(1 << 20))
        try check("--burst", burst, 1...100_000)
        if size * burst > 64 << 20 {
            throw ValidationError("--burst \(burst) x --size \(size) is over 64 MiB per round: --burst must be in 1...\((64 << 20) / size)")
        }
    }

    func address() throws -> SocketAddress { try server.address() }
    func source() throws -> SocketAddress? { try server.source() }
}

/// How long a load runs, on how many loops, and how it reports: shared by flood and room.
struct LoadOptions: ParsableArguments {
    @Option(help: "Seconds measured, after the warm-up (0.1-86400).")
    var duration = 10.0
    @Option(help: "Seconds of traffic before measuring starts (0-3600).")
    var warmup = 1.0
    @Option(help: "Event loops, one thread each; each connection lives on one (1-256).")
    var threads = 1
    @Option(help: "Connections opened per second over all threads (1-10000000; default: all at once).")
    var connectRate: Double?
    @Flag(help: "Print the summary as one JSON object on stdout.")
    var json = false
    @Flag(help: "No progress line on stderr.")
    var quiet = false

    func validate() throws {
        try check("--duration", duration, 0.1...86_400)
        try check("--warmup", warmup, 0...3600)
        try check("--threads", threads, 1...256)
        if let connectRate { try check("--connect-rate", connectRate, 1...10_000_000) }
    }

    /// Every connection is a file descriptor; the loops need a few more each.
    func checkDescriptors(for connections: Int, flag: String) throws {
        let needed = connections + 8 * min(threads, connections) + 32
        let limit = FileDescriptorLimit.raiseToMaximum()
        if limit < needed {
            throw ValidationError("""
                \(flag) \(connections) needs about \(needed) file descriptors, but this process \
                may open only \(limit) (RLIMIT_NOFILE, hard limit): use \(flag) 1...\(max(1, limit - needed + connections)) \
                or raise the limit first (ulimit -n \(needed), as root)
                """)
        }
    }

    /// Warns when there are more connections than local ports to one address.
    func warnAboutPorts(_ connections: Int) {
        if let ports = LocalPorts.available(), connections > ports {
            Output.standardError("""
                dummy-client: warning: the kernel has \(ports) local ports for connections to one address \
                (net.ipv4.ip_local_port_range): connects beyond that fail with EADDRNOTAVAIL\n
                """)
        }
    }
}

/// `--histogram-out`: shared by the modes that measure latency (ping, flood, room).
struct HistogramOutputOptions: ParsableArguments {
    @Option(help: ArgumentHelp("""
        Write the measured window's latency histogram (the one the percentiles come from) to FILE: \
        an HdrHistogram interval log (compressed V2, base64), values in nanoseconds, for \
        `dummy-client merge` and HdrHistogram's tools.
        """, valueName: "FILE"))
    var histogramOut: String?

    /// Fails before the run, not after it, when the file cannot be created.
    func validate() throws {
        guard let histogramOut else { return }
        let directory = histogramOut.contains("/") ? String(histogramOut[...histogramOut.lastIndex(of: "/")!]) : "."
        guard !histogramOut.hasSuffix("/"), access(directory, W_OK) == 0 else {
            throw ValidationError("--histogram-out \(histogramOut): needs a file name in a writable directory (\(directory): \(String(cString: strerror(errno))))")
        }
    }

    /// Writes the window if asked; false, after saying why on stderr, if that failed.
    func write(_ window: HistogramLog.Window) -> Bool {
        guard let histogramOut else { return true }
        do {
            try HistogramLog.write(window, to: histogramOut)
            return true
        } catch {
            Output.standardError("dummy-client: --histogram-out \(error)\n")
            return false
        }
    }
}

func nanoseconds(_ seconds: Double) -> UInt64 { UInt64((seconds * 1e9).rounded()) }

struct Ping: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "One connection: send a round, wait for its whole echo, verify it, print a line; repeat.",
        discussion: "Each message is \"Hello world\" padded with zeros to --size bytes, as in the course's client.")

    @OptionGroup var traffic: TrafficOptions
    @Option(help: "Rounds to run (1-1000000000; default: until Ctrl-C).")
    var rounds: Int?
    @Option(help: "Seconds between rounds (0-3600).")
    var interval = 1.0
    @Flag(help: "Print only the summary, not a line per round.")
    var quiet = false
    @OptionGroup var histogramOutput: HistogramOutputOptions

    func validate() throws {
        if let rounds { try check("--rounds", rounds, 1...1_000_000_000) }
        try check("--interval", interval, 0...3600)
    }

    func run() throws {
        let configuration = RunConfiguration(
            mode: .closed, address: try traffic.address(), connections: 1, threads: 1,
            size: traffic.size, burst: traffic.burst, coalesce: traffic.coalesce, sourceAddress: try traffic.source(),
            ping: .init(rounds: rounds, interval: nanoseconds(interval), printRounds: !quiet))
        let report = try Runner.run(configuration, progress: false)
        for line in report.problems { Output.standardError("dummy-client: \(line)\n") }
        if report.connected > 0 { Output.standardOutput(report.pingSummary() + "\n") }
        let wroteHistogram = histogramOutput.write(report.latencyLog)
        if !report.succeeded || !wroteHistogram { throw ExitCode.failure }
    }
}

struct Flood: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "The load generator: many connections, closed loop, open loop (--rate) or stream (--mode stream).",
        discussion: """
            Closed loop (default): each connection sends a round of --burst messages of --size bytes, \
            waits for the whole echo, repeats. Open loop (--rate R): each connection starts R rounds per \
            second whatever the echoes do; latency counts from each round's intended send time. Stream \
            (--mode stream): each connection keeps --window bytes in flight. Traffic counts after \
            --warmup for --duration seconds; then what is in flight is awaited and verified. \
            --rounds-per-connection and --reconnect keep --connections open while connections keep \
            closing and opening; a server's FIN between rounds (as it drains) then counts as closed by \
            server and the connection is replaced, and rounds it left unanswered count as cut, not as errors.
            """)

    @OptionGroup var traffic: TrafficOptions
    @Option(help: "Connections (1-100000).")
    var connections = 100
    @OptionGroup var load: LoadOptions
    @Option(help: "closed, open (needs --rate) or stream.")
    var mode: LoadMode?
    @Option(help: "Open loop: rounds per second per connection (0.01-10000000); implies --mode open.")
    var rate: Double?
    @Option(help: "Stream mode: bytes in flight per connection (--size to 67108864; default 65536).")
    var window: Int?
    @Option(help: ArgumentHelp("""
        Rounds (stream mode: chunks) after which each connection closes, once their echo is \
        verified, and a fresh one opens in its place (1-1000000000; default: unlimited).
        """, valueName: "N"))
    var roundsPerConnection: Int?
    @Flag(help: """
        Replace a failed connection (reset, cut short, refused) with a fresh one after a short \
        backoff, instead of ending it; failures are counted but alone do not make the exit status 1.
        """)
    var reconnect = false
    @OptionGroup var histogramOutput: HistogramOutputOptions

    var effectiveMode: LoadMode { mode ?? (rate != nil ? .open : .closed) }

    func validate() throws {
        try check("--connections", connections, 1...100_000)
        if let rate { try check("--rate", rate, 0.01...10_000_000) }
        switch effectiveMode {
        case .open where rate == nil:
            throw ValidationError("--mode open needs --rate (rounds per second per connection, 0.01...10000000)")
        case .closed, .stream:
            if rate != nil { throw ValidationError("--rate applies to the open loop only (--mode open)") }
        default: break
        }
        if let window {
            guard effectiveMode == .stream else { throw ValidationError("--window applies to --mode stream only") }
            try check("--window", window, traffic.size...(64 << 20))
        } else if effectiveMode == .stream, traffic.size > 65_536 {
            throw ValidationError("--size \(traffic.size) is over the default --window 65536: give --window (\(traffic.size)...67108864)")
        }
        if let roundsPerConnection { try check("--rounds-per-connection", roundsPerConnection, 1...1_000_000_000) }
        try load.checkDescriptors(for: connections, flag: "--connections")
    }

    func run() throws {
        let address = try traffic.address()
        var configuration = RunConfiguration(
            mode: effectiveMode, address: address, connections: connections,
            threads: min(load.threads, connections), size: traffic.size, burst: traffic.burst,
            coalesce: traffic.coalesce, window: window ?? 65_536, rate: rate ?? 0,
            warmup: nanoseconds(load.warmup), duration: nanoseconds(load.duration), connectRate: load.connectRate,
            sourceAddress: try traffic.source(), roundsPerConnection: roundsPerConnection, reconnect: reconnect)
        if configuration.mode == .stream { configuration.burst = 1 }
        load.warnAboutPorts(connections)
        let report = try Runner.run(configuration, progress: !load.quiet)
        for line in report.problems { Output.standardError("dummy-client: \(line)\n") }
        Output.standardOutput((load.json ? report.json() : report.summary()) + "\n")
        let wroteHistogram = histogramOutput.write(report.latencyLog)
        if !report.succeeded || !wroteHistogram { throw ExitCode.failure }
    }
}

/// The ephemeral port range: how many connections one source address can
/// have open to one server address.
enum LocalPorts {
    static func available() -> Int? {
        guard let file = fopen("/proc/sys/net/ipv4/ip_local_port_range", "r") else { return nil }
        defer { fclose(file) }
        var buffer = [CChar](repeating: 0, count: 64)
        guard fgets(&buffer, Int32(buffer.count), file) != nil else { return nil }
        let text = String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        let numbers = text.split(whereSeparator: { $0 == " " || $0 == "\t" || $0 == "\n" }).compactMap { Int($0) }
        guard numbers.count == 2, numbers[1] >= numbers[0] else { return nil }
        return numbers[1] - numbers[0] + 1
    }
}
