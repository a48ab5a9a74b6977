import Foundation
import PropertyBased
import Reactor
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// The PROXY protocol parser on bytes alone: every valid form, every split
/// point of it, and every way a header can be wrong.
@Suite("PROXY header")
struct ProxyHeaderTests {
    @Test(arguments: ProxyHeaderSample.valid)
    func validHeaderIsCompleteOnlyOnceWholeAtEverySplitPoint(_ sample: ProxyHeaderSample) {
        let payload: [UInt8] = [0x0D, 0x0A, 0x50, 1, 2, 3] // what could pass for more header
        let stream = sample.bytes + payload
        for cut in 0..<sample.bytes.count {
            #expect(parse(Array(stream[..<cut])) == .incomplete, "\(sample) cut at \(cut)")
        }
        for end in sample.bytes.count...stream.count {
            #expect(parse(Array(stream[..<end])) == .complete(sample.expected!, length: sample.bytes.count), "\(sample)")
        }
    }

    @Test(arguments: ProxyHeaderSample.invalid)
    func invalidHeaderIsRefusedAndNoPrefixOfItIsComplete(_ sample: ProxyHeaderSample) {
        guard case .invalid(let reason) = parse(sample.bytes) else {
            Issue.record("\(sample): \(parse(sample.bytes))")
            return
        }
        #expect(reason.contains(sample.reason), "\(sample): \(reason)")
        for cut in 0..<sample.bytes.count {
            if case .complete = parse(Array(sample.bytes[..<cut])) { Issue.record("\(sample) complete at \(cut)") }
        }
    }

    @Test func addressesOfEveryFamilyAndPortSurviveBothVersions() async {
        let v4 = zip(Gen.uint32(), Gen.uint32(), Gen.uint16(), Gen.uint16())
        await propertyCheck(input: v4) { source, destination, sourcePort, destinationPort in
            let client = ipv4(source, port: sourcePort), server = ipv4(destination, port: destinationPort)
            for bytes in [proxyV1(client, server), proxyV2(client, server)] {
                #expect(parse(bytes) == .complete(proxiedHeader(bytes[0] == 0x50 ? 1 : 2, client, server), length: bytes.count))
            }
        }
        let v6 = zip(Gen.uint64(), Gen.uint64(), Gen.uint16(), Gen.uint16())
        await propertyCheck(input: v6) { high, low, sourcePort, destinationPort in
            let client = ipv6(high, low, port: sourcePort), server = ipv6(low, high, port: destinationPort)
            for bytes in [proxyV1(client, server), proxyV2(client, server)] {
                #expect(parse(bytes) == .complete(proxiedHeader(bytes[0] == 0x50 ? 1 : 2, client, server), length: bytes.count))
            }
        }
    }

    @Test func arbitraryBytesKeepEveryInvariant() async {
        let starts: [[UInt8]] = [[], Array("PROXY ".utf8), Array(ProxyHeaderSample.signature)]
        await propertyCheck(input: Gen.int(in: 0...2), Gen.uint8().array(of: 0...300)) { start, noise in
            let bytes = starts[start] + noise
            #expect(bytes.withUnsafeBytes { proxyHeaderProblem($0) } == nil, "\(bytes)")
        }
    }

    /// The inputs libFuzzer kept (`make fuzz` grows Fuzz/Corpus/ProxyHeader) replayed.
    @Test func fuzzingCorpusKeepsEveryInvariant() throws {
        let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../Fuzz/Corpus/ProxyHeader").standardized
        let files = try FileManager.default.contentsOfDirectory(atPath: corpus.path)
        #expect(files.count >= 6, "the seeds, at least")
        for file in files {
            let bytes = try [UInt8](Data(contentsOf: corpus.appendingPathComponent(file)))
            #expect(bytes.withUnsafeBytes { proxyHeaderProblem($0) } == nil, "\(file)")
        }
    }
}

// MARK: - Samples

struct ProxyHeaderSample: Sendable, CustomTestStringConvertible {
    let name: String
    let bytes: [UInt8]
    /// For a valid sample, the header it holds.
    var expected: ProxyHeader?
    /// For an invalid one, words of the reason.
    var reason = ""

    var testDescription: String { name }

    static let signature: [UInt8] = [0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A]

    static let valid: [ProxyHeaderSample] = {
        let client4 = proxyAddress("192.0.2.1", 56324), server4 = proxyAddress("198.51.100.1", 443)
        let client6 = proxyAddress("2001:db8::1", 65535), server6 = proxyAddress("::1", 0)
        let longest = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n"
        return [
            ProxyHeaderSample(name: "v1 TCP4", bytes: Array("PROXY TCP4 192.0.2.1 198.51.100.1 56324 443\r\n".utf8),
                              expected: proxiedHeader(1, client4, server4)),
            ProxyHeaderSample(name: "v1 TCP6", bytes: Array("PROXY TCP6 2001:db8::1 ::1 65535 0\r\n".utf8),
                              expected: proxiedHeader(1, client6, server6)),
            ProxyHeaderSample(name: "v1 UNKNOWN", bytes: Array("PROXY UNKNOWN\r\n".utf8), expected: localHeader(1)),
            ProxyHeaderSample(name: "v1 UNKNOWN, 107 bytes", bytes: Array(longest.utf8), expected: localHeader(1)),
            ProxyHeaderSample(name: "v2 PROXY TCP4", bytes: proxyV2(client4, server4), expected: proxiedHeader(2, client4, server4)),
            ProxyHeaderSample(name: "v2 PROXY TCP6", bytes: proxyV2(client6, server6), expected: proxiedHeader(2, client6, server6)),
            ProxyHeaderSample(name: "v2 PROXY TCP4 with TLVs",
                              bytes: proxyV2(client4, server4, tlvs: [0x04, 0, 0, 0x05, 0, 3, 1, 2, 3]),
                              expected: proxiedHeader(2, client4, server4)),
            ProxyHeaderSample(name: "v2 LOCAL", bytes: signature + [0x20, 0x00, 0, 0], expected: localHeader(2)),
            ProxyHeaderSample(name: "v2 LOCAL with addresses", bytes: signature + [0x20, 0x11, 0, 12] + [UInt8](repeating: 7, count: 12),
                              expected: localHeader(2)),
            ProxyHeaderSample(name: "v2 PROXY UNSPEC", bytes: signature + [0x21, 0x00, 0, 0], expected: localHeader(2)),
            ProxyHeaderSample(name: "v2 PROXY UNIX", bytes: signature + [0x21, 0x31, 0, 216] + [UInt8](repeating: 0, count: 216),
                              expected: localHeader(2)),
        ]
    }()

    static let invalid: [ProxyHeaderSample] = {
        func v1(_ text: String, _ reason: String) -> ProxyHeaderSample {
            ProxyHeaderSample(name: text.debugDescription, bytes: Array(text.utf8), reason: reason)
        }
        func v2(_ name: String, _ tail: [UInt8], _ reason: String) -> ProxyHeaderSample {
            ProxyHeaderSample(name: name, bytes: signature + tail, reason: reason)
        }
        return [
            v1("GET / HTTP/1.1\r\n", "not a PROXY"),
            v1("PROXY\r\n", "not a PROXY"),
            v1("PROXY TCP4 192.0.2.1 198.51.100.1 56324\r\n", "3 fields"),
            v1("PROXY TCP4 192.0.2.1 198.51.100.1 56324 443 1\r\n", "5 fields"),
            v1("PROXY TCP4 192.0.2.1  198.51.100.1 56324 443\r\n", "fields"),
            v1("PROXY TCP5 192.0.2.1 198.51.100.1 56324 443\r\n", "unknown protocol"),
            v1("PROXY TCP4 ::1 ::1 1 2\r\n", "bad TCP4 address"),
            v1("PROXY TCP6 192.0.2.1 ::1 1 2\r\n", "bad TCP6 address"),
            v1("PROXY TCP4 192.0.2.01 198.51.100.1 1 2\r\n", "bad TCP4 address"),
            v1("PROXY TCP4 localhost 198.51.100.1 1 2\r\n", "bad TCP4 address"),
            v1("PROXY TCP4 192.0.2.1 198.51.100.1 65536 443\r\n", "bad port"),
            v1("PROXY TCP4 192.0.2.1 198.51.100.1 080 443\r\n", "bad port"),
            v1("PROXY TCP4 192.0.2.1 198.51.100.1 -1 443\r\n", "bad port"),
            v1("PROXY TCP4 192.0.2.1 198.51.100.1 1 \r\n", "bad port"),
            v1("PROXY TCP4 192.0.2.1 198.51.100.1 1 2\rX", "CR without LF"),
            v1("PROXY TCP4 192.0.2.1 198.51.100.1 1 2\n", "LF without CR"),
            v1("PROXY UNKNOWN " + String(repeating: "x", count: 100), "longer than 107"),
            v1("PROXY UNKNOWN " + String(repeating: "x", count: 92) + "\r\n", "longer than 107"),
            ProxyHeaderSample(name: "signature broken", bytes: signature.dropLast() + [0x0B], reason: "not a PROXY"),
            v2("version 1", [0x11, 0x11, 0, 12] + zeros(12), "version 1"),
            v2("version 3", [0x31, 0x11, 0, 12] + zeros(12), "version 3"),
            v2("command 2", [0x22, 0x11, 0, 12] + zeros(12), "unknown command 2"),
            v2("family 4", [0x21, 0x41, 0, 12] + zeros(12), "unknown family"),
            v2("transport 3", [0x21, 0x13, 0, 12] + zeros(12), "unknown family or transport"),
            v2("PROXY over UDP", [0x21, 0x12, 0, 12] + zeros(12), "datagram"),
            v2("IPv4 addresses short", [0x21, 0x11, 0, 11] + zeros(11), "12 B needed"),
            v2("IPv6 addresses short", [0x21, 0x21, 0, 12] + zeros(12), "36 B needed"),
            v2("oversized", [0x21, 0x11, 0x10, 0x00], "over the limit of 4096 B"),
            v2("TLV cut short", [0x21, 0x11, 0, 14] + zeros(12) + [0x04, 0], "malformed TLV"),
            v2("TLV longer than the header", [0x21, 0x11, 0, 16] + zeros(12) + [0x04, 0, 2, 0], "malformed TLV"),
        ]
    }()

}

// MARK: - Building headers

private func parse(_ bytes: [UInt8]) -> ProxyHeader.ParseResult {
    bytes.withUnsafeBytes { ProxyHeader.parse($0) }
}

private func zeros(_ count: Int) -> [UInt8] { [UInt8](repeating: 0, count: count) }

/// What parsing `header` alone gives: the way to make an expected header.
private func parsedHeader(_ bytes: [UInt8]) -> ProxyHeader {
    guard case .complete(let header, _) = parse(bytes) else { fatalError("sample does not parse: \(bytes)") }
    return header
}

func localHeader(_ version: Int) -> ProxyHeader {
    parsedHeader(version == 1 ? Array("PROXY UNKNOWN\r\n".utf8) : ProxyHeaderSample.signature + [0x20, 0, 0, 0])
}

/// The header naming `client` and `server`, as `version` carries it.
func proxiedHeader(_ version: Int, _ client: SocketAddress, _ server: SocketAddress) -> ProxyHeader {
    let header = parsedHeader(version == 1 ? proxyV1(client, server) : proxyV2(client, server))
    precondition(header.addresses?.source == client && header.addresses?.destination == server)
    return header
}

func proxyAddress(_ host: String, _ port: UInt16) -> SocketAddress {
    try! SocketAddress(host: host, port: port)
}

private func ipv4(_ bits: UInt32, port: UInt16) -> SocketAddress {
    proxyAddress("\(bits >> 24).\(bits >> 16 & 0xFF).\(bits >> 8 & 0xFF).\(bits & 0xFF)", port)
}

private func ipv6(_ high: UInt64, _ low: UInt64, port: UInt16) -> SocketAddress {
    let groups = (0..<4).map { String(high >> (48 - 16 * $0) & 0xFFFF, radix: 16) }
        + (0..<4).map { String(low >> (48 - 16 * $0) & 0xFFFF, radix: 16) }
    return proxyAddress(groups.joined(separator: ":"), port)
}

func proxyV1(_ client: SocketAddress, _ server: SocketAddress) -> [UInt8] {
    let family = client.host.contains(":") ? "TCP6" : "TCP4"
    return Array("PROXY \(family) \(client.host) \(server.host) \(client.port) \(server.port)\r\n".utf8)
}

func proxyV2(_ client: SocketAddress, _ server: SocketAddress, tlvs: [UInt8] = []) -> [UInt8] {
    let isV6 = client.host.contains(":")
    let addresses = rawAddress(client) + rawAddress(server) + bigEndian(client.port) + bigEndian(server.port)
    let length = addresses.count + tlvs.count
    return ProxyHeaderSample.signature + [0x21, isV6 ? 0x21 : 0x11] + bigEndian(UInt16(length)) + addresses + tlvs
}

private func rawAddress(_ address: SocketAddress) -> [UInt8] {
    switch address {
    case .v4(var a): withUnsafeBytes(of: &a.sin_addr) { Array($0) }
    case .v6(var a): withUnsafeBytes(of: &a.sin6_addr) { Array($0) }
    }
}

private func bigEndian(_ value: UInt16) -> [UInt8] { [UInt8(value >> 8), UInt8(value & 0xFF)] }
