#if canImport(Glibc)
import Glibc
#endif

/// How much unsent output a connection may hold before it stops reading.
public struct Backpressure: Sendable, Equatable {
    /// Above this many pending output bytes the connection stops reading from the peer.
    public var highWaterMark: Int
    /// At or below this many it reads again.
    public var lowWaterMark: Int

    public init(highWaterMark: Int = 256 * 1024, lowWaterMark: Int = 64 * 1024) {
        precondition(highWaterMark > 0 && lowWaterMark >= 0 && lowWaterMark <= highWaterMark)
        self.highWaterMark = highWaterMark
        self.lowWaterMark = lowWaterMark
    }
}

/// One TCP connection on one loop: reads into the loop's buffer and hands the
/// bytes to its handler; writes go straight to the socket, and whatever the
/// socket does not take waits in `output` with EPOLLOUT armed until it drains.
///
/// States: open and reading → (output above the high-water mark) paused →
/// (drained below the low-water mark) reading again. A FIN from the peer, or
/// `close()`, ends reading; the connection then closes once output is flushed.
/// Errors and resets close at once. All on the loop's thread.
public final class Connection: Channel, @unchecked Sendable {
    public let handler: any ConnectionHandler
    let backpressure: Backpressure
    private var output = ByteBuffer()
    /// Why reading ended early, if it did: read no more, close once flushed.
    private enum Finish: UInt8 { case no, peerFinished, closeRequested }
    private var finish = Finish.no
    private var finishing: Bool { finish != .no }
    /// A client connect still under way: its completion shows as writable.
    fileprivate var connecting = false
    public fileprivate(set) var isClosed = false
    /// Set on every read; the idle sweep compares it with the loop's clock.
    var lastActivity: UInt64
    let openedAt: UInt64
    /// Where a connect was headed, for its error message; nil once connected.
    fileprivate var remoteAddressForErrors: String?

    public private(set) var bytesReceived: UInt64 = 0
    public private(set) var bytesSent: UInt64 = 0

    init(fd: Int32, loop: EventLoop, handler: any ConnectionHandler, backpressure: Backpressure) {
        self.handler = handler
        self.backpressure = backpressure
        self.openedAt = loop.now
        self.lastActivity = loop.now
        super.init(fd: fd, loop: loop)
    }

    /// The loop this connection lives on; `loop.execute` reaches it from other threads.
    public var eventLoop: EventLoop { loop }
    /// Bytes written but not yet taken by the kernel.
    public var pendingOutputBytes: Int { output.count }
    /// Whether reading is paused because pending output is above the high-water mark.
    public var isReadingPaused: Bool { !interest.contains(.readable) && !finishing && !isClosed }
    /// Nanoseconds since the connection was established.
    public var age: UInt64 { monotonicNanoseconds() - openedAt }
    public var remoteAddress: SocketAddress? { SocketAddress(of: fd, peer: true) }
    public var localAddress: SocketAddress? { SocketAddress(of: fd, peer: false) }
    /// The MSS agreed in the SYN options of the handshake.
    public var maximumSegmentSize: Int? { Socket.maximumSegmentSize(fd) }

    // MARK: Writing

    /// Sends `bytes`, queueing whatever the socket does not take at once. Never
    /// drops data; after `close()` or a failure it does nothing.
    public func write(_ bytes: UnsafeRawBufferPointer) {
        guard !isClosed, let base = bytes.baseAddress, bytes.count > 0 else { return }
        guard output.isEmpty else {
            output.append(bytes)
            return updateInterest()
        }
        switch Socket.send(fd, base, count: bytes.count) {
        case .transferred(let sent):
            bytesSent &+= UInt64(sent)
            increment(loop.stats.bytesSent, by: UInt64(sent))
            if sent == bytes.count { return }
            output.append(UnsafeRawBufferPointer(rebasing: bytes[sent...]))
        case .wouldBlock, .endOfFile:
            output.append(bytes)
        case .failed(let code):
            return close(reason: .failure("send", code: code))
        }
        updateInterest()
    }

    public func write(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { write($0) }
    }

    /// Closes once all queued output is flushed; reads nothing more.
    public func close() {
        guard !isClosed, !finishing else { return }
        finish = .closeRequested
        if output.isEmpty { close(reason: .local) } else { updateInterest() }
    }

    // MARK: Events

    override func handle(_ events: Epoll.Events) {
        if connecting { return completeConnect() }
        if events.contains(.error) {
            return close(reason: .failure("socket", code: Socket.pendingError(fd)))
        }
        if !output.isEmpty, !events.isDisjoint(with: [.writable, .hangup]) {
            flush()
            if isClosed { return }
        }
        if interest.contains(.readable), !events.isDisjoint(with: [.readable, .readHangup, .hangup]) {
            readAvailable()
        }
    }

    override func loopStopped() { close(reason: .shutdown) }

    /// Answers what the socket already holds, then closes once flushed.
    override func finishGracefully() {
        guard !isClosed, !finishing else { return }
        if connecting { return close(reason: .shutdown) }
        if interest.contains(.readable) { readAvailable() }
        guard !isClosed, !finishing else { return }
        finish = .closeRequested
        if output.isEmpty { close(reason: .shutdown) } else { updateInterest() }
    }

    /// Reads until the socket is drained, the handler's output pauses reading,
    /// or 16 reads have run (so one busy peer cannot starve the others).
    private func readAvailable() {
        let buffer = loop.readBuffer
        let capacity = EventLoop.readBufferSize
        for _ in 0..<16 {
            switch Socket.receive(fd, into: buffer, count: capacity) {
            case .transferred(let count):
                bytesReceived &+= UInt64(count)
                increment(loop.stats.bytesReceived, by: UInt64(count))
                lastActivity = loop.now
                handler.connection(self, received: UnsafeRawBufferPointer(start: buffer, count: count))
                // A short read means the socket is drained: skip the read that would say EAGAIN.
                if count < capacity || isClosed || !interest.contains(.readable) { return }
            case .wouldBlock:
                return
            case .endOfFile:
                return peerFinished()
            case .failed(let code):
                return close(reason: .failure("recv", code: code))
            }
        }
    }

    /// Half-close: the peer will send nothing more, but everything it sent is
    /// still answered and flushed before the connection closes.
    private func peerFinished() {
        finish = .peerFinished
        if output.isEmpty { close(reason: .peerClosed) } else { updateInterest() }
    }

    private func flush() {
        while !output.isEmpty {
            let pending = output.readableBytes
            switch Socket.send(fd, pending.baseAddress!, count: pending.count) {
            case .transferred(let sent):
                bytesSent &+= UInt64(sent)
                increment(loop.stats.bytesSent, by: UInt64(sent))
                output.consume(sent)
            case .wouldBlock, .endOfFile:
                return updateInterest()
            case .failed(let code):
                return close(reason: .failure("send", code: code))
            }
        }
        if finishing { return close(reason: finish == .peerFinished ? .peerClosed : .local) }
        updateInterest()
        handler.connectionDrained(self)
    }

    /// Registers for exactly what the state needs: writable while output is
    /// pending; readable unless finishing or paused by backpressure.
    private func updateInterest() {
        var wanted: Epoll.Events = []
        if !output.isEmpty { wanted.insert(.writable) }
        if !finishing {
            let reading = interest.contains(.readable)
            let pending = output.count
            if pending <= backpressure.lowWaterMark || (reading && pending <= backpressure.highWaterMark) {
                wanted.formUnion([.readable, .readHangup])
            }
        }
        do {
            try setInterest(wanted)
        } catch {
            close(reason: .error(error))
        }
    }

    private func completeConnect() {
        let code = Socket.pendingError(fd)
        guard code == 0 else {
            let peer = remoteAddressForErrors ?? "fd \(fd)"
            return close(reason: .error(SystemError("connect", peer, code: code)))
        }
        connecting = false
        remoteAddressForErrors = nil
        Socket.setNoDelay(fd)
        updateInterest()
        if !isClosed { handler.connectionOpened(self) }
    }

    // MARK: Closing

    /// Closes now: releases the fd and any queued output, then tells the handler.
    func close(reason: CloseReason) {
        guard !isClosed else { return }
        isClosed = true
        output.release()
        loop.closeAndDeregister(self)
        increment(loop.stats.closed)
        loop.connectionClosedHook?(self)
        handler.connectionClosed(self, reason: reason)
    }
}

extension EventLoop {
    /// Takes over an accepted (or connected) non-blocking socket as a
    /// connection of this loop, and tells its handler it is open. Loop thread.
    @discardableResult
    public func adopt(
        _ fd: Int32, handler: any ConnectionHandler, backpressure: Backpressure = Backpressure()
    ) -> Connection? {
        Socket.setNoDelay(fd)
        let connection = Connection(fd: fd, loop: self, handler: handler, backpressure: backpressure)
        do {
            try register(connection, interest: [.readable, .readHangup])
        } catch {
            Glibc.close(fd)
            handler.connectionClosed(connection, reason: .error(error))
            return nil
        }
        increment(stats.opened)
        handler.connectionOpened(connection)
        return connection
    }

    /// Opens a client connection to `address` without blocking: the handler
    /// hears `connectionOpened` once the handshake completes, or
    /// `connectionClosed` with the `connect` error (e.g. Connection refused).
    /// Loop thread.
    @discardableResult
    public func connect(
        to address: SocketAddress, handler: any ConnectionHandler, backpressure: Backpressure = Backpressure()
    ) -> Connection? {
        let fd: Int32
        let inProgress: Bool
        do {
            (fd, inProgress) = try Socket.connect(to: address)
        } catch {
            let connection = Connection(fd: -1, loop: self, handler: handler, backpressure: backpressure)
            connection.isClosed = true
            handler.connectionClosed(connection, reason: .error(error))
            return nil
        }
        guard inProgress else { return adopt(fd, handler: handler, backpressure: backpressure) }
        let connection = Connection(fd: fd, loop: self, handler: handler, backpressure: backpressure)
        connection.connecting = true
        connection.remoteAddressForErrors = address.description
        do {
            try register(connection, interest: [.writable])
        } catch {
            Glibc.close(fd)
            handler.connectionClosed(connection, reason: .error(error))
            return nil
        }
        increment(stats.opened)
        return connection
    }
}
