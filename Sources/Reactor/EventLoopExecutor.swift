/// An event loop runs Swift concurrency jobs on its thread: a task with the
/// loop as its executor preference (`Task(executorPreference: loop)`), or
/// an actor whose `unownedExecutor` is the loop, runs there, beside the
/// loop's connections, and calls their handles with no thread hop.
///
/// A job enqueued on the loop's own thread (a continuation resumed by a
/// handler, say) runs after the current batch of events, before the loop
/// waits again, with no lock and no wake-up; one from another thread goes
/// through `execute`. Jobs enqueued once the loop has finished run on the
/// global concurrent executor instead, so no task is stranded on a loop
/// that is gone (its connections are closed by then).
extension EventLoop: TaskExecutor, SerialExecutor {
    /// Runs a concurrency job on this loop's thread: after the current batch of
    /// events when called there, through `execute` from any other thread. The
    /// concurrency runtime calls it; code of one's own has no need to.
    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        if isCurrent {
            jobs.append(job)
            hasDeferredWork = true
        } else if !submit({ [self] in run(job) }) {
            globalConcurrentExecutor.enqueue(ExecutorJob(job))
        }
    }

    /// This loop as a task executor, for `Task(executorPreference:)`,
    /// `addTask(executorPreference:)` and `withTaskExecutorPreference`.
    public func asUnownedTaskExecutor() -> UnownedTaskExecutor {
        UnownedTaskExecutor(ordinary: self)
    }

    /// This loop as a serial executor, for an actor whose `unownedExecutor` it is.
    public func asUnownedSerialExecutor() -> UnownedSerialExecutor {
        UnownedSerialExecutor(ordinary: self)
    }

    /// Stops with a precondition failure unless called on this loop's thread:
    /// what `assumeIsolated` relies on for an actor on this executor.
    public func checkIsolated() {
        precondition(isCurrent, "expected to run on this event loop's thread")
    }

    func run(_ job: UnownedJob) {
        job.runSynchronously(on: asUnownedTaskExecutor())
    }

    /// The jobs enqueued on the loop's thread so far; those they enqueue run in the next round.
    func runJobs() {
        swap(&jobs, &jobScratch)
        for job in jobScratch { run(job) }
        jobScratch.removeAll(keepingCapacity: true)
    }
}
