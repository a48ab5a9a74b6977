import Foundation
import Histogram
import PropertyBased
import TestSupport
import Testing
@testable import DummyClient

/// `dummy-client merge`: histograms from several files add up to exactly the
/// histogram of all their samples pooled.
@Suite struct HistogramMergeTests {
    @Test func mergedFilesGiveThePooledSamplesPercentiles() async throws {
        await propertyCheck(count: 20, input: latencies.array(of: 0...300).array(of: 1...5)) { sampleSets in
            try withTemporaryDirectory { directory in
                var pooled = LatencyHistogram.latency()
                var files: [String] = []
                for (index, samples) in sampleSets.enumerated() {
                    var histogram = LatencyHistogram.latency()
                    for sample in samples {
                        histogram.record(sample)
                        pooled.record(sample)
                    }
                    let file = "\(directory)/client-\(index).hlog"
                    try HistogramLog.write(.init(tag: "flood", startSinceEpoch: 0, lengthSeconds: 1, histogram: histogram), to: file)
                    files.append(file)
                }
                let merged = try Merge.combined(files)
                #expect(merged == pooled)
                for percentile in [50, 90, 99, 99.9, 100] {
                    #expect(merged.valueAtPercentile(percentile) == pooled.valueAtPercentile(percentile), "p\(percentile)")
                }
                #expect(merged.max == pooled.max)
                #expect(merged.totalCount == pooled.totalCount)
                let (mergedReport, pooledReport) = (Report.Latency(merged), Report.Latency(pooled))
                #expect(mergedReport.json == pooledReport.json)
                #expect(mergedReport.count == pooledReport.count)
            }
        }
    }

    @Test func twoRunsMergeIntoOneReportOfBothRunsSamples() throws {
        try withTemporaryDirectory { directory in
            let (first, second) = try withServer(loops: 1) { server in
                func flood(_ name: String) throws -> ProgramResult {
                    try runProgram("dummy-client", [
                        "flood", "--port", "\(server.port)", "--connections", "4", "--duration", "0.5", "--warmup", "0.1",
                        "--json", "--quiet", "--histogram-out", "\(directory)/\(name).hlog",
                    ])
                }
                return (try flood("first"), try flood("second"))
            }
            var rounds = 0
            for run in [first, second] {
                #expect(run.status == 0, "\(run.transcript)")
                rounds += try #require(try jsonObject(run.standardOutput)["rounds"] as? Int, "\(run.transcript)")
            }
            #expect(rounds > 0)
            let log = try String(contentsOfFile: "\(directory)/first.hlog", encoding: .utf8)
            #expect(log.contains("#[StartTime: ") && log.contains(HistogramLog.legend) && log.contains("\nTag=flood,"), "\(log)")

            let merge = try runProgram("dummy-client", ["merge", "--json", "\(directory)/first.hlog", "\(directory)/second.hlog"])
            #expect(merge.status == 0, "\(merge.transcript)")
            let merged = try jsonObject(merge.standardOutput)
            #expect(merged["count"] as? Int == rounds, "\(merge.transcript)")
            #expect(merged["files"] as? Int == 2)
            let latency = try #require(merged["latency_us"] as? [String: Double], "\(merge.transcript)")
            #expect(Set(latency.keys) == ["p50", "p90", "p99", "p999", "max", "mean"])
            let p50 = try #require(latency["p50"]), p99 = try #require(latency["p99"]), max = try #require(latency["max"])
            #expect(p50 > 0 && p50 <= p99 && p99 <= max)

            let text = try runProgram("dummy-client", ["merge", "\(directory)/first.hlog", "\(directory)/second.hlog"])
            #expect(text.status == 0, "\(text.transcript)")
            #expect(text.standardOutput.contains("2 files, \(Format.grouped(rounds)) samples"), "\(text.transcript)")
            #expect(text.standardOutput.contains("latency      p50 "), "\(text.transcript)")
        }
    }

    @Test func pingAndRoomWriteTheirLatencyToo() throws {
        try withTemporaryDirectory { directory in
            let ping = try withServer(loops: 1) { server in
                try runProgram("dummy-client", ["ping", "--port", "\(server.port)", "--rounds", "5", "--interval", "0",
                                                "--quiet", "--histogram-out", "\(directory)/ping.hlog"])
            }
            #expect(ping.status == 0, "\(ping.transcript)")
            let room = try withRoomServer(loops: 1) { service in
                try runProgram("dummy-client", [
                    "room", "--port", "\(service.server.localAddress.port)", "--rooms", "2", "--members", "3",
                    "--duration", "0.3", "--warmup", "0.1", "--json", "--quiet", "--histogram-out", "\(directory)/room.hlog",
                ])
            }
            #expect(room.status == 0, "\(room.transcript)")
            let deliveries = try #require(try jsonObject(room.standardOutput)["deliveries"] as? Int, "\(room.transcript)")

            let merge = try runProgram("dummy-client", ["merge", "--json", "\(directory)/ping.hlog", "\(directory)/room.hlog"])
            #expect(merge.status == 0, "\(merge.transcript)")
            #expect(try jsonObject(merge.standardOutput)["count"] as? Int == 5 + deliveries, "\(merge.transcript)")
            let roomLog = try String(contentsOfFile: "\(directory)/room.hlog", encoding: .utf8)
            #expect(roomLog.contains("\nTag=room,"), "\(roomLog)")
        }
    }

    @Test func aTruncatedFileIsAClearErrorAndExit65() throws {
        try withTemporaryDirectory { directory in
            var histogram = LatencyHistogram.latency()
            for value: UInt64 in [1_000, 20_000, 300_000] { histogram.record(value) }
            let good = "\(directory)/good.hlog"
            try HistogramLog.write(.init(tag: "flood", startSinceEpoch: 0, lengthSeconds: 1, histogram: histogram), to: good)
            let text = try String(contentsOfFile: good, encoding: .utf8)
            let truncated = "\(directory)/truncated.hlog"
            try String(text.dropLast(9)).write(toFile: truncated, atomically: true, encoding: .utf8)
            let lineCount = text.split(separator: "\n").count

            let result = try runProgram("dummy-client", ["merge", good, truncated])
            #expect(result.status == 65, "\(result.transcript)")
            #expect(result.standardError.contains("\(truncated):\(lineCount): "), "\(result.transcript)")
            #expect(result.standardOutput.isEmpty, "\(result.transcript)")

            let missing = try runProgram("dummy-client", ["merge", "\(directory)/none.hlog"])
            #expect(missing.status == 65, "\(missing.transcript)")
            #expect(missing.standardError.contains("\(directory)/none.hlog: No such file or directory"), "\(missing.transcript)")
        }
    }

    @Test(arguments: [
        (["merge"], "Missing expected argument '<FILE> ...'"),
        (["flood", "--histogram-out", "/nonexistent-dir/x.hlog"], "--histogram-out /nonexistent-dir/x.hlog: needs a file name in a writable directory"),
        (["room", "--histogram-out", "/tmp/"], "--histogram-out /tmp/: needs a file name"),
    ])
    func badHistogramFlagsExit64(_ arguments: [String], _ message: String) throws {
        let result = try runProgram("dummy-client", arguments)
        #expect(result.status == 64, "\(result.transcript)")
        #expect(result.standardError.contains(message), "\(result.transcript)")
    }
}

private func jsonObject(_ text: String) throws -> [String: Any] {
    try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any], "\(text)")
}

private func withTemporaryDirectory<Result>(_ body: (String) throws -> Result) throws -> Result {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("histogram-\(getpid())-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: directory) }
    return try body(directory.path)
}
