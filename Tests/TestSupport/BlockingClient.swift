import Reactor
import Synchronization
#if canImport(Glibc)
import Glibc
#endif

/// A test failure with a message, thrown by the helpers here.
public struct TestFailure: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// A plain blocking TCP client, independent of the Reactor, so tests check
/// the server with nothing of its own on the other end. Every receive is
/// bounded by a 10 s socket timeout, so no test can hang on a lost byte.
public final class BlockingClient {
    public private(set) var fd: Int32

    /// Connects; `receiveBufferSize` (SO_RCVBUF, set before the handshake so
    /// the window follows it) makes a peer whose unread echo fills up fast.
    public init(port: UInt16, host: String = "127.0.0.1", timeoutSeconds: Int = 10, receiveBufferSize: Int32? = nil) throws {
        let address = try SocketAddress(host: host, port: port)
        fd = socket(host.contains(":") ? AF_INET6 : AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { throw SystemError("socket") }
        if var size = receiveBufferSize {
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &size, socklen_t(MemoryLayout<Int32>.size))
        }
        var timeout = timeval(tv_sec: timeoutSeconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        // Small pieces go out at once, not held back (Nagle) until the echo is ACKed.
        var noDelay: Int32 = 1
        setsockopt(fd, Int32(IPPROTO_TCP), TCP_NODELAY, &noDelay, socklen_t(MemoryLayout<Int32>.size))
        let status: Int32
        switch address {
        case .v4(var a):
            status = withUnsafePointer(to: &a) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        case .v6(var a):
            status = withUnsafePointer(to: &a) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
            }
        }
        guard status == 0 else {
            let error = SystemError("connect", address.description)
            Glibc.close(fd)
            throw error
        }
    }

    deinit { if fd >= 0 { Glibc.close(fd) } }

    /// Sends all of `bytes`; an empty array still makes one zero-length send.
    public func send(_ bytes: [UInt8]) throws {
        var offset = 0
        repeat {
            let sent = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            if sent < 0 {
                if errno == EINTR { continue }
                throw SystemError("send")
            }
            offset += sent
        } while offset < bytes.count
    }

    /// Sends what the socket takes now without blocking; returns how much.
    public func sendWithoutBlocking(_ bytes: ArraySlice<UInt8>) -> Int {
        let sent = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL | MSG_DONTWAIT)) }
        return max(sent, 0)
    }

    /// Receives exactly `count` bytes; throws on EOF, error or timeout.
    public func receive(exactly count: Int) throws -> [UInt8] {
        var result = [UInt8](repeating: 0, count: count)
        var offset = 0
        while offset < count {
            let got = result[offset...].withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if got == 0 { throw TestFailure("EOF after \(offset) of \(count) bytes") }
            if got < 0 {
                if errno == EINTR { continue }
                throw SystemError("recv", "after \(offset) of \(count) bytes")
            }
            offset += got
        }
        return result
    }

    /// Receives at most `maximum` bytes in one call (0 means EOF).
    public func receiveSome(maximum: Int) throws -> [UInt8] {
        var chunk = [UInt8](repeating: 0, count: maximum)
        while true {
            let got = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if got >= 0 { return Array(chunk.prefix(got)) }
            if errno != EINTR { throw SystemError("recv") }
        }
    }

    /// Receives until the peer's FIN; throws if more than `limit` bytes arrive.
    public func receiveUntilEOF(limit: Int) throws -> [UInt8] {
        var result: [UInt8] = []
        while true {
            let chunk = try receiveSome(maximum: 65_536)
            if chunk.isEmpty { return result }
            result += chunk
            if result.count > limit { throw TestFailure("more than \(limit) bytes before EOF") }
        }
    }

    /// Sends `payload` from another thread (in pieces of at most `piece`
    /// bytes), so this thread can read the echo meanwhile; then, if asked,
    /// sends FIN. Join the returned thread before checking what was sent.
    public func sendInBackground(_ payload: [UInt8], piece: Int = 1 << 20, thenShutdown: Bool = false) throws -> LoopThread {
        try LoopThread(name: "sender") { [fd] in
            payload.withUnsafeBytes { bytes in
                var offset = 0
                while offset < bytes.count {
                    let sent = Glibc.send(fd, bytes.baseAddress! + offset, min(piece, bytes.count - offset), Int32(MSG_NOSIGNAL))
                    if sent <= 0 { return }
                    offset += sent
                }
            }
            if thenShutdown { shutdown(fd, Int32(SHUT_WR)) }
        }
    }

    /// Bytes sent but not yet acknowledged by the peer's kernel (SIOCOUTQ):
    /// 0 means everything sent is in the peer's hands.
    public var unacknowledgedBytes: Int {
        var count: Int32 = 0
        return ioctl(fd, UInt(TIOCOUTQ), &count) == 0 ? Int(count) : -1
    }

    /// Sends FIN: the half-close of the 4-way handshake, from this side.
    public func shutdownWrite() {
        shutdown(fd, Int32(SHUT_WR))
    }

    /// Closes with SO_LINGER 0, so the peer gets RST instead of FIN.
    public func reset() {
        var option = linger(l_onoff: 1, l_linger: 0)
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &option, socklen_t(MemoryLayout<linger>.size))
        close()
    }

    public func close() {
        if fd >= 0 { Glibc.close(fd) }
        fd = -1
    }
}

/// Reproducible pseudo-random bytes (xorshift), so a failure can be replayed.
public func patternBytes(count: Int, seed: UInt64) -> [UInt8] {
    var state = seed | 1
    return (0..<count).map { _ in
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return UInt8(truncatingIfNeeded: state)
    }
}

/// Polls `condition` until it holds or `seconds` pass; returns whether it held.
/// For state another process or thread reaches on its own (fd counts, totals).
public func eventually(within seconds: Double = 10, _ condition: () throws -> Bool) rethrows -> Bool {
    let deadline = monotonicNanoseconds() + UInt64(seconds * 1e9)
    while monotonicNanoseconds() < deadline {
        if try condition() { return true }
        usleep(2_000)
    }
    return try condition()
}

/// A port nothing listens on right now (the kernel's pick, released at once).
public func unusedPort() throws -> UInt16 {
    let (fd, port) = try boundLoopbackSocket()
    Glibc.close(fd)
    return port
}

/// A socket bound to a loopback port of the kernel's choosing, not listening.
private func boundLoopbackSocket() throws -> (fd: Int32, port: UInt16) {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { throw SystemError("socket") }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let status = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
            bind(fd, pointer, length) == 0 ? getsockname(fd, pointer, &length) : -1
        }
    }
    guard status == 0 else {
        Glibc.close(fd)
        throw SystemError("bind")
    }
    return (fd, UInt16(bigEndian: address.sin_port))
}

/// Values appended from loop threads and read from the test's thread.
public final class Recorded<Value: Sendable>: Sendable {
    private let storage = Locked<[Value]>([])
    public init() {}
    public func append(_ value: Value) { storage.withLock { $0.append(value) } }
    public var values: [Value] { storage.withLock { $0 } }
    public var count: Int { storage.withLock { $0.count } }
}

/// A loopback port where nothing listens, reserved while `body` runs: a socket
/// bound to it but not listening, so a connect is refused and no other test
/// can take the port meanwhile.
public func withRefusingPort<Result>(_ body: (UInt16) throws -> Result) throws -> Result {
    let (fd, port) = try boundLoopbackSocket()
    defer { Glibc.close(fd) }
    return try body(port)
}
