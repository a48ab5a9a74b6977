import Reactor
import TestSupport
import Testing

/// An actor isolated to an event loop: its methods run on the loop's thread.
actor LoopBound {
    let loop: EventLoop
    nonisolated var unownedExecutor: UnownedSerialExecutor { loop.asUnownedSerialExecutor() }
    init(loop: EventLoop) { self.loop = loop }
    func onLoop() -> Bool { loop.inEventLoop }
}

@Suite("Event loop as executor")
struct LoopExecutorTests {
    @Test func aTaskPreferringTheLoopRunsOnItsThread() async throws {
        let loop = try EventLoop()
        let thread = try LoopThread(name: "executor-test") { loop.run() }
        defer {
            loop.stop()
            thread.join()
        }
        let onLoop = await Task(executorPreference: loop) { loop.inEventLoop }.value
        #expect(onLoop)
        #expect(!loop.inEventLoop)
        let resumed = await withTaskExecutorPreference(loop) {
            await Task.yield() // suspends and resumes: the job goes through the loop again
            return loop.inEventLoop
        }
        #expect(resumed)
        #expect(await LoopBound(loop: loop).onLoop())
    }
}
