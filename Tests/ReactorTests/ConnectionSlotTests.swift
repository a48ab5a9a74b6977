@testable import Reactor
import Testing

/// An idle connection costs its slot and nothing else.
@Suite("Connection slot")
struct ConnectionSlotTests {
    @Test func anIdleConnectionCostsAtMost64Bytes() {
        #expect(MemoryLayout<ConnectionSlot>.stride <= 64)
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
