#if canImport(Glibc)
import Glibc
#endif

/// Lines ended by a delimiter byte, as in text protocols (SMTP, Redis inline
/// commands, newline-delimited JSON).
///
/// The frame handed over is the line without its delimiter, and without the
/// `\r` before it when `stripsCarriageReturn` is set, so CRLF and LF lines read
/// the same.
public struct LineFramer: Framer {
    /// The byte that ends a line; it is not part of the line handed over.
    public let delimiter: UInt8
    /// The most bytes a line may hold before its delimiter, a `\r` that is
    /// stripped included.
    public let maximumLineLength: Int
    /// Whether a `\r` right before the delimiter is left out of the line.
    public let stripsCarriageReturn: Bool

    /// - Parameters:
    ///   - delimiter: The byte that ends a line; `\n` by default.
    ///   - maximumLineLength: The most bytes before the delimiter (a stripped
    ///     `\r` included). Longer input is refused once that many bytes plus
    ///     one have arrived without a delimiter.
    ///   - stripsCarriageReturn: Whether to drop a `\r` before the delimiter.
    public init(delimiter: UInt8 = UInt8(ascii: "\n"), maximumLineLength: Int, stripsCarriageReturn: Bool = true) {
        precondition(maximumLineLength >= 0, "negative maximum line length \(maximumLineLength)")
        self.delimiter = delimiter
        self.maximumLineLength = maximumLineLength
        self.stripsCarriageReturn = stripsCarriageReturn
    }

    /// Delivers every whole line at the start of `bytes`, without its delimiter
    /// (nor the `\r` before it, when stripped), and refuses the input once more than
    /// `maximumLineLength` bytes have arrived without a delimiter (see
    /// `Framer.frames(in:_:)`).
    @inlinable
    public func frames(
        in bytes: UnsafeRawBufferPointer,
        _ frame: (UnsafeRawBufferPointer) -> Void
    ) throws(FramingError) -> Int {
        guard let base = bytes.baseAddress else { return 0 }
        var lineStart = 0
        while lineStart < bytes.count {
            let remaining = bytes.count - lineStart
            // The whole rest is searched (not just the allowed length) so the
            // error can say how much arrived without a delimiter.
            guard let found = memchr(base + lineStart, Int32(delimiter), remaining) else {
                if remaining > maximumLineLength {
                    throw .lineTooLong(bytesWithoutDelimiter: remaining, limit: maximumLineLength)
                }
                break
            }
            let lineLength = UnsafeRawPointer(found) - (base + lineStart)
            guard lineLength <= maximumLineLength else {
                throw .lineTooLong(bytesWithoutDelimiter: lineLength, limit: maximumLineLength)
            }
            var contentLength = lineLength
            if stripsCarriageReturn, contentLength > 0, bytes[lineStart + contentLength - 1] == UInt8(ascii: "\r") {
                contentLength -= 1
            }
            frame(UnsafeRawBufferPointer(start: base + lineStart, count: contentLength))
            lineStart += lineLength + 1
        }
        return lineStart
    }
}
