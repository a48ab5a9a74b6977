import Reactor

/// One loop's members: a few bytes per connection, indexed by fd, in place
/// of an object per member. An entry is valid while its connection is open;
/// `opened` starts it afresh, so a reused fd never sees the last one's state.
struct MemberTable {
    struct Member {
        enum Status: UInt8 {
            case outside
            /// C_ENTER sent, S_ENTER not yet: reading is paused meanwhile.
            case entering
            case inside
        }
        var id: UInt32 = 0
        /// The room it is in, or entering.
        var room: UInt32 = 0
        /// Its index in this loop's list of the room's members, while inside.
        var position: UInt32 = 0
        var status = Status.outside
    }

    private var members: [Member] = []

    mutating func opened(_ connection: Connection, id: UInt32) {
        let index = Int(connection.fd)
        if index >= members.count {
            members.append(contentsOf: repeatElement(Member(), count: max(index + 1, 2 * members.count) - members.count))
        }
        members[index] = Member(id: id)
    }

    subscript(_ connection: Connection) -> Member {
        get { members[Int(connection.fd)] }
        _modify { yield &members[Int(connection.fd)] }
    }
}
