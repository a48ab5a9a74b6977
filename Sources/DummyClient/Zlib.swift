import CZlib

/// zlib streams (RFC 1950): what HdrHistogram's compressed encoding deflates its payload into.
enum Zlib {
    static func compress(_ bytes: [UInt8]) -> [UInt8] {
        var length = compressBound(uLong(bytes.count))
        var output = [UInt8](repeating: 0, count: Int(length))
        let status = compress2(&output, &length, bytes, uLong(bytes.count), Z_DEFAULT_COMPRESSION)
        // compress2 fails only without memory or with less room than compressBound gives.
        precondition(status == Z_OK, "zlib compress2 failed: \(status)")
        output.removeSubrange(Int(length)...)
        return output
    }

    /// Inflates a stream piece by piece, so a reader can take a header, check
    /// it, and only then ask for the length the header names (no zip bomb).
    final class Inflater {
        private var stream = z_stream()
        private let input: UnsafeMutableBufferPointer<UInt8>

        /// nil if zlib cannot start (no memory).
        init?(_ compressed: ArraySlice<UInt8>) {
            input = .allocate(capacity: Swift.max(1, compressed.count))
            _ = input.initialize(from: compressed)
            stream.next_in = input.baseAddress
            stream.avail_in = uInt(compressed.count)
            guard inflateInit_(&stream, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size)) == Z_OK else {
                input.deallocate()
                return nil
            }
        }

        deinit {
            inflateEnd(&stream)
            input.deallocate()
        }

        /// The next `count` bytes of output; nil if the data is corrupt or ends first.
        func read(_ count: Int) -> [UInt8]? {
            guard count > 0 else { return [] }
            var output = [UInt8](repeating: 0, count: count)
            let (status, missing) = output.withUnsafeMutableBufferPointer { buffer in
                stream.next_out = buffer.baseAddress
                stream.avail_out = uInt(count)
                // All the input is there, so one call fills the output unless the stream ends or is corrupt.
                let status = inflate(&stream, Z_NO_FLUSH)
                stream.next_out = nil
                return (status, stream.avail_out)
            }
            guard status == Z_OK || status == Z_STREAM_END, missing == 0 else { return nil }
            return output
        }

        /// Whether the stream ends here, its checksum verified: reads stop at
        /// the lengths a header names, and only the end proves the bytes intact.
        func endsHere() -> Bool {
            var spare: UInt8 = 0
            let (status, produced) = withUnsafeMutablePointer(to: &spare) { pointer in
                stream.next_out = pointer
                stream.avail_out = 1
                let status = inflate(&stream, Z_FINISH)
                stream.next_out = nil
                return (status, stream.avail_out == 0)
            }
            return status == Z_STREAM_END && !produced
        }
    }
}
