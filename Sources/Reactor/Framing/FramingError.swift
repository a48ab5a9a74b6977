/// Why a framer refused its input. The peer broke the protocol (or is hostile),
/// so the connection should be closed; the description is meant as the logged
/// close reason.
public enum FramingError: Error, Sendable, Equatable, CustomStringConvertible {
    /// A header announced a whole frame (header included) of `size` bytes,
    /// more than the framer's `limit`.
    case frameTooLarge(size: Int, limit: Int)
    /// A length field held `rawValue`, which cannot be a frame size at all:
    /// it, or it plus the header, exceeds `Int.max`.
    case lengthOverflows(rawValue: UInt64)
    /// A length field that counts the header held `length`, less than the
    /// `headerSize` bytes of the header itself.
    case lengthShorterThanHeader(length: Int, headerSize: Int)
    /// `bytesWithoutDelimiter` bytes arrived with no delimiter among them,
    /// more than a line of at most `limit` bytes allows.
    case lineTooLong(bytesWithoutDelimiter: Int, limit: Int)

    /// The logged close reason, e.g. `frame of 70000 B over the limit of 4096 B`.
    public var description: String {
        switch self {
        case .frameTooLarge(let size, let limit):
            "frame of \(size) B over the limit of \(limit) B"
        case .lengthOverflows(let rawValue):
            "length field value \(rawValue) overflows a frame size"
        case .lengthShorterThanHeader(let length, let headerSize):
            "frame length \(length) B is shorter than its \(headerSize) B header"
        case .lineTooLong(let bytesWithoutDelimiter, let limit):
            "\(bytesWithoutDelimiter) B without a delimiter, over the line limit of \(limit) B"
        }
    }
}
