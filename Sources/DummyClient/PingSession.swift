import Reactor
#if canImport(Glibc)
import Glibc
#endif

/// Ping mode's pace and voice: a line per round, `--interval` between rounds,
/// and the end after `--rounds`. Lives on the one connection's loop thread.
final class PingSession {
    /// The worker owns the session and outlives it.
    private unowned(unsafe) let worker: LoopWorker
    private let settings: RunConfiguration.PingSettings

    init(worker: LoopWorker, settings: RunConfiguration.PingSettings) {
        self.worker = worker
        self.settings = settings
    }

    func roundCompleted(
        _ client: ClientConnection, number: UInt64, bytes: UInt64, latency: UInt64, mismatched: Bool, at now: UInt64
    ) {
        if settings.printRounds {
            let verdict = mismatched ? " MISMATCH" : ""
            Output.standardOutput("round \(number): sent \(bytes) B, echoed \(bytes) B in \(Format.microseconds(latency)) us\(verdict)\n")
        }
        if let rounds = settings.rounds, number >= UInt64(rounds) { return client.finish() }
        if settings.interval == 0 { return client.sendRound(at: now) }
        worker.loop.schedule(after: .nanoseconds(Int64(settings.interval))) { [worker] in
            worker.clients.first?.sendRound(at: monotonicNanoseconds())
        }
    }
}
