#if canImport(Glibc)
import Glibc
#endif

extension EventLoop {
    /// Takes over an accepted non-blocking socket as a connection of this
    /// loop and tells its handler (`handler`, or else the loop's shared one)
    /// it is open. Loop thread. On failure the fd is closed and the handler
    /// hears `connectionClosed` with the error. A connection from a proxy
    /// passes the `proxyHeader` read from it first: its addresses are then
    /// the connection's `remoteAddress` and `localAddress`.
    @discardableResult
    public func adopt(_ fd: Int32, handler: (any ConnectionHandler)? = nil, proxyHeader: ProxyHeader? = nil) -> Connection? {
        guard let box = handler.map(HandlerBox.init) ?? sharedHandlerBox else {
            preconditionFailure("adopt needs a handler or a loop with a shared one")
        }
        Socket.setNoDelay(fd)
        do {
            let (connection, slot) = try register(connectionFD: fd, handler: box, phase: .open)
            if let addresses = proxyHeader?.addresses { proxiedAddresses[connection.token] = addresses }
            box.handler.connectionOpened(connection)
            return slot.pointee.token == connection.token ? connection : nil
        } catch {
            Glibc.close(fd)
            connectionClosedHook?()
            box.handler.connectionClosed(Connection(loop: self, token: .free), reason: .error(error))
            return nil
        }
    }

    /// Opens a client connection to `address` without blocking: the handler
    /// hears `connectionOpened` once the handshake completes, or
    /// `connectionClosed` with the `connect` error (e.g. `connect
    /// 127.0.0.1:7777: Connection refused`). Loop thread. With `source`, the
    /// socket is bound to that local address first (port 0: the kernel picks
    /// one), so the peer sees it as the client: one of several loopback
    /// "hosts" such as 127.0.0.2 and 127.0.0.3, or one of several interfaces.
    /// A failed bind is reported as a failed connect is.
    @discardableResult
    public func connect(to address: SocketAddress, from source: SocketAddress? = nil, handler: any ConnectionHandler) -> Connection? {
        let fd: Int32
        let inProgress: Bool
        do {
            (fd, inProgress) = try Socket.connect(to: address, from: source)
        } catch {
            handler.connectionClosed(Connection(loop: self, token: .free), reason: .error(error))
            return nil
        }
        guard inProgress else { return adopt(fd, handler: handler) }
        do {
            let (connection, _) = try register(connectionFD: fd, handler: HandlerBox(handler), phase: .connecting)
            connectTargets[connection.token] = address
            return connection
        } catch {
            Glibc.close(fd)
            handler.connectionClosed(Connection(loop: self, token: .free), reason: .error(error))
            return nil
        }
    }
}
