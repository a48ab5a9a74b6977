/// An fd a loop watches for readability other than a connection: a listener,
/// a signalfd. Rare events, so they are found through a dictionary; the
/// per-message path only ever sees the connection table.
protocol EventSource: AnyObject {
    var fd: Int32 { get }
    /// The epoll token the loop gave this source.
    var token: EventToken { get set }
    /// Whether a graceful shutdown closes it: a listener and a half-read
    /// PROXY header do; a signal watcher keeps watching for a second signal.
    var closesOnShutdown: Bool { get }
    func handleReadable()
    func close()
}
