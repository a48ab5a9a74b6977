import ArgumentParser
import CommandLineSupport
import Reactor

@main
struct EchoServer: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "echo-server",
        abstract: "A multi-client TCP echo server on the Reactor event loop.")

    @OptionGroup var server: ServerOptions
    @Option(help: "Pending output per connection above which it stops reading (1024-1073741824 bytes).")
    var maxPendingBytes = Backpressure().highWaterMark
    @Flag(name: .customLong("async"), help: "Echo through ReactorAsync: async/await, a task per connection on its loop.")
    var useAsync = false

    func validate() throws {
        try check("--max-pending-bytes", maxPendingBytes, 1024...(1 << 30))
    }

    func run() throws {
        let configuration = server.configuration(
            backpressure: Backpressure(highWaterMark: maxPendingBytes, lowWaterMark: maxPendingBytes / 4))
        let verbose = server.verbose
        let useAsync = useAsync
        try serve("echo-server", options: server) { logger, errors in
            if useAsync { return try AsyncEcho.makeServer(configuration: configuration, logger: logger, errors: errors) }
            // --verbose: one handler per connection, logging its open and close.
            return verbose
                ? try Server(configuration: configuration, errors: errors) { _ in LoggingEchoHandler(logger: logger) }
                : try Server(configuration: configuration, errors: errors, handler: EchoHandler())
        }
    }
}
