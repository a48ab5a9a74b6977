/// The 64 bits every epoll registration carries and gets back with its
/// events: generation (high 32) | event-source flag (bit 31) | fd (low 31).
///
/// The generation tells registrations of the same fd number apart: an event
/// for a connection closed earlier in the same batch, whose fd a new
/// connection already reuses, carries the old generation and is dropped,
/// never delivered to the wrong connection. A `Connection` handle is its
/// loop and its token; it is valid while the token matches its slot's.
struct EventToken: Hashable {
    let rawValue: UInt64

    /// The loop's eventfd. A connection's token never has bit 31 set, and a
    /// source's would equal this only with fd 2^31-1, which Linux never hands out.
    static let wake = EventToken(rawValue: .max)
    /// What a free slot holds; no registration is ever given it (generations start at 1).
    static let free = EventToken(rawValue: 0)

    private static let sourceFlag: UInt64 = 1 << 31
    private static let fdMask: UInt64 = 0x7FFF_FFFF

    init(rawValue: UInt64) { self.rawValue = rawValue }

    init(generation: UInt32, fd: Int32, isSource: Bool) {
        precondition(generation != 0 && fd >= 0)
        rawValue = UInt64(generation) << 32 | (isSource ? Self.sourceFlag : 0) | UInt64(UInt32(bitPattern: fd))
    }

    var fd: Int32 { Int32(truncatingIfNeeded: rawValue & Self.fdMask) }
    var generation: UInt32 { UInt32(truncatingIfNeeded: rawValue >> 32) }
    /// A listener or signal watcher, not a connection.
    var isSource: Bool { rawValue & Self.sourceFlag != 0 }
}
