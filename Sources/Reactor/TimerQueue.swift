/// A handle to a task scheduled on an event loop; `cancel()` from any thread.
public struct ScheduledTask: Sendable, Hashable {
    let id: UInt64
    unowned(unsafe) let loop: EventLoop // loops are never freed

    /// Cancels the task if it has not run yet. Safe to call more than once.
    public func cancel() { loop.cancel(self) }

    /// Whether both handles name the same task of the same loop.
    public static func == (lhs: Self, rhs: Self) -> Bool { lhs.id == rhs.id && lhs.loop === rhs.loop }
    /// Hashes the task's id.
    public func hash(into hasher: inout Hasher) { hasher.combine(id) }
}

/// Pending timers of one loop: a binary min-heap of deadlines feeding
/// epoll_wait's timeout, so nothing ever busy-waits. Cancelling removes the
/// task at once; its heap entry is skipped when it surfaces.
struct TimerQueue {
    private struct Entry {
        let deadline: UInt64
        let id: UInt64
    }

    private var heap: [Entry] = []
    /// The tasks by id, each closure in a struct (stored as is, not boxed).
    private var tasks: [UInt64: Task] = [:]
    private struct Task { let run: () -> Void }
    /// The heap's earliest deadline (perhaps of a cancelled task); UInt64.max
    /// when empty. A stored integer, so the loop checks it every iteration
    /// without touching (and reference counting) the collections.
    private(set) var earliestDeadline = UInt64.max

    mutating func insert(deadline: UInt64, id: UInt64, _ task: @escaping () -> Void) {
        tasks[id] = Task(run: task)
        heap.append(Entry(deadline: deadline, id: id))
        siftUp(heap.count - 1)
        earliestDeadline = heap[0].deadline
    }

    mutating func cancel(_ id: UInt64) {
        tasks[id] = nil
        if tasks.isEmpty {
            heap.removeAll(keepingCapacity: true)
            earliestDeadline = .max
        }
    }

    /// Milliseconds until `deadline` for epoll_wait: -1 for none, 0 when due.
    /// A cancelled entry may cause one early wake-up; that is cheaper than a
    /// hash lookup on every loop iteration.
    static func timeoutMilliseconds(until deadline: UInt64, now: UInt64) -> Int32 {
        if deadline == .max { return -1 }
        if deadline <= now { return 0 }
        // Round up so a wake-up never comes a little early and spins.
        return Int32(clamping: (deadline - now).addingSaturating(999_999) / 1_000_000)
    }

    /// Removes and returns the next task due at `now`, if any.
    mutating func popDue(now: UInt64) -> (() -> Void)? {
        dropCancelledTop()
        guard let first = heap.first, first.deadline <= now else { return nil }
        removeTop()
        return tasks.removeValue(forKey: first.id)?.run
    }

    private mutating func dropCancelledTop() {
        while let first = heap.first, tasks[first.id] == nil { removeTop() }
    }

    private mutating func removeTop() {
        let last = heap.removeLast()
        defer { earliestDeadline = heap.first?.deadline ?? .max }
        guard !heap.isEmpty else { return }
        heap[0] = last
        siftDown(0)
    }

    private mutating func siftUp(_ index: Int) {
        var child = index
        while child > 0 {
            let parent = (child - 1) / 2
            guard heap[child].deadline < heap[parent].deadline else { return }
            heap.swapAt(child, parent)
            child = parent
        }
    }

    private mutating func siftDown(_ index: Int) {
        var parent = index
        while true {
            let left = 2 * parent + 1
            guard left < heap.count else { return }
            let right = left + 1
            let smaller = right < heap.count && heap[right].deadline < heap[left].deadline ? right : left
            guard heap[smaller].deadline < heap[parent].deadline else { return }
            heap.swapAt(parent, smaller)
            parent = smaller
        }
    }
}
