import ArgumentParser
import CommandLineSupport

struct Merge: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Adds up --histogram-out files (from any number of clients or machines) and prints their combined latency.",
        discussion: """
            Each FILE is an HdrHistogram interval log: what ping, flood and room write with \
            --histogram-out, or any HdrHistogram tool's log of nanosecond values. Every interval of \
            every file is added bucket for bucket, so the percentiles are exactly those of all the \
            samples pooled (to the histograms' 3 significant digits), never an average of percentiles. \
            The histograms must share a layout (lowest discernible value, significant digits). \
            Exit status 65 when a file cannot be read, is malformed or truncated, or does not merge.
            """)

    /// sysexits' EX_DATAERR: the input was wrong.
    static let dataErrorStatus: Int32 = 65

    @Flag(help: "Print one JSON object: files, count, and latency_us with a run's --json keys (microseconds).")
    var json = false
    @Argument(help: ArgumentHelp("HdrHistogram interval logs, values in nanoseconds.", valueName: "FILE"))
    var files: [String]

    func run() throws {
        let combined: LatencyHistogram
        do {
            combined = try Self.combined(files)
        } catch {
            Output.standardError("dummy-client merge: \(error)\n")
            throw ExitCode(Self.dataErrorStatus)
        }
        let latency = Report.Latency(combined)
        if json {
            Output.standardOutput("{\"files\":\(files.count),\"count\":\(latency.count),\"latency_us\":\(latency.json)}\n")
        } else {
            Output.standardOutput("""
                dummy-client merge: \(files.count) file\(files.count == 1 ? "" : "s"), \(Format.grouped(latency.count)) samples
                  latency      \(latency.summary)

                """)
        }
    }

    /// Every interval of every file added into one histogram.
    static func combined(_ files: [String]) throws(HistogramLogError) -> LatencyHistogram {
        var combined: LatencyHistogram?
        var layoutSource = ""
        for file in files {
            for entry in try HistogramLog.read(file) {
                guard let lowest = combined?.lowestDiscernibleValue, let digits = combined?.numberOfSignificantValueDigits else {
                    combined = entry.histogram
                    // Files may differ in their highest trackable value: the sum grows to hold any of them.
                    combined?.autoResize = true
                    layoutSource = file
                    continue
                }
                let histogram = entry.histogram
                guard histogram.lowestDiscernibleValue == lowest, histogram.numberOfSignificantValueDigits == digits else {
                    throw HistogramLogError(file: file, line: entry.line, reason: """
                        lowest discernible value \(histogram.lowestDiscernibleValue), \
                        \(histogram.numberOfSignificantValueDigits.rawValue) significant digits: not \(layoutSource)'s \
                        \(lowest), \(digits.rawValue), so their buckets do not add up
                        """)
                }
                combined?.add(histogram)
                if let sum = combined, HistogramLayout(sum)?.valueTotal(of: sum) == nil {
                    throw HistogramLogError(file: file, line: entry.line, reason: "the counts added so far overflow 64 bits: not real samples")
                }
            }
        }
        // read() returns at least one entry per file, and ArgumentParser at least one file.
        return combined ?? .latency()
    }
}
