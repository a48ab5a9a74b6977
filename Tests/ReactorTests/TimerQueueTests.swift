@testable import Reactor
import Testing

/// The loop's timer heap on its own, with deadlines made up (no clock).
@Suite("TimerQueue")
struct TimerQueueTests {
    /// Ids of the tasks run, in order: each task appends its own.
    private final class Log {
        var ran: [UInt64] = []
    }

    private static func insert(_ queue: inout TimerQueue, _ log: Log, deadline: UInt64, id: UInt64) {
        queue.insert(deadline: deadline, id: id) { log.ran.append(id) }
    }

    /// Pops and runs every task due at `now`; returns how many ran.
    @discardableResult
    private static func runDue(_ queue: inout TimerQueue, now: UInt64) -> Int {
        var count = 0
        while let task = queue.popDue(now: now) {
            task()
            count += 1
        }
        return count
    }

    @Test func tasksComeOutInDeadlineOrder() {
        var queue = TimerQueue()
        let log = Log()
        for (id, deadline) in [(1, 30), (2, 10), (3, 20), (4, 50), (5, 40)] as [(UInt64, UInt64)] {
            Self.insert(&queue, log, deadline: deadline, id: id)
        }
        #expect(Self.runDue(&queue, now: 1_000) == 5)
        #expect(log.ran == [2, 3, 1, 5, 4])
        #expect(queue.popDue(now: .max - 1) == nil, "each task comes out once")
        #expect(queue.earliestDeadline == .max)
    }

    /// Only what is due comes out: the rest waits for its own deadline.
    @Test func popDueStopsAtTasksNotYetDue() {
        var queue = TimerQueue()
        let log = Log()
        Self.insert(&queue, log, deadline: 100, id: 1)
        Self.insert(&queue, log, deadline: 200, id: 2)
        #expect(queue.popDue(now: 0) == nil)
        #expect(queue.popDue(now: 99) == nil)
        #expect(log.ran.isEmpty)
        #expect(Self.runDue(&queue, now: 100) == 1, "a deadline equal to now is due")
        #expect(log.ran == [1])
        #expect(queue.popDue(now: 199) == nil)
        #expect(Self.runDue(&queue, now: 250) == 1)
        #expect(log.ran == [1, 2])
    }

    /// Tasks with the same deadline all run, each once, before later ones
    /// and after earlier ones. (Among themselves the heap does not promise
    /// insertion order.)
    @Test func equalDeadlinesEachRunOnce() {
        var queue = TimerQueue()
        let log = Log()
        Self.insert(&queue, log, deadline: 5, id: 100)
        for id: UInt64 in 1...7 { Self.insert(&queue, log, deadline: 50, id: id) }
        Self.insert(&queue, log, deadline: 60, id: 200)
        #expect(Self.runDue(&queue, now: 49) == 1)
        #expect(Self.runDue(&queue, now: 50) == 7)
        #expect(log.ran.first == 100)
        #expect(log.ran.dropFirst().sorted() == Array(1...7))
        #expect(queue.earliestDeadline == 60)
        #expect(Self.runDue(&queue, now: 60) == 1)
        #expect(log.ran.last == 200)
    }

    @Test func cancelledTaskNeverRuns() {
        var queue = TimerQueue()
        let log = Log()
        Self.insert(&queue, log, deadline: 10, id: 1)
        Self.insert(&queue, log, deadline: 20, id: 2)
        Self.insert(&queue, log, deadline: 30, id: 3)
        queue.cancel(2)
        queue.cancel(2) // twice is harmless
        queue.cancel(99) // so is an id never inserted
        #expect(Self.runDue(&queue, now: 100) == 2)
        #expect(log.ran == [1, 3])
    }

    /// Cancelling the earliest task: `earliestDeadline` may still show it (one
    /// early wake-up at most), but nothing comes out at that time, and the
    /// next pop moves it on to the next live task.
    @Test func cancellingTheEarliest() {
        var queue = TimerQueue()
        let log = Log()
        Self.insert(&queue, log, deadline: 10, id: 1)
        Self.insert(&queue, log, deadline: 20, id: 2)
        queue.cancel(1)
        #expect(queue.earliestDeadline <= 20)
        #expect(queue.popDue(now: 15) == nil, "the cancelled task does not come out")
        #expect(queue.earliestDeadline == 20)
        #expect(Self.runDue(&queue, now: 20) == 1)
        #expect(log.ran == [2])
        #expect(queue.earliestDeadline == .max)
    }

    @Test func cancellingEveryTaskLeavesNoDeadline() {
        var queue = TimerQueue()
        let log = Log()
        Self.insert(&queue, log, deadline: 10, id: 1)
        Self.insert(&queue, log, deadline: 20, id: 2)
        queue.cancel(2)
        queue.cancel(1)
        #expect(queue.earliestDeadline == .max, "epoll_wait may block: no timer is left")
        #expect(queue.popDue(now: .max - 1) == nil)
        #expect(log.ran.isEmpty)
    }

    @Test func earliestDeadlineFollowsInsertsAndPops() {
        var queue = TimerQueue()
        let log = Log()
        #expect(queue.earliestDeadline == .max)
        Self.insert(&queue, log, deadline: 50, id: 1)
        #expect(queue.earliestDeadline == 50)
        Self.insert(&queue, log, deadline: 30, id: 2)
        #expect(queue.earliestDeadline == 30)
        Self.insert(&queue, log, deadline: 40, id: 3)
        #expect(queue.earliestDeadline == 30)
        #expect(Self.runDue(&queue, now: 30) == 1)
        #expect(queue.earliestDeadline == 40)
        #expect(Self.runDue(&queue, now: 45) == 1)
        #expect(queue.earliestDeadline == 50)
        #expect(Self.runDue(&queue, now: 50) == 1)
        #expect(queue.earliestDeadline == .max)
        #expect(log.ran == [2, 3, 1])
    }

    /// Many tasks in scrambled order, some cancelled, popped at rising times:
    /// each pop yields exactly the live tasks due by then, in deadline order.
    @Test func scrambledInsertsAndCancelsComeOutSorted() {
        var queue = TimerQueue()
        let log = Log()
        var generator = Xorshift(seed: 42)
        var deadlines: [UInt64: UInt64] = [:]
        for id: UInt64 in 1...500 {
            let deadline = generator.next() % 10_000
            deadlines[id] = deadline
            Self.insert(&queue, log, deadline: deadline, id: id)
        }
        var cancelled = Set<UInt64>()
        for id: UInt64 in stride(from: 3, through: 500, by: 7) {
            queue.cancel(id)
            cancelled.insert(id)
        }
        var lastDeadline: UInt64 = 0
        for now in stride(from: UInt64(0), through: 10_000, by: 250) {
            let before = log.ran.count
            Self.runDue(&queue, now: now)
            for id in log.ran[before...] {
                let deadline = deadlines[id]!
                #expect(deadline <= now)
                #expect(deadline >= lastDeadline, "task \(id) out of order")
                lastDeadline = deadline
            }
            #expect(queue.earliestDeadline > now)
        }
        #expect(Set(log.ran) == Set(1...500).subtracting(cancelled))
        #expect(log.ran.count == 500 - cancelled.count)
    }

    @Test func timeoutMillisecondsForEpollWait() {
        let now: UInt64 = 5_000_000_000
        #expect(TimerQueue.timeoutMilliseconds(until: .max, now: now) == -1, "no timer: block")
        #expect(TimerQueue.timeoutMilliseconds(until: now, now: now) == 0, "due now")
        #expect(TimerQueue.timeoutMilliseconds(until: now - 1, now: now) == 0, "overdue")
        #expect(TimerQueue.timeoutMilliseconds(until: 0, now: now) == 0)
        // Rounded up, so the wake-up is never early (it would spin until due).
        #expect(TimerQueue.timeoutMilliseconds(until: now + 1, now: now) == 1)
        #expect(TimerQueue.timeoutMilliseconds(until: now + 999_999, now: now) == 1)
        #expect(TimerQueue.timeoutMilliseconds(until: now + 1_000_000, now: now) == 1)
        #expect(TimerQueue.timeoutMilliseconds(until: now + 1_000_001, now: now) == 2)
        #expect(TimerQueue.timeoutMilliseconds(until: now + 2_500_000, now: now) == 3)
        #expect(TimerQueue.timeoutMilliseconds(until: now + 60_000_000_000, now: now) == 60_000)
        // Farther than epoll_wait's Int32 milliseconds reach: the most it can wait.
        #expect(TimerQueue.timeoutMilliseconds(until: now + 10_000_000_000_000_000, now: now) == Int32.max)
    }
}

/// Reproducible pseudo-random numbers.
private struct Xorshift {
    var state: UInt64
    init(seed: UInt64) { state = seed | 1 }
    mutating func next() -> UInt64 {
        state ^= state << 13
        state ^= state >> 7
        state ^= state << 17
        return state
    }
}
