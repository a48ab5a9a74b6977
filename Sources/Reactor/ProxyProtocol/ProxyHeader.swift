#if canImport(Glibc)
import Glibc
#endif

/// The PROXY protocol header (HAProxy's, versions 1 and 2) that a load
/// balancer sends first on each connection it opens to a server, naming the
/// client it stands in for.
///
/// `parse` is strict: anything the specification does not allow is refused,
/// as is a header over `maximumLength`. It reads only the bytes it is given
/// and never past the header, so what follows is the protocol's own.
public struct ProxyHeader: Sendable, Equatable {
    /// 1 (the text form) or 2 (the binary form).
    public let version: Int
    /// The client's address and the address it connected to; nil for a
    /// connection the proxy made on its own behalf (v2 `LOCAL`, a health
    /// check; v1 `UNKNOWN`; a v2 address family other than IPv4 and IPv6),
    /// whose socket's own addresses stand.
    public let addresses: (source: SocketAddress, destination: SocketAddress)?

    /// The longest header accepted: a v1 line is at most 107 bytes, and a v2
    /// header whose length says more than this is refused as oversized.
    public static let maximumLength = 4096

    /// What `parse` found in the bytes given.
    public enum ParseResult: Sendable, Equatable {
        /// A header `length` bytes long (what follows is not part of it).
        case complete(ProxyHeader, length: Int)
        /// A valid start of a header; the rest has not arrived yet.
        case incomplete
        /// Not a valid header; the text says why.
        case invalid(String)
    }

    public static func == (lhs: ProxyHeader, rhs: ProxyHeader) -> Bool {
        lhs.version == rhs.version && lhs.addresses?.source == rhs.addresses?.source
            && lhs.addresses?.destination == rhs.addresses?.destination
    }

    /// Parses the header at the start of `bytes`.
    public static func parse(_ bytes: UnsafeRawBufferPointer) -> ParseResult {
        guard let first = bytes.first else { return .incomplete }
        switch first {
        case UInt8(ascii: "P"): return parseVersion1(bytes)
        case v2Signature[0]: return parseVersion2(bytes)
        default: return .invalid("not a PROXY protocol header")
        }
    }

    // MARK: Version 1: "PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n"

    static let v1MaximumLength = 107

    private static func parseVersion1(_ bytes: UnsafeRawBufferPointer) -> ParseResult {
        let prefix = Array("PROXY ".utf8)
        guard bytes.starts(with: prefix.prefix(bytes.count)) else { return .invalid("not a PROXY protocol header") }
        // The CR is at most the 106th byte, so that the line with its LF fits in 107.
        let searched = bytes.prefix(v1MaximumLength - 1)
        guard let carriageReturn = searched.firstIndex(where: { $0 == UInt8(ascii: "\r") || $0 == UInt8(ascii: "\n") }) else {
            return searched.count == v1MaximumLength - 1 ? .invalid("v1 header longer than 107 bytes") : .incomplete
        }
        guard bytes[carriageReturn] == UInt8(ascii: "\r") else { return .invalid("v1 header: LF without CR") }
        guard carriageReturn + 1 < bytes.count else { return .incomplete }
        guard bytes[carriageReturn + 1] == UInt8(ascii: "\n") else { return .invalid("v1 header: CR without LF") }
        let length = carriageReturn + 2
        let fields = bytes[prefix.count..<carriageReturn].split(separator: UInt8(ascii: " "), omittingEmptySubsequences: false)
        guard let family = fields.first.map({ String(decoding: $0, as: UTF8.self) }) else {
            return .invalid("v1 header without a protocol")
        }
        if family == "UNKNOWN" { return .complete(ProxyHeader(version: 1, addresses: nil), length: length) }
        let addressFamily: Int32
        switch family {
        case "TCP4": addressFamily = AF_INET
        case "TCP6": addressFamily = AF_INET6
        default: return .invalid("v1 header: unknown protocol '\(family)'")
        }
        guard fields.count == 5 else { return .invalid("v1 header: \(fields.count - 1) fields after \(family), 4 expected") }
        guard let source = address(text: fields[1], family: addressFamily),
              let destination = address(text: fields[2], family: addressFamily) else {
            return .invalid("v1 header: bad \(family) address")
        }
        guard let sourcePort = port(text: fields[3]), let destinationPort = port(text: fields[4]) else {
            return .invalid("v1 header: bad port")
        }
        return .complete(ProxyHeader(version: 1, addresses: (
            source.withPort(sourcePort), destination.withPort(destinationPort))), length: length)
    }

    private static func address(text: UnsafeRawBufferPointer.SubSequence, family: Int32) -> SocketAddress? {
        guard !text.isEmpty, text.count < Int(INET6_ADDRSTRLEN) else { return nil }
        return SocketAddress(numeric: String(decoding: text, as: UTF8.self), family: family, port: 0)
    }

    /// A decimal port, 0-65535, without a sign or a leading zero.
    private static func port(text: UnsafeRawBufferPointer.SubSequence) -> UInt16? {
        guard (1...5).contains(text.count), text.first != UInt8(ascii: "0") || text.count == 1 else { return nil }
        var value = 0
        for digit in text {
            guard (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(digit) else { return nil }
            value = value * 10 + Int(digit - UInt8(ascii: "0"))
        }
        return value <= Int(UInt16.max) ? UInt16(value) : nil
    }

    // MARK: Version 2: signature, version and command, family, length, addresses, TLVs

    static let v2Signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]
    static let v2FixedLength = 16

    private static func parseVersion2(_ bytes: UnsafeRawBufferPointer) -> ParseResult {
        guard bytes.starts(with: v2Signature.prefix(bytes.count)) else { return .invalid("not a PROXY protocol header") }
        guard bytes.count >= v2FixedLength else { return .incomplete }
        let versionAndCommand = bytes[12], familyAndTransport = bytes[13]
        guard versionAndCommand >> 4 == 2 else { return .invalid("v2 header: version \(versionAndCommand >> 4)") }
        let isLocal: Bool
        switch versionAndCommand & 0x0F {
        case 0: isLocal = true
        case 1: isLocal = false
        case let command: return .invalid("v2 header: unknown command \(command)")
        }
        let bodyLength = Int(bytes[14]) << 8 | Int(bytes[15])
        let length = v2FixedLength + bodyLength
        guard length <= maximumLength else {
            return .invalid("v2 header of \(length) B over the limit of \(maximumLength) B")
        }
        let family = familyAndTransport >> 4, transport = familyAndTransport & 0x0F
        guard family <= 3, transport <= 2 else { return .invalid("v2 header: unknown family or transport \(familyAndTransport)") }
        // UNSPEC, IPv4, IPv6, UNIX: the address block's size.
        let addressLength = [0, 12, 36, 216][Int(family)]
        guard bodyLength >= addressLength else {
            return .invalid("v2 header: \(bodyLength) B of addresses, \(addressLength) B needed")
        }
        guard bytes.count >= length else { return .incomplete }
        guard validTLVs(UnsafeRawBufferPointer(rebasing: bytes[(v2FixedLength + addressLength)..<length])) else {
            return .invalid("v2 header: malformed TLV")
        }
        if isLocal || family == 0 || family == 3 {
            return .complete(ProxyHeader(version: 2, addresses: nil), length: length)
        }
        guard transport == 1 else { return .invalid("v2 header: PROXY for a datagram transport") }
        let body = UnsafeRawBufferPointer(rebasing: bytes[v2FixedLength..<length])
        let addresses = addresses(body, hostSize: family == 1 ? 4 : 16)
        return .complete(ProxyHeader(version: 2, addresses: addresses), length: length)
    }

    /// Type-length-value records that fill `bytes` exactly.
    private static func validTLVs(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var offset = 0
        while offset < bytes.count {
            guard bytes.count - offset >= 3 else { return false }
            offset += 3 + (Int(bytes[offset + 1]) << 8 | Int(bytes[offset + 2]))
        }
        return offset == bytes.count
    }

    /// The source and destination of a v2 address block: two hosts of
    /// `hostSize` bytes (4: IPv4, 16: IPv6), then their two ports.
    private static func addresses(_ body: UnsafeRawBufferPointer, hostSize: Int) -> (SocketAddress, SocketAddress) {
        func address(_ index: Int) -> SocketAddress {
            let host = UnsafeRawBufferPointer(rebasing: body[(index * hostSize)..<((index + 1) * hostSize)])
            let portOffset = 2 * hostSize + 2 * index
            let port = UInt16(body[portOffset]) << 8 | UInt16(body[portOffset + 1])
            if hostSize == 4 {
                var v4 = sockaddr_in()
                v4.sin_family = sa_family_t(AF_INET)
                withUnsafeMutableBytes(of: &v4.sin_addr) { $0.copyMemory(from: host) }
                return SocketAddress.v4(v4).withPort(port)
            }
            var v6 = sockaddr_in6()
            v6.sin6_family = sa_family_t(AF_INET6)
            withUnsafeMutableBytes(of: &v6.sin6_addr) { $0.copyMemory(from: host) }
            return SocketAddress.v6(v6).withPort(port)
        }
        return (address(0), address(1))
    }
}

extension SocketAddress {
    func withPort(_ port: UInt16) -> SocketAddress {
        var address = self
        address.port = port
        return address
    }
}

/// A connection refused because of its PROXY header: missing, malformed,
/// oversized or too slow. `Server`'s `errors` hears of each.
public struct ProxyHeaderRejection: Error, Sendable, CustomStringConvertible {
    /// The socket's own peer (the proxy, or whoever connected), if still known.
    public let peer: SocketAddress?
    /// What was wrong with the header.
    public let reason: String

    /// `PROXY header from 127.0.0.1:40000 refused: v1 header: bad port`.
    public var description: String {
        "PROXY header\(peer.map { " from \($0)" } ?? "") refused: \(reason)"
    }
}
