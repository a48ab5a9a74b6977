@testable import Reactor
import Testing

/// An idle connection costs its slot and nothing else.
@Suite("Connection slot")
struct ConnectionSlotTests {
    @Test func anIdleConnectionCostsAtMost64Bytes() {
        #expect(MemoryLayout<ConnectionSlot>.stride <= 64)
    }

    /// Closes are counted by kind at `ordinal`, which must follow `allCases`.
    @Test func closeKindOrdinalsFollowAllCases() {
        #expect(CloseReason.Kind.allCases.map(\.ordinal) == Array(0..<CloseReason.Kind.allCases.count))
        #expect(LoopStatistics.lifetimeBucket(0) == 0 && LoopStatistics.lifetimeBucket(1) == 1)
        #expect(LoopStatistics.lifetimeBucket(3) == 2 && LoopStatistics.lifetimeBucket(4) == 3)
        #expect(LoopStatistics.lifetimeBucket(.max) == LoopStatistics.lifetimeBucketCount - 1)
    }

    @Test func aFreshSlotHoldsNoStorage() {
        let slot = UnsafeMutablePointer<ConnectionSlot>.allocate(capacity: 1)
        defer { slot.deinitialize(count: 1); slot.deallocate() }
        slot.initialize(to: ConnectionSlot())
        let holdsInput = !slot.pointee.input.isEmpty
        #expect(slot.pointee.output == nil)
        #expect(!holdsInput)
        #expect(slot.pointee.handler == nil)
        #expect(slot.pointee.token == .free)
    }
}
