import CEpoll
#if canImport(Glibc)
import Glibc
#endif

/// The outcome of one non-blocking `recv` or `send`.
enum IOResult {
    case transferred(Int)
    /// The socket had nothing to give or no room to take (EAGAIN).
    case wouldBlock
    /// `recv` returned 0: the peer sent FIN.
    case endOfFile
    case failed(Int32)
}

/// Socket system calls, each made the way the reactor needs them: non-blocking
/// and close-on-exec from birth, `MSG_NOSIGNAL` on every send, EINTR retried.
enum Socket {
    /// A listening TCP socket bound to `address`, with SO_REUSEADDR so a
    /// restarted server can bind while old connections sit in TIME_WAIT.
    /// With `bufferSize`, its SO_SNDBUF and SO_RCVBUF, which every accepted
    /// socket inherits (set before `listen`, so the window scale agreed in
    /// the handshake matches); nil keeps the kernel's autotuning.
    static func listen(on address: SocketAddress, backlog: Int32, bufferSize: Int? = nil) throws(SystemError) -> Int32 {
        let fd = socket(address.family, Int32(SOCK_STREAM.rawValue) | CSOCK_NONBLOCK | CSOCK_CLOEXEC, 0)
        guard fd >= 0 else { throw SystemError("socket", address.description) }
        do throws(SystemError) {
            try setOption(fd, SOL_SOCKET, SO_REUSEADDR, 1, "setsockopt(SO_REUSEADDR)")
            if case .v6 = address {
                // "::" should mean IPv6 only; dual-stack surprises nobody wants.
                try setOption(fd, Int32(IPPROTO_IPV6), IPV6_V6ONLY, 1, "setsockopt(IPV6_V6ONLY)")
            }
            if let bufferSize {
                try setOption(fd, SOL_SOCKET, SO_SNDBUF, Int32(clamping: bufferSize), "setsockopt(SO_SNDBUF)")
                try setOption(fd, SOL_SOCKET, SO_RCVBUF, Int32(clamping: bufferSize), "setsockopt(SO_RCVBUF)")
            }
            guard address.withSockAddr({ bind(fd, $0, $1) }) == 0 else { throw SystemError("bind", address.description) }
            guard Glibc.listen(fd, backlog) == 0 else { throw SystemError("listen", address.description) }
        } catch {
            close(fd)
            throw error
        }
        return fd
    }

    /// Takes over a socket that is already listening (inherited from systemd
    /// or from the process being upgraded): checks that it is a listening
    /// TCP socket, and makes it non-blocking and close-on-exec.
    static func adoptListening(_ fd: Int32) throws(SystemError) -> Int32 {
        guard let listening = integerOption(fd, SOL_SOCKET, SO_ACCEPTCONN) else {
            throw SystemError("getsockopt(SO_ACCEPTCONN)", "inherited fd \(fd)")
        }
        guard let type = integerOption(fd, SOL_SOCKET, SO_TYPE) else {
            throw SystemError("getsockopt(SO_TYPE)", "inherited fd \(fd)")
        }
        guard listening == 1, type == Int32(SOCK_STREAM.rawValue) else {
            throw SystemError("listen", "inherited fd \(fd) (not a listening stream socket)", code: EINVAL)
        }
        let flags = fcntl(fd, F_GETFL)
        guard flags >= 0, fcntl(fd, F_SETFL, flags | O_NONBLOCK) == 0, fcntl(fd, F_SETFD, FD_CLOEXEC) == 0 else {
            throw SystemError("fcntl", "inherited fd \(fd)")
        }
        return fd
    }

    /// Starts a non-blocking connect, from `source` when given (bound first,
    /// its port 0 meaning any). Returns the fd, and whether the connection is
    /// still under way (EINPROGRESS: completion shows as writable).
    static func connect(to address: SocketAddress, from source: SocketAddress? = nil) throws(SystemError) -> (fd: Int32, inProgress: Bool) {
        let fd = socket(address.family, Int32(SOCK_STREAM.rawValue) | CSOCK_NONBLOCK | CSOCK_CLOEXEC, 0)
        guard fd >= 0 else { throw SystemError("socket", address.description) }
        if let source {
            do throws(SystemError) {
                // The port is then picked at connect, per destination, as without a bind;
                // bind would take it from one range for every destination, which
                // connections in TIME_WAIT soon exhaust when clients reconnect often.
                try setOption(fd, Int32(IPPROTO_IP), IP_BIND_ADDRESS_NO_PORT, 1, "setsockopt(IP_BIND_ADDRESS_NO_PORT)")
                guard source.withSockAddr({ bind(fd, $0, $1) }) == 0 else { throw SystemError("bind", source.description) }
            } catch {
                close(fd)
                throw error
            }
        }
        if address.withSockAddr({ Glibc.connect(fd, $0, $1) }) == 0 { return (fd, false) }
        let code = errno
        if code == EINPROGRESS || code == EINTR { return (fd, true) }
        close(fd)
        throw SystemError("connect", address.description, code: code)
    }

    enum AcceptResult {
        case accepted(Int32)
        case wouldBlock
        /// EMFILE/ENFILE: the process or system is out of file descriptors.
        case outOfDescriptors
        case failed(Int32)
    }

    static func accept(from listener: Int32) -> AcceptResult {
        while true {
            let fd = cepoll_accept4(listener, nil, nil, CSOCK_NONBLOCK | CSOCK_CLOEXEC)
            if fd >= 0 { return .accepted(fd) }
            switch errno {
            case EINTR, ECONNABORTED: continue // an aborted handshake says nothing about the next one
            case EAGAIN, EWOULDBLOCK: return .wouldBlock
            case EMFILE, ENFILE: return .outOfDescriptors
            case let code: return .failed(code)
            }
        }
    }

    @inline(__always)
    static func receive(_ fd: Int32, into buffer: UnsafeMutableRawPointer, count: Int) -> IOResult {
        let result = transfer { recv(fd, buffer, count, 0) }
        if case .transferred(0) = result { return .endOfFile }
        return result
    }

    @inline(__always)
    static func send(_ fd: Int32, _ bytes: UnsafeRawPointer, count: Int) -> IOResult {
        transfer { Glibc.send(fd, bytes, count, Int32(MSG_NOSIGNAL)) }
    }

    /// One gathering send of `count` ranges: sendmsg, which unlike writev takes MSG_NOSIGNAL.
    static func send(_ fd: Int32, vectors: UnsafeMutablePointer<iovec>, count: Int) -> IOResult {
        var message = msghdr()
        message.msg_iov = vectors
        message.msg_iovlen = count
        return transfer { sendmsg(fd, &message, Int32(MSG_NOSIGNAL)) }
    }

    /// Makes a recv- or send-like call, again if a signal interrupted it.
    @inline(__always)
    private static func transfer(_ call: () -> Int) -> IOResult {
        while true {
            let n = call()
            if n >= 0 { return .transferred(n) }
            switch errno {
            case EINTR: continue
            case EAGAIN, EWOULDBLOCK: return .wouldBlock
            case let code: return .failed(code)
            }
        }
    }

    static func setOption(_ fd: Int32, _ level: Int32, _ name: Int32, _ value: Int32, _ call: String) throws(SystemError) {
        var value = value
        guard setsockopt(fd, level, name, &value, socklen_t(MemoryLayout<Int32>.size)) == 0 else { throw SystemError(call) }
    }

    static func integerOption(_ fd: Int32, _ level: Int32, _ name: Int32) -> Int32? {
        var value: Int32 = 0
        var length = socklen_t(MemoryLayout<Int32>.size)
        return getsockopt(fd, level, name, &value, &length) == 0 ? value : nil
    }

    /// Disables Nagle's algorithm: an echo must not wait for the next segment.
    static func setNoDelay(_ fd: Int32) {
        _ = try? setOption(fd, Int32(IPPROTO_TCP), TCP_NODELAY, 1, "setsockopt(TCP_NODELAY)")
    }

    /// The error a failed connect or a broken socket left (SO_ERROR); 0 if none.
    static func pendingError(_ fd: Int32) -> Int32 {
        integerOption(fd, SOL_SOCKET, SO_ERROR) ?? errno
    }

    /// The maximum segment size agreed in the SYN options (TCP_MAXSEG).
    static func maximumSegmentSize(_ fd: Int32) -> Int? {
        integerOption(fd, Int32(IPPROTO_TCP), TCP_MAXSEG).map(Int.init)
    }

    /// Bytes received and not yet read (FIONREAD).
    static func unreadBytes(_ fd: Int32) -> Int {
        var count: Int32 = 0
        return ioctl(fd, UInt(FIONREAD), &count) == 0 ? Int(count) : 0
    }

    /// Sends FIN after everything already queued; reading goes on.
    static func shutdownWrite(_ fd: Int32) {
        _ = shutdown(fd, Int32(SHUT_WR))
    }
}
