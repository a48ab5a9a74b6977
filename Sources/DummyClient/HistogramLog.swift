import Reactor
#if canImport(Glibc)
import Glibc
#endif

/// HdrHistogram's interval log, the text file its tools (HistogramLogReader,
/// HistogramLogProcessor, Python's hdrh) read: `#` comments, StartTime and
/// BaseTime, the legend, then one line per interval,
/// `Tag=T,start,length,max,BASE64` with the histogram compressed V2 in base64.
/// Values are nanoseconds; Interval_Max is in milliseconds, as the reference
/// writers scale it, but written to the nanosecond: the encoding keeps only
/// the max's bucket, and the percentiles are capped at the max recorded, so
/// reading it back is what makes a decoded histogram's percentiles exact.
enum HistogramLog {
    static let legend = "\"StartTimestamp\",\"Interval_Length\",\"Interval_Max\",\"Interval_Compressed_Histogram\""
    /// Larger files are refused rather than read into memory.
    static let maximumFileSize = 256 << 20

    /// A run's measured window: its latency and when it was.
    struct Window: Sendable {
        var tag: String
        var startSinceEpoch: Double
        var lengthSeconds: Double
        var histogram: LatencyHistogram
    }

    /// An interval line read back: its histogram, and where it was for error messages.
    struct Entry {
        var line: Int
        var histogram: LatencyHistogram
    }

    /// The log of one window, as one interval starting at BaseTime.
    static func text(of window: Window) -> String {
        let start = Format.fixed(window.startSinceEpoch, 3)
        return """
            #[Histogram log format version 1.3]
            #[dummy-client \(window.tag) latency over the measured window; values in nanoseconds, Interval_Max in milliseconds (exact max recorded)]
            #[StartTime: \(start) (seconds since epoch), \(utcDate(window.startSinceEpoch))]
            #[BaseTime: \(start) (seconds since epoch)]
            \(legend)
            Tag=\(window.tag),0.000,\(Format.fixed(window.lengthSeconds, 3)),\(Format.fixed(Double(window.histogram.maxRecorded) / 1e6, 6)),\
            \(Base64.encode(HistogramEncoding.encode(window.histogram)))

            """
    }

    /// Every interval histogram in `text`; `file` names it in errors. A log
    /// without one (empty, or cut before its first interval) is an error.
    static func entries(in text: String, file: String) throws(HistogramLogError) -> [Entry] {
        var entries: [Entry] = []
        for (offset, rawLine) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let line = rawLine.hasSuffix("\r") ? rawLine.dropLast() : rawLine
            if line.isEmpty || line.hasPrefix("#") || line.hasPrefix("\"StartTimestamp\"") { continue }
            func failure(_ reason: String) -> HistogramLogError { HistogramLogError(file: file, line: offset + 1, reason: reason) }
            var fields = line
            if fields.hasPrefix("Tag=") {
                guard let comma = fields.firstIndex(of: ",") else { throw failure("a Tag= with no interval after it") }
                fields = fields[fields.index(after: comma)...]
            }
            let parts = fields.split(separator: ",", maxSplits: 3, omittingEmptySubsequences: false)
            guard parts.count == 4, parts[0...1].allSatisfy({ Double($0) != nil }), let maxMilliseconds = Double(parts[2]) else {
                throw failure("not an interval line (start,length,max,histogram): \(line.prefix(60))")
            }
            guard let bytes = Base64.decode(parts[3]) else {
                throw failure("the histogram is not whole base64 (\(parts[3].count) characters; truncated?)")
            }
            var histogram: LatencyHistogram
            do {
                histogram = try HistogramEncoding.decode(bytes)
            } catch {
                throw failure(error.description)
            }
            restoreExactMax(maxMilliseconds, in: &histogram)
            entries.append(Entry(line: offset + 1, histogram: histogram))
        }
        guard !entries.isEmpty else {
            throw HistogramLogError(file: file, line: nil, reason: "no interval histogram in it (empty or truncated?)")
        }
        return entries
    }

    static func read(_ path: String) throws(HistogramLogError) -> [Entry] {
        func failure(_ reason: String) -> HistogramLogError { HistogramLogError(file: path, line: nil, reason: reason) }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw failure(systemError()) }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 1 << 16)
        while bytes.count <= maximumFileSize {
            let count = Glibc.read(fd, &chunk, chunk.count)
            if count < 0, errno == EINTR { continue }
            guard count >= 0 else { throw failure(systemError()) }
            if count == 0 { return try entries(in: String(decoding: bytes, as: UTF8.self), file: path) }
            bytes += chunk[..<count]
        }
        throw failure("larger than \(maximumFileSize >> 20) MiB: not a histogram log")
    }

    static func write(_ window: Window, to path: String) throws(HistogramLogError) {
        func failure(_ reason: String) -> HistogramLogError { HistogramLogError(file: path, line: nil, reason: reason) }
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw failure(systemError()) }
        var text = text(of: window)
        let written = text.withUTF8 { bytes in
            var done = 0
            while done < bytes.count {
                let count = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
                if count < 0, errno == EINTR { continue }
                if count <= 0 { return false }
                done += count
            }
            return true
        }
        let writeError = written ? nil : systemError()
        let closed = close(fd) == 0
        if let writeError { throw failure(writeError) }
        guard closed else { throw failure(systemError()) }
    }

    /// A decoded histogram's max is its bucket's lowest value; Interval_Max,
    /// if it lies in that bucket (other writers round it to the millisecond or
    /// microsecond), is the max recorded. A count of 0 records only the max.
    private static func restoreExactMax(_ milliseconds: Double, in histogram: inout LatencyHistogram) {
        guard histogram.totalCount > 0, milliseconds >= 0, milliseconds * 1e6 < Double(UInt64.max / 2) else { return }
        let maxRecorded = UInt64((milliseconds * 1e6).rounded())
        if histogram.lowestEquivalentForValue(maxRecorded) == histogram.lowestEquivalentForValue(histogram.maxRecorded) {
            histogram.record(maxRecorded, count: 0)
        }
    }

    /// Wall-clock seconds since the epoch at a monotonic time in the past (both clocks read now).
    static func epochSeconds(atMonotonic nanoseconds: UInt64) -> Double {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        let elapsed = Double(monotonicNanoseconds() &- nanoseconds) / 1e9
        return Double(now.tv_sec) + Double(now.tv_nsec) / 1e9 - elapsed
    }

    /// StartTime's readable date, as Java's Date prints it but in UTC.
    private static func utcDate(_ secondsSinceEpoch: Double) -> String {
        var seconds = time_t(secondsSinceEpoch)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        var buffer = [CChar](repeating: 0, count: 64)
        let length = strftime(&buffer, buffer.count, "%a %b %d %H:%M:%S UTC %Y", &parts)
        return String(decoding: buffer[..<length].map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    private static func systemError() -> String { String(cString: strerror(errno)) }
}

/// A histogram log that could not be read, written or decoded: the file, the line if one, and why.
struct HistogramLogError: Error, CustomStringConvertible {
    var file: String
    var line: Int?
    var reason: String

    var description: String { "\(file)\(line.map { ":\($0)" } ?? ""): \(reason)" }
}
