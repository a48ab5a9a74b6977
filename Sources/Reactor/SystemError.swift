#if canImport(Glibc)
import Glibc
#endif

/// A failed system call: which call, on what, and the errno it returned.
///
/// Its description reads like the shell's: `bind 127.0.0.1:7777: Address already in use`.
public struct SystemError: Error, Equatable, CustomStringConvertible, Sendable {
    /// The system call that failed, e.g. `"bind"`.
    public let call: String
    /// What the call acted on, e.g. an address; empty when there is nothing useful to say.
    public let subject: String
    /// The `errno` value the call left.
    public let code: Int32

    /// The failure of `call` on `subject` with `code`: by default the `errno` the
    /// failed call left, so make the error right after the call.
    public init(_ call: String, _ subject: String = "", code: Int32 = errno) {
        self.call = call
        self.subject = subject
        self.code = code
    }

    /// The C library's text for `code`, e.g. "Connection refused".
    public var message: String { String(cString: strerror(code)) }

    /// `call subject: message`, or `call: message` without a subject.
    public var description: String {
        subject.isEmpty ? "\(call): \(message)" : "\(call) \(subject): \(message)"
    }
}
