@testable import Rooms
import Testing

@Suite("Member table")
struct MemberTableTests {
    /// What an idle member costs beside its connection's slot: this entry
    /// and one `Connection` (16 B) in its room's array.
    @Test func aMemberIsSixteenBytes() {
        #expect(MemoryLayout<MemberTable.Member>.stride == 16)
    }
}
