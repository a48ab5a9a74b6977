import CEpoll
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// systemd's socket activation and readiness protocols (`sd_listen_fds`,
/// `sd_notify`), which a process being upgraded speaks to its successor too.
public enum SocketActivation {
    /// The first fd passed (`SD_LISTEN_FDS_START`).
    public static let firstSocket: Int32 = 3

    /// A socket passed to this process, with its name (`LISTEN_FDNAMES`;
    /// systemd's `FileDescriptorName=`, "unknown" when unnamed).
    public struct PassedSocket: Sendable, Equatable {
        public let fd: Int32
        public let name: String

        public init(fd: Int32, name: String) {
            self.fd = fd
            self.name = name
        }
    }

    /// The sockets this process was started with: fds 3, 4, ... as
    /// `LISTEN_FDS` counts them, if `LISTEN_PID` names this process (else
    /// none: they were meant for another). Read once; the variables are then
    /// removed, so that a child does not take the sockets for its own.
    public static let passedSockets: [PassedSocket] = {
        defer {
            unsetenv("LISTEN_PID")
            unsetenv("LISTEN_FDS")
            unsetenv("LISTEN_FDNAMES")
        }
        guard let pid = environment("LISTEN_PID").flatMap(Int32.init), pid == getpid(),
              let count = environment("LISTEN_FDS").flatMap(Int32.init), count > 0 else { return [] }
        let names = environment("LISTEN_FDNAMES")?.split(separator: ":", omittingEmptySubsequences: false) ?? []
        return (0..<count).map { index in
            PassedSocket(fd: firstSocket + index, name: index < names.count ? String(names[Int(index)]) : "unknown")
        }
    }()

    /// The passed socket called `name`, if there is one.
    public static func passedSocket(named name: String) -> Int32? {
        passedSockets.first { $0.name == name }?.fd
    }

    /// Tells whoever started this process, through the datagram socket
    /// `NOTIFY_SOCKET` names, that it serves now (`READY=1`); does nothing
    /// without one. Returns whether it was told.
    @discardableResult
    public static func notifyReady() -> Bool {
        guard let name = environment("NOTIFY_SOCKET"), !name.isEmpty else { return false }
        unsetenv("NOTIFY_SOCKET")
        let fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | CSOCK_CLOEXEC, 0)
        guard fd >= 0 else { return false }
        defer { close(fd) }
        let message = "READY=1\nMAINPID=\(getpid())"
        let sent = withUnixAddress(name) { address, length in
            message.withCString { sendto(fd, $0, strlen($0), Int32(MSG_NOSIGNAL), address, length) }
        }
        return (sent ?? -1) >= 0
    }

    /// The receiving end of `notifyReady`, for a process that starts another
    /// and waits until it serves: an abstract Unix datagram socket (no file
    /// to clean up) whose `name` goes in the child's `NOTIFY_SOCKET`.
    public final class ReadinessSocket: Sendable {
        /// `@swift-reactor-PID-N`: what `NOTIFY_SOCKET` is set to.
        public let name: String
        private let fd: Int32

        public init() throws(SystemError) {
            fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | CSOCK_CLOEXEC, 0)
            guard fd >= 0 else { throw SystemError("socket", "AF_UNIX") }
            name = "@swift-reactor-\(getpid())-\(Self.counter.add(1, ordering: .relaxed).newValue)"
            guard withUnixAddress(name, { bind(fd, $0, $1) }) == 0 else {
                let error = SystemError("bind", name)
                close(fd)
                throw error
            }
        }

        deinit { close(fd) }

        private static let counter = Atomic<Int>(0)

        /// Waits until `READY=1` arrives, `gone()` says the child is gone, or
        /// `timeout` passes; returns whether it arrived. Blocks the caller.
        public func waitForReady(timeout: Duration, gone: () -> Bool) -> Bool {
            var slice = timeval(tv_sec: 0, tv_usec: 100_000)
            setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &slice, socklen_t(MemoryLayout<timeval>.size))
            let deadline = ContinuousClock.now + timeout
            var message = [UInt8](repeating: 0, count: 512)
            while ContinuousClock.now < deadline && !gone() {
                let count = message.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
                guard count > 0 else { continue }
                let lines = String(decoding: message.prefix(count), as: UTF8.self).split(separator: "\n")
                if lines.contains("READY=1") { return true }
            }
            return false
        }
    }

    /// Lends `name` ("@abstract" or a path) to a call as a `sockaddr_un`;
    /// nil if it is too long for one.
    private static func withUnixAddress<Result>(
        _ name: String, _ body: (UnsafePointer<sockaddr>, socklen_t) -> Result
    ) -> Result? {
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        var bytes = Array(name.utf8)
        if bytes.first == UInt8(ascii: "@") { bytes[0] = 0 } // abstract: a leading NUL, no terminating one
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else { return nil }
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: bytes) }
        let length = socklen_t(MemoryLayout<sa_family_t>.size + bytes.count + (bytes.first == 0 ? 0 : 1))
        return withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, length) } }
    }

    private static func environment(_ name: String) -> String? {
        getenv(name).map { String(cString: $0) }
    }
}
