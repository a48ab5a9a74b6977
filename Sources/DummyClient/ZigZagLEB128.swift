/// HdrHistogram's variable-length integers (its `ZigZagEncoding`): a signed
/// 64-bit value ZigZag-mapped so small magnitudes are small, then written as
/// LEB128, seven bits a byte, low bits first; the ninth byte, if reached,
/// carries the last eight bits whole. So at most 9 bytes a value.
enum ZigZagLEB128 {
    static let maximumBytes = 9

    static func append(_ value: Int64, to bytes: inout [UInt8]) {
        var zigZag = UInt64(bitPattern: (value << 1) ^ (value >> 63))
        for _ in 1..<maximumBytes {
            if zigZag < 0x80 {
                bytes.append(UInt8(zigZag))
                return
            }
            bytes.append(UInt8(truncatingIfNeeded: zigZag) | 0x80)
            zigZag >>= 7
        }
        bytes.append(UInt8(truncatingIfNeeded: zigZag))
    }

    /// The value starting at `offset`, which moves past it; nil if the bytes end first.
    static func read(_ bytes: ArraySlice<UInt8>, at offset: inout Int) -> Int64? {
        var zigZag: UInt64 = 0
        for byteIndex in 0..<maximumBytes {
            guard offset < bytes.endIndex else { return nil }
            let byte = bytes[offset]
            offset += 1
            if byteIndex == maximumBytes - 1 {
                zigZag |= UInt64(byte) << 56
                break
            }
            zigZag |= UInt64(byte & 0x7F) << (7 * byteIndex)
            if byte < 0x80 { break }
        }
        return Int64(bitPattern: zigZag >> 1) ^ -Int64(bitPattern: zigZag & 1)
    }
}
