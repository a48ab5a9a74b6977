import CEpoll
#if canImport(Glibc)
import Glibc
#endif

/// An IPv4 or IPv6 address and port, ready to hand to `bind` or `connect`.
public enum SocketAddress: Sendable, Equatable, CustomStringConvertible {
    /// An IPv4 address and port, as the C `sockaddr_in` (network byte order inside).
    case v4(sockaddr_in)
    /// An IPv6 address and port, as the C `sockaddr_in6` (network byte order inside).
    case v6(sockaddr_in6)

    /// Thrown when a host name is neither a numeric address nor resolvable.
    public struct ResolutionError: Error, CustomStringConvertible, Sendable {
        /// The host name that could not be resolved.
        public let host: String
        /// Why, in the resolver's words (`gai_strerror`).
        public let reason: String
        /// `cannot resolve host 'HOST': REASON`.
        public var description: String { "cannot resolve host '\(host)': \(reason)" }
    }

    /// Parses a numeric IPv4 or IPv6 address, or resolves a name such as
    /// `localhost` (first stream address wins).
    public init(host: String, port: UInt16) throws(ResolutionError) {
        let bare = host.hasPrefix("[") && host.hasSuffix("]") ? String(host.dropFirst().dropLast()) : host
        if let numeric = SocketAddress(numeric: host, family: AF_INET, port: port)
            ?? SocketAddress(numeric: bare, family: AF_INET6, port: port) {
            self = numeric
            return
        }
        self = try Self.resolve(host, port: port)
    }

    /// A numeric address of `family` (`inet_pton`: no names, no leading zeros
    /// in IPv4), or nil.
    init?(numeric host: String, family: Int32, port: UInt16) {
        if family == AF_INET {
            var v4 = sockaddr_in()
            guard inet_pton(AF_INET, host, &v4.sin_addr) == 1 else { return nil }
            v4.sin_family = sa_family_t(AF_INET)
            v4.sin_port = port.bigEndian
            self = .v4(v4)
        } else {
            var v6 = sockaddr_in6()
            guard inet_pton(AF_INET6, host, &v6.sin6_addr) == 1 else { return nil }
            v6.sin6_family = sa_family_t(AF_INET6)
            v6.sin6_port = port.bigEndian
            self = .v6(v6)
        }
    }

    private static func resolve(_ host: String, port: UInt16) throws(ResolutionError) -> SocketAddress {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, nil, &hints, &list)
        guard status == 0, let first = list else {
            throw ResolutionError(host: host, reason: String(cString: gai_strerror(status)))
        }
        defer { freeaddrinfo(list) }
        var cursor: UnsafeMutablePointer<addrinfo>? = first
        while let info = cursor {
            if let address = info.pointee.ai_addr,
               var resolved = SocketAddress(address, length: info.pointee.ai_addrlen) {
                resolved.port = port
                return resolved
            }
            cursor = info.pointee.ai_next
        }
        throw ResolutionError(host: host, reason: "no IPv4 or IPv6 address")
    }

    /// Reads an address the kernel filled in (accept, getsockname, getaddrinfo).
    init?(_ address: UnsafePointer<sockaddr>, length: socklen_t) {
        switch Int32(address.pointee.sa_family) {
        case AF_INET where length >= MemoryLayout<sockaddr_in>.size:
            self = .v4(UnsafeRawPointer(address).loadUnaligned(as: sockaddr_in.self))
        case AF_INET6 where length >= MemoryLayout<sockaddr_in6>.size:
            self = .v6(UnsafeRawPointer(address).loadUnaligned(as: sockaddr_in6.self))
        default:
            return nil
        }
    }

    /// The local or remote address of a socket (`getsockname`/`getpeername`).
    init?(of fd: Int32, peer: Bool) {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let result = withUnsafeMutablePointer(to: &storage) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                peer ? getpeername(fd, $0, &length) : getsockname(fd, $0, &length)
            }
        }
        guard result == 0 else { return nil }
        let address = withUnsafePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { SocketAddress($0, length: length) }
        }
        guard let address else { return nil }
        self = address
    }

    var family: Int32 {
        switch self {
        case .v4: AF_INET
        case .v6: AF_INET6
        }
    }

    /// The port, in host byte order; setting it keeps the host.
    public var port: UInt16 {
        get {
            switch self {
            case .v4(let a): UInt16(bigEndian: a.sin_port)
            case .v6(let a): UInt16(bigEndian: a.sin6_port)
            }
        }
        set {
            switch self {
            case .v4(var a): a.sin_port = newValue.bigEndian; self = .v4(a)
            case .v6(var a): a.sin6_port = newValue.bigEndian; self = .v6(a)
            }
        }
    }

    /// The numeric host, e.g. `127.0.0.1` or `::1`.
    public var host: String {
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        switch self {
        case .v4(var a): _ = inet_ntop(AF_INET, &a.sin_addr, &text, socklen_t(text.count))
        case .v6(var a): _ = inet_ntop(AF_INET6, &a.sin6_addr, &text, socklen_t(text.count))
        }
        return String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    /// `host:port`, an IPv6 host in brackets: `127.0.0.1:7777`, `[::1]:7777`.
    public var description: String {
        switch self {
        case .v4: "\(host):\(port)"
        case .v6: "[\(host)]:\(port)"
        }
    }

    /// Lends the address to a call that takes `(const struct sockaddr *, socklen_t)`.
    func withSockAddr<R>(_ body: (UnsafePointer<sockaddr>, socklen_t) -> R) -> R {
        switch self {
        case .v4(var a):
            withUnsafePointer(to: &a) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
        case .v6(var a):
            withUnsafePointer(to: &a) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { body($0, socklen_t(MemoryLayout<sockaddr_in6>.size)) }
            }
        }
    }

    /// Whether both name the same host and port (compared as text, so that the C
    /// structures' padding bytes do not count).
    public static func == (lhs: SocketAddress, rhs: SocketAddress) -> Bool {
        lhs.description == rhs.description
    }
}
