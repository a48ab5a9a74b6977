import Reactor
#if canImport(Glibc)
import Glibc
#endif

/// `--source-address`, checked before the run by binding a socket to it once:
/// an address this host does not have is then a flag error, not a connect
/// failure on every connection.
enum SourceAddress {
    /// Why `address` cannot be bound on this host, or nil when it can.
    static func bindError(_ address: SocketAddress) -> String? {
        let code = switch address {
        case .v4(let a): bind(AF_INET, a)
        case .v6(let a): bind(AF_INET6, a)
        }
        return code == 0 ? nil : String(cString: strerror(code))
    }

    /// errno of binding a fresh socket of `family` to `address` (0: it bound), which it then closes.
    private static func bind<Address>(_ family: Int32, _ address: Address) -> Int32 {
        let fd = socket(family, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        guard fd >= 0 else { return errno }
        defer { close(fd) }
        let result = withUnsafePointer(to: address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.bind(fd, $0, socklen_t(MemoryLayout<Address>.size)) }
        }
        return result == 0 ? 0 : errno
    }
}
