@testable import Reactor
import Testing

/// The 64 bits each epoll registration carries: generation, source flag, fd.
@Suite("EventToken")
struct EventTokenTests {
    static let generations: [UInt32] = [1, 2, 0x7FFF_FFFF, 0x8000_0000, UInt32.max - 1, UInt32.max]
    static let fds: [Int32] = [0, 1, 2, 1_023, 1 << 30, Int32.max - 1, Int32.max]

    @Test(arguments: EventTokenTests.generations, EventTokenTests.fds)
    func roundTripsGenerationFdAndSourceFlag(generation: UInt32, fd: Int32) {
        for isSource in [false, true] {
            let token = EventToken(generation: generation, fd: fd, isSource: isSource)
            #expect(token.generation == generation)
            #expect(token.fd == fd)
            #expect(token.isSource == isSource)
            #expect(EventToken(rawValue: token.rawValue) == token, "what epoll hands back is the same token")
            #expect(token != .free)
        }
    }

    /// Every combination is a distinct token: no two registrations can be confused.
    @Test func everyCombinationIsDistinct() {
        var seen = Set<UInt64>()
        for generation in Self.generations {
            for fd in Self.fds {
                for isSource in [false, true] {
                    let inserted = seen.insert(EventToken(generation: generation, fd: fd, isSource: isSource).rawValue).inserted
                    #expect(inserted, "generation \(generation), fd \(fd), source \(isSource)")
                }
            }
        }
        #expect(seen.count == Self.generations.count * Self.fds.count * 2)
    }

    /// A reused fd with a new generation is a different token: a stale event
    /// for the old connection is told apart from the new one's.
    @Test func sameFdDifferentGenerationDiffers() {
        let old = EventToken(generation: 7, fd: 12, isSource: false)
        let new = EventToken(generation: 8, fd: 12, isSource: false)
        #expect(old != new)
        #expect(old.fd == new.fd)
    }

    @Test func wakeIsASourceTokenAndNoConnections() {
        #expect(EventToken.wake.isSource, "the loop dispatches it with the sources, never as a connection")
        for generation in Self.generations {
            for fd in Self.fds {
                #expect(EventToken(generation: generation, fd: fd, isSource: false) != .wake)
            }
        }
        // The highest connection token there can be is still not the wake token.
        let highest = EventToken(generation: .max, fd: .max, isSource: false)
        #expect(highest.rawValue == UInt64.max - (1 << 31))
        #expect(highest != .wake)
    }

    @Test func freeIsZeroAndNoRegistrationGetsIt() {
        #expect(EventToken.free.rawValue == 0)
        #expect(EventToken.free.fd == 0)
        #expect(EventToken.free.generation == 0)
        #expect(!EventToken.free.isSource)
        // fd 0 and the lowest generation still make a token that is not free.
        #expect(EventToken(generation: 1, fd: 0, isSource: false) != .free)
        #expect(EventToken(generation: 1, fd: 0, isSource: false).rawValue == 1 << 32)
    }
}
