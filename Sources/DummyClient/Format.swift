#if canImport(Glibc)
import Glibc
#endif

/// Number formatting for the summary, the progress line and the JSON, without Foundation.
enum Format {
    /// `value` with exactly `decimals` decimals ("5.01"); also a valid JSON number.
    static func fixed(_ value: Double, _ decimals: Int) -> String {
        guard value.isFinite else { return "0" }
        var scale: Int64 = 1
        for _ in 0..<decimals { scale *= 10 }
        let scaled = Int64(min((abs(value) * Double(scale)).rounded(), 9e18))
        let sign = value < 0 && scaled != 0 ? "-" : ""
        guard decimals > 0 else { return "\(sign)\(scaled)" }
        var fraction = String(scaled % scale)
        while fraction.count < decimals { fraction = "0" + fraction }
        return "\(sign)\(scaled / scale).\(fraction)"
    }

    /// An integer with thousands separators: 1,234,567.
    static func grouped<Integer: BinaryInteger>(_ value: Integer) -> String {
        let digits = String(value.magnitude)
        var result = value < 0 ? "-" : ""
        for (index, digit) in digits.enumerated() {
            if index > 0, (digits.count - index) % 3 == 0 { result.append(",") }
            result.append(digit)
        }
        return result
    }

    /// A rate with thousands separators and no decimals: 245,123.
    static func grouped(_ value: Double) -> String {
        guard value.isFinite, value >= 0 else { return "0" }
        return grouped(UInt64(min(value.rounded(), 1.8e19)))
    }

    /// Nanoseconds as microseconds: "84", or "7.5" below 10 us.
    static func microseconds(_ nanoseconds: UInt64) -> String {
        let micro = Double(nanoseconds) / 1000
        return micro < 10 ? fixed(micro, 1) : fixed(micro, 0)
    }

    /// A string as a JSON string literal.
    static func jsonString(_ text: String) -> String {
        var result = "\""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "\"": result += "\\\""
            case "\\": result += "\\\\"
            case "\n": result += "\\n"
            case _ where scalar.value < 0x20:
                let hex = Array("0123456789abcdef")
                result += "\\u00\(hex[Int(scalar.value >> 4)])\(hex[Int(scalar.value & 15)])"
            default: result.unicodeScalars.append(scalar)
            }
        }
        return result + "\""
    }
}

/// Writes straight to fd 1 or 2: whole lines, unbuffered (so a line per round
/// reaches a pipe at once), from any thread, without touching C's `stdout`
/// and `stderr` globals.
enum Output {
    static func standardOutput(_ text: String) { write(text, to: 1) }
    static func standardError(_ text: String) { write(text, to: 2) }

    private static func write(_ text: String, to fd: Int32) {
        var text = text
        text.withUTF8 { bytes in
            var done = 0
            while done < bytes.count {
                let written = Glibc.write(fd, bytes.baseAddress! + done, bytes.count - done)
                if written < 0, errno == EINTR { continue }
                if written <= 0 { return }
                done += written
            }
        }
    }
}
