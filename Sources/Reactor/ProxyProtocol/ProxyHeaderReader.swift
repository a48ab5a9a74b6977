#if canImport(Glibc)
import Glibc
#endif

/// A connection just accepted from a proxy, until its PROXY header is read.
/// Only then is it adopted, so its handler never sees a header byte and
/// knows the client's address from `connectionOpened` on.
///
/// It reads no byte past the header: each read peeks first. While the
/// header is incomplete, all that has arrived belongs to it and is taken;
/// once it is complete, exactly the rest of it is taken.
final class ProxyHeaderReader: EventSource {
    /// How a reader ends; `finished` hears it once.
    enum Outcome {
        /// The header was read; the fd, registered nowhere, is the caller's.
        case header(ProxyHeader)
        /// The header was refused (the reason, and the socket's own peer); the fd is closed.
        case rejected(reason: String, peer: SocketAddress?)
        /// The peer left before sending a byte (a proxy's TCP health check
        /// does), or the loop closed the reader; the fd is closed.
        case closed
    }

    let fd: Int32
    var token = EventToken.free
    private unowned(unsafe) let loop: EventLoop // loops are never freed
    private let finished: (Outcome) -> Void
    /// The part of the header taken so far.
    private var received: [UInt8] = []
    private var deadline: ScheduledTask?
    private var isFinished = false

    /// Watches `fd` on `loop` (loop thread) and ends with `.rejected` if the
    /// header is not all there within `timeout`.
    @discardableResult
    init(fd: Int32, loop: EventLoop, timeout: Duration, finished: @escaping (Outcome) -> Void) {
        self.fd = fd
        self.loop = loop
        self.finished = finished
        loop.proxyHeaderStarted()
        do throws(SystemError) {
            try loop.register(self)
        } catch {
            finish(.rejected(reason: "\(error)", peer: nil))
            return
        }
        deadline = loop.scheduleOnLoop(after: timeout) { [weak self] in
            guard let self else { return }
            finish(.rejected(reason: "no whole PROXY header within \(timeout) (\(received.count) B)", peer: peer))
        }
    }

    var closesOnShutdown: Bool { true }

    func handleReadable() {
        // The loop's read buffer: the part taken so far, then what is waiting, peeked.
        let buffer = loop.readBuffer
        let taken = received.count
        if taken > 0 { received.withUnsafeBytes { buffer.copyMemory(from: $0.baseAddress!, byteCount: taken) } }
        let waiting = recv(fd, buffer + taken, ProxyHeader.maximumLength - taken, Int32(MSG_PEEK))
        if waiting < 0 {
            let code = errno
            if code == EAGAIN || code == EWOULDBLOCK || code == EINTR { return }
            return finish(code == ECONNRESET ? .closed : .rejected(reason: "\(SystemError("recv", code: code))", peer: peer))
        }
        if waiting == 0 {
            return finish(taken == 0 ? .closed : .rejected(reason: "peer closed after \(taken) B of a PROXY header", peer: peer))
        }
        switch ProxyHeader.parse(UnsafeRawBufferPointer(start: buffer, count: taken + waiting)) {
        case .complete(let header, let length):
            guard take(length - taken, into: buffer + taken) else { return }
            do throws(SystemError) {
                try loop.epoll.remove(fd)
            } catch {
                return finish(.rejected(reason: "\(error)", peer: peer))
            }
            finish(.header(header))
        case .incomplete:
            guard take(waiting, into: buffer + taken) else { return }
            received.append(contentsOf: UnsafeRawBufferPointer(start: buffer + taken, count: waiting))
        case .invalid(let reason):
            finish(.rejected(reason: reason, peer: peer))
        }
    }

    /// Reads `count` bytes that a peek has shown are waiting.
    private func take(_ count: Int, into buffer: UnsafeMutableRawPointer) -> Bool {
        guard recv(fd, buffer, count, 0) == count else {
            finish(.rejected(reason: "\(SystemError("recv", code: errno))", peer: peer))
            return false
        }
        return true
    }

    /// The socket's own peer: the proxy, for the log.
    private var peer: SocketAddress? { SocketAddress(of: fd, peer: true) }

    func close() { finish(.closed) }

    private func finish(_ outcome: Outcome) {
        guard !isFinished else { return }
        isFinished = true
        if let deadline { loop.cancel(deadline) }
        loop.deregister(self)
        // Told before the close, so a peer that has seen it close sees it counted too.
        finished(outcome)
        if case .header = outcome {} else { Glibc.close(fd) }
        loop.proxyHeaderEnded()
    }
}
