/// The head of an HTTP/1.x request (request line and headers), as much as
/// a metrics endpoint needs: found in the bytes received so far, or not yet.
public struct HTTPRequestHead: Equatable, Sendable {
    public var method: String
    public var path: String

    public init(method: String, path: String) {
        self.method = method
        self.path = path
    }

    /// What a look at the bytes received so far finds.
    public enum Parse: Equatable, Sendable {
        /// The head, and the bytes it took up to and with its blank line.
        case complete(HTTPRequestHead, length: Int)
        /// No blank line yet; more bytes may finish it.
        case incomplete
        /// Not an HTTP/1.x request head, or longer than the limit: answer 400.
        case malformed(String)
    }

    /// Looks for a whole head at the start of `bytes`, at most `limit` bytes long.
    public static func parse(_ bytes: UnsafeRawBufferPointer, limit: Int = 8_192) -> Parse {
        let terminator: [UInt8] = [13, 10, 13, 10]
        let window = bytes.prefix(limit)
        guard let end = window.indices.first(where: { index in
            index + 4 <= window.endIndex && terminator.indices.allSatisfy { window[index + $0] == terminator[$0] }
        }) else {
            return bytes.count >= limit ? .malformed("request head over \(limit) B") : .incomplete
        }
        let head = bytes[..<end]
        let lineEnd = head.firstIndex(of: 13) ?? head.endIndex
        let parts = head[..<lineEnd].split(separator: 32, omittingEmptySubsequences: false)
        guard parts.count == 3, !parts[0].isEmpty, parts[1].first == UInt8(ascii: "/"),
              parts[2].elementsEqual("HTTP/1.1".utf8) || parts[2].elementsEqual("HTTP/1.0".utf8),
              parts[0].allSatisfy({ $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") }),
              parts[1].allSatisfy({ $0 > 32 && $0 < 127 }) else {
            return .malformed("not an HTTP/1.x request line")
        }
        return .complete(HTTPRequestHead(method: String(decoding: parts[0], as: UTF8.self),
                                         path: String(decoding: parts[1], as: UTF8.self)), length: end + 4)
    }
}
