import Histogram

/// A histogram in HdrHistogram's interchange encoding, compressed V2 (what
/// its interval logs carry, base64'd): a V2 payload (a 40-byte big-endian
/// header naming the layout, then the counts array in ZigZag LEB128 with runs
/// of zeros as negative lengths), zlib-deflated behind an 8-byte header.
/// Counts go bucket for bucket, so a decoded histogram equals the original.
enum HistogramEncoding {
    /// The V2 cookie bases. Writers set 0x10 (the LEB128 word-size marker);
    /// readers compare the base, ignoring bits 4-7, as HdrHistogram's do.
    static let payloadCookieBase: UInt32 = 0x1c84_9303
    static let compressedCookieBase: UInt32 = 0x1c84_9304
    private static let wordSizeMarker: UInt32 = 0x10
    private static let cookieVariantBits: UInt32 = 0xF0
    private static let payloadHeaderSize = 40
    private static let compressedHeaderSize = 8

    static func encode(_ histogram: LatencyHistogram) -> [UInt8] {
        var counts: [UInt8] = []
        var pendingZeros: Int64 = 0
        func writePendingZeros() {
            // One zero is written as a count; longer runs as their negated length.
            if pendingZeros > 0 { ZigZagLEB128.append(pendingZeros == 1 ? 0 : -pendingZeros, to: &counts) }
            pendingZeros = 0
        }
        // allValues() steps through every counts-array index in order; zeros past
        // the last recorded bucket are left out, as HdrHistogram's encoders do.
        for bucket in histogram.allValues() {
            if bucket.count == 0 {
                pendingZeros += 1
            } else {
                writePendingZeros()
                // The format's counts are signed 64-bit; 2^63 samples in one bucket cannot happen.
                ZigZagLEB128.append(Int64(bucket.count), to: &counts)
            }
        }
        // An empty histogram still carries index 0's count, as the reference encoder writes it.
        if counts.isEmpty { ZigZagLEB128.append(0, to: &counts) }

        var payload: [UInt8] = []
        payload.reserveCapacity(payloadHeaderSize + counts.count)
        appendBigEndian(payloadCookieBase | wordSizeMarker, to: &payload)
        appendBigEndian(UInt32(counts.count), to: &payload)
        appendBigEndian(UInt32(0), to: &payload) // normalizing index offset: none
        appendBigEndian(UInt32(histogram.numberOfSignificantValueDigits.rawValue), to: &payload)
        appendBigEndian(histogram.lowestDiscernibleValue, to: &payload)
        appendBigEndian(histogram.highestTrackableValue, to: &payload)
        appendBigEndian((1.0 as Double).bitPattern, to: &payload) // integer to double conversion ratio
        payload += counts

        let deflated = Zlib.compress(payload)
        var encoded: [UInt8] = []
        encoded.reserveCapacity(compressedHeaderSize + deflated.count)
        appendBigEndian(compressedCookieBase | wordSizeMarker, to: &encoded)
        appendBigEndian(UInt32(deflated.count), to: &encoded)
        return encoded + deflated
    }

    static func decode(_ encoded: [UInt8]) throws(HistogramDecodingError) -> LatencyHistogram {
        guard encoded.count >= compressedHeaderSize else {
            throw HistogramDecodingError("\(encoded.count) bytes, too short for a compressed histogram's 8-byte header")
        }
        let cookie = readBigEndian(UInt32.self, encoded, at: 0)
        guard cookie & ~cookieVariantBits == compressedCookieBase else {
            throw HistogramDecodingError("cookie 0x\(String(cookie, radix: 16)) is not a compressed V2 histogram's (0x1c849314)")
        }
        let deflatedLength = Int(readBigEndian(UInt32.self, encoded, at: 4))
        guard deflatedLength <= encoded.count - compressedHeaderSize else {
            throw HistogramDecodingError("truncated: header says \(deflatedLength) compressed bytes, \(encoded.count - compressedHeaderSize) follow")
        }
        guard let inflater = Zlib.Inflater(encoded[compressedHeaderSize..<(compressedHeaderSize + deflatedLength)]) else {
            throw HistogramDecodingError("zlib could not start inflating (out of memory)")
        }
        guard let header = inflater.read(payloadHeaderSize) else {
            throw HistogramDecodingError("truncated or corrupt zlib data: no whole 40-byte V2 header")
        }
        let payloadCookie = readBigEndian(UInt32.self, header, at: 0)
        guard payloadCookie & ~cookieVariantBits == payloadCookieBase else {
            throw HistogramDecodingError("payload cookie 0x\(String(payloadCookie, radix: 16)) is not a V2 histogram's (0x1c849313)")
        }
        let countsByteLength = Int(readBigEndian(UInt32.self, header, at: 4))
        let normalizingIndexOffset = readBigEndian(UInt32.self, header, at: 8)
        let digits = Int(Int32(bitPattern: readBigEndian(UInt32.self, header, at: 12)))
        let lowest = readBigEndian(UInt64.self, header, at: 16)
        let highest = readBigEndian(UInt64.self, header, at: 24)
        guard normalizingIndexOffset == 0 else {
            throw HistogramDecodingError("normalizing index offset \(normalizingIndexOffset): shifted histograms are not supported")
        }
        guard let layout = HistogramLayout(lowestDiscernibleValue: lowest, highestTrackableValue: highest, significantDigits: digits),
              let significantDigits = SignificantDigits(rawValue: Int8(digits))
        else {
            throw HistogramDecodingError("no HdrHistogram has this layout: lowest \(lowest), highest \(highest), \(digits) significant digits")
        }
        guard countsByteLength <= layout.countsLength * ZigZagLEB128.maximumBytes else {
            throw HistogramDecodingError("counts of \(countsByteLength) bytes: more than \(layout.countsLength) counts can take")
        }
        guard let countBytes = inflater.read(countsByteLength) else {
            throw HistogramDecodingError("truncated or corrupt zlib data: the header names \(countsByteLength) bytes of counts")
        }
        guard inflater.endsHere() else {
            throw HistogramDecodingError("corrupt zlib data: no stream end with a matching checksum after the counts")
        }

        var histogram = LatencyHistogram(lowestDiscernibleValue: lowest, highestTrackableValue: highest,
                                         numberOfSignificantValueDigits: significantDigits)
        var offset = 0
        var index = 0
        while offset < countBytes.count {
            guard let word = ZigZagLEB128.read(countBytes[...], at: &offset) else {
                throw HistogramDecodingError("counts end in the middle of a number")
            }
            let indices = word < 0 ? word.magnitude : 1
            guard indices <= UInt64(layout.countsLength - index) else {
                throw HistogramDecodingError("counts go past the histogram's \(layout.countsLength) buckets")
            }
            if word < 0 {
                index += Int(indices)
                continue
            }
            if word > 0, !histogram.record(layout.value(atIndex: index), count: UInt64(word)) {
                throw HistogramDecodingError("a count at bucket \(index) does not fit in the histogram")
            }
            index += 1
        }
        guard layout.valueTotal(of: histogram) != nil else {
            throw HistogramDecodingError("counts whose sum, or sum of values, overflows 64 bits: not real samples")
        }
        return histogram
    }

    private static func appendBigEndian<Integer: FixedWidthInteger>(_ value: Integer, to bytes: inout [UInt8]) {
        withUnsafeBytes(of: value.bigEndian) { bytes.append(contentsOf: $0) }
    }

    private static func readBigEndian<Integer: FixedWidthInteger>(_: Integer.Type, _ bytes: [UInt8], at offset: Int) -> Integer {
        var value: Integer = 0
        for byte in bytes[offset..<(offset + MemoryLayout<Integer>.size)] { value = value << 8 | Integer(byte) }
        return value
    }
}

/// Why bytes are not an encoded histogram.
struct HistogramDecodingError: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}
