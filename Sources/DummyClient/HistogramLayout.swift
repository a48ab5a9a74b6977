import Histogram

/// Where an HdrHistogram keeps the count of a value: the counts-array index
/// math every HdrHistogram implementation shares, for the layout an encoded
/// histogram's header names. Mirrors hdrhistogram-swift's (internal) layout,
/// which the codec's round-trip tests check.
struct HistogramLayout: Equatable {
    let unitMagnitude: Int
    let subBucketHalfCountMagnitude: Int
    /// Entries in the counts array: enough buckets to cover the highest trackable value.
    let countsLength: Int

    /// nil for a layout no HdrHistogram can have (the checks its initializer traps on).
    init?(lowestDiscernibleValue: UInt64, highestTrackableValue: UInt64, significantDigits: Int) {
        guard (0...5).contains(significantDigits), lowestDiscernibleValue >= 1,
              lowestDiscernibleValue <= UInt64.max / 2, highestTrackableValue >= 2 * lowestDiscernibleValue
        else { return nil }
        var largestValueWithSingleUnitResolution: UInt64 = 2
        for _ in 0..<significantDigits { largestValueWithSingleUnitResolution *= 10 }
        var subBucketCountMagnitude = 1
        while UInt64(1) << subBucketCountMagnitude < largestValueWithSingleUnitResolution { subBucketCountMagnitude += 1 }
        unitMagnitude = 63 - lowestDiscernibleValue.leadingZeroBitCount
        subBucketHalfCountMagnitude = subBucketCountMagnitude - 1
        guard unitMagnitude + subBucketHalfCountMagnitude <= 61 else { return nil }

        var smallestUntrackableValue = UInt64(1) << (subBucketCountMagnitude + unitMagnitude)
        var buckets = 1
        while smallestUntrackableValue <= highestTrackableValue {
            if smallestUntrackableValue > UInt64.max / 2 {
                buckets += 1
                break
            }
            smallestUntrackableValue <<= 1
            buckets += 1
        }
        countsLength = (buckets + 1) << subBucketHalfCountMagnitude
    }

    init?(_ histogram: LatencyHistogram) {
        self.init(lowestDiscernibleValue: histogram.lowestDiscernibleValue, highestTrackableValue: histogram.highestTrackableValue,
                  significantDigits: Int(histogram.numberOfSignificantValueDigits.rawValue))
    }

    /// The sum of every count times its bucket's highest value, which
    /// hdrhistogram-swift's iterators (behind `mean`, `allValues()`, ...) add
    /// up in 64 bits, trapping on overflow; nil where they would trap.
    /// Real latencies never come near (2^64 ns is 584 years); a crafted file can.
    func valueTotal(of histogram: LatencyHistogram) -> UInt64? {
        var total: UInt64 = 0
        var count: UInt64 = 0
        // Values grow with the index, and every count lies at or below the max recorded.
        for index in 0..<countsLength {
            let value = value(atIndex: index)
            guard value <= histogram.maxRecorded else { break }
            let bucketCount = histogram.countForValue(value)
            let (product, productOverflowed) = bucketCount.multipliedReportingOverflow(by: histogram.highestEquivalentForValue(value))
            let (sum, sumOverflowed) = total.addingReportingOverflow(product)
            let (counted, countOverflowed) = count.addingReportingOverflow(bucketCount)
            if productOverflowed || sumOverflowed || countOverflowed { return nil }
            (total, count) = (sum, counted)
        }
        return total
    }

    /// The lowest value counted at `index`.
    func value(atIndex index: Int) -> UInt64 {
        let subBucketHalfCount = 1 << subBucketHalfCountMagnitude
        var bucketIndex = (index >> subBucketHalfCountMagnitude) - 1
        var subBucketIndex = (index & (subBucketHalfCount - 1)) + subBucketHalfCount
        if bucketIndex < 0 {
            subBucketIndex -= subBucketHalfCount
            bucketIndex = 0
        }
        return UInt64(subBucketIndex) << (bucketIndex + unitMagnitude)
    }
}
