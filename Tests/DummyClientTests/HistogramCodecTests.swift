import Histogram
import PropertyBased
import Testing
@testable import DummyClient

/// The HdrHistogram interchange encoding (compressed V2) and the interval log around it.
@Suite struct HistogramCodecTests {
    @Test func emptyHistogramRoundTrips() throws {
        let empty = LatencyHistogram.latency()
        try expectRoundTrip(empty)
        #expect(try decodedThroughLog(empty).totalCount == 0)
    }

    @Test func extremeValuesAndCountsRoundTrip() throws {
        var histogram = LatencyHistogram.latency()
        // 0, the smallest, the edges of bucket 0 and 1, the longest latency kept, and a huge count.
        for value: UInt64 in [0, 1, 2047, 2048, 2049, 4095, 4096, LatencyHistogram.longestLatency] { histogram.record(value) }
        // As large a count as the library's iterators can sum (count x value in 64 bits).
        histogram.record(LatencyHistogram.longestLatency, count: 1 << 26)
        try expectRoundTrip(histogram)

        var single = LatencyHistogram.latency()
        single.record(LatencyHistogram.longestLatency)
        try expectRoundTrip(single)
    }

    @Test func otherLayoutsRoundTrip() throws {
        // Files from other tools: a coarser unit, fewer and more digits, a longer range.
        for (lowest, highest, digits) in [(1_000 as UInt64, 3_600_000_000_000 as UInt64, SignificantDigits.two),
                                          (1, 1 << 24, .five), (3, 10_000, .zero), (1, 2, .one)] {
            var histogram = LatencyHistogram(lowestDiscernibleValue: lowest, highestTrackableValue: highest,
                                             numberOfSignificantValueDigits: digits)
            var value = lowest
            while value <= highest {
                histogram.record(value, count: value % 7 + 1)
                value = value * 3 + 1
            }
            try expectRoundTrip(histogram)
        }
    }

    @Test func randomHistogramsRoundTrip() async {
        await propertyCheck(count: 25, input: latencies.array(of: 0...400)) { samples in
            var histogram = LatencyHistogram.latency()
            for sample in samples { histogram.record(sample) }
            #expect(throws: Never.self) { try expectRoundTrip(histogram) }
        }
    }

    /// Python's hdrhistogram 0.10.8 (the C-accelerated hdrh), run once:
    ///     h = HdrHistogram(1, 100_000_000_000, 3)
    ///     for v, c in [(1, 3), (999, 1), (2047, 2), (2048, 5), (123456, 7), (1_000_000, 1), (99_000_000_000, 2)]:
    ///         h.record_value(v, c)
    ///     print(h.encode().decode())
    static let pythonLine = "HISTFAAAADN4nJNpmSzMwMAAwiDADKUZgVjco+wFg/0HqADbSX6mtQIsXP1xfGsNmA52MLEAAM5eCR8="
    static let pythonSamples: [(UInt64, UInt64)] = [(1, 3), (999, 1), (2047, 2), (2048, 5), (123_456, 7), (1_000_000, 1), (99_000_000_000, 2)]

    @Test func pythonsEncodingDecodesToItsCounts() throws {
        let decoded = try HistogramEncoding.decode(try #require(Base64.decode(Self.pythonLine[...])))
        #expect(decoded.lowestDiscernibleValue == 1)
        #expect(decoded.highestTrackableValue == 100_000_000_000)
        #expect(decoded.numberOfSignificantValueDigits == .three)
        #expect(decoded.totalCount == 21)
        for (value, count) in Self.pythonSamples { #expect(decoded.countForValue(value) == count, "count at \(value)") }
        #expect(decoded.max == 99_052_683_263) // hdrh's get_max_value(): the top of 99e9's bucket
        var expected = LatencyHistogram.latency()
        for (value, count) in Self.pythonSamples { expected.record(value, count: count) }
        #expect(decoded == expected)
    }

    @Test func ourHeaderIsPythons() throws {
        var histogram = LatencyHistogram.latency()
        for (value, count) in Self.pythonSamples { histogram.record(value, count: count) }
        // The counts' bytes differ on purpose: hdrh writes a lone zero as a run of one (-1), the
        // Java reference, as here, as a count of 0. Both decode alike. The header may not differ,
        // but for the counts' byte length (bytes 4..<8).
        let ours = try inflatedPayload(HistogramEncoding.encode(histogram))
        let pythons = try inflatedPayload(try #require(Base64.decode(Self.pythonLine[...])))
        #expect(ours[0..<4] == pythons[0..<4])
        #expect(ours[8..<40] == pythons[8..<40])
    }

    @Test func logLineKeepsTheExactMaxAndWindow() throws {
        var histogram = LatencyHistogram.latency()
        for value: UInt64 in [1_000, 5_000, 123_457] { histogram.record(value) }
        let window = HistogramLog.Window(tag: "flood", startSinceEpoch: 1_700_000_000.25, lengthSeconds: 10, histogram: histogram)
        let text = HistogramLog.text(of: window)
        let lines = text.split(separator: "\n")
        #expect(lines.contains("#[StartTime: 1700000000.250 (seconds since epoch), Tue Nov 14 22:13:20 UTC 2023]"))
        #expect(lines.contains("#[BaseTime: 1700000000.250 (seconds since epoch)]"))
        #expect(lines.contains { $0.hasPrefix("#") && $0.contains("nanoseconds") })
        #expect(lines.contains(Substring(HistogramLog.legend)))
        #expect(lines.last?.hasPrefix("Tag=flood,0.000,10.000,0.123457,HISTF") == true)
        let decoded = try decodedThroughLog(histogram)
        #expect(decoded == histogram)
        #expect(decoded.maxRecorded == 123_457)
        #expect(decoded.valueAtPercentile(99.9) == histogram.valueAtPercentile(99.9))
    }

    @Test(arguments: [
        ("", nil, "no interval histogram"),
        ("#[StartTime: 1 (seconds since epoch), x]\n\"StartTimestamp\",\"Interval_Length\"\n", nil, "no interval histogram"),
        ("hello\n", 1, "not an interval line"),
        ("#c\nTag=a,0.0,1.0,0.1,HISTFAAAADN4nJ\n", 2, "not whole base64"),
        ("0.0,1.0,0.1,AAAAAAAAAAAA\n", 1, "is not a compressed V2 histogram's"),
        ("0.0,x,0.1,HISTFAAAADN4\n", 1, "not an interval line"),
        ("Tag=only\n", 1, "a Tag= with no interval"),
    ] as [(String, Int?, String)])
    func malformedLogsNameTheFileAndLine(_ text: String, _ line: Int?, _ reason: String) {
        #expect {
            _ = try HistogramLog.entries(in: text, file: "bad.hlog")
        } throws: { error in
            guard let error = error as? HistogramLogError else { return false }
            return error.file == "bad.hlog" && error.line == line && error.reason.contains(reason)
                && "\(error)".hasPrefix("bad.hlog\(line.map { ":\($0)" } ?? ""): ")
        }
    }

    @Test func countsTooLargeToBeSamplesAreAnErrorNotACrash() throws {
        // A V2 payload by hand: 40-byte header (1, 100e9, 3 digits), then a zero run and one huge count.
        var counts: [UInt8] = []
        ZigZagLEB128.append(-20_000, to: &counts)
        ZigZagLEB128.append(1 << 60, to: &counts)
        var payload: [UInt8] = []
        for field: UInt64 in [0x1c84_9313_0000_0000 | UInt64(counts.count), 3, 1, 100_000_000_000, (1.0 as Double).bitPattern] {
            payload += field == 3 ? [0, 0, 0, 0, 0, 0, 0, 3] : withUnsafeBytes(of: field.bigEndian, Array.init)
        }
        payload += counts
        let deflated = Zlib.compress(payload)
        let encoded = withUnsafeBytes(of: (0x1c84_9314_0000_0000 | UInt64(deflated.count)).bigEndian, Array.init) + deflated
        #expect {
            try HistogramEncoding.decode(encoded)
        } throws: { error in
            "\(error)".contains("overflows 64 bits")
        }
    }

    @Test func everyTruncationAndCorruptionIsAnErrorNotACrash() throws {
        var histogram = LatencyHistogram.latency()
        for value: UInt64 in [1, 500, 70_000, 9_000_000, 1 << 33] { histogram.record(value, count: value % 5 + 1) }
        let encoded = HistogramEncoding.encode(histogram)
        for length in 0..<encoded.count {
            #expect(throws: HistogramDecodingError.self, "cut at \(length) of \(encoded.count)") {
                try HistogramEncoding.decode(Array(encoded[..<length]))
            }
        }
        // Any byte changed: a clear error, or (when zlib cannot tell, in unused bits) the same histogram.
        for index in encoded.indices {
            var corrupted = encoded
            corrupted[index] ^= 0x5A
            if let decoded = try? HistogramEncoding.decode(corrupted) { #expect(decoded == histogram, "byte \(index)") }
        }
    }
}

/// Sample latencies spread over every order of magnitude up to the longest kept.
let latencies = zip(Gen.int(in: 0...37), Gen.uint64()).map { bits, random in
    min(random >> (64 - max(bits, 1)), LatencyHistogram.longestLatency)
}

/// Encodes and decodes `histogram`; expects every bucket count, the total, max and min equal.
func expectRoundTrip(_ histogram: LatencyHistogram, sourceLocation: SourceLocation = #_sourceLocation) throws {
    let decoded = try HistogramEncoding.decode(HistogramEncoding.encode(histogram))
    #expect(decoded == histogram, sourceLocation: sourceLocation)
    #expect(decoded.allValues().map(\.count) == histogram.allValues().map(\.count), sourceLocation: sourceLocation)
    #expect(decoded.totalCount == histogram.totalCount, sourceLocation: sourceLocation)
    #expect(decoded.max == histogram.max, sourceLocation: sourceLocation)
    #expect(decoded.minNonZero == histogram.minNonZero, sourceLocation: sourceLocation)
    #expect(decoded.lowestEquivalentForValue(decoded.min) == histogram.lowestEquivalentForValue(histogram.min),
            sourceLocation: sourceLocation)
    #expect(decoded.highestTrackableValue == histogram.highestTrackableValue, sourceLocation: sourceLocation)
}

/// `histogram` written as a log and read back.
func decodedThroughLog(_ histogram: LatencyHistogram) throws -> LatencyHistogram {
    let window = HistogramLog.Window(tag: "test", startSinceEpoch: 0, lengthSeconds: 1, histogram: histogram)
    let entries = try HistogramLog.entries(in: HistogramLog.text(of: window), file: "test.hlog")
    try #require(entries.count == 1)
    return entries[0].histogram
}

/// The V2 payload inside a compressed encoding: its 40-byte header and the counts it names.
func inflatedPayload(_ encoded: [UInt8]) throws -> [UInt8] {
    let inflater = try #require(Zlib.Inflater(encoded[8...]))
    let header = try #require(inflater.read(40))
    let countsLength = header[4..<8].reduce(0) { $0 << 8 | Int($1) }
    return header + (try #require(inflater.read(countsLength)))
}
