import Foundation

/// A task executor with a thread of its own, for a task whose timing a test measures.
///
/// The concurrency pool has one thread per core, and the suite runs CPU-bound tests on it
/// in parallel: a task resumed while they run can wait seconds for a thread. A test that
/// asserts *when* a task was resumed runs that task here (`Task(executorPreference:)`), so
/// what it measures is the code under test, not the pool's queue.
public final class ThreadExecutor: TaskExecutor, @unchecked Sendable {
    // `jobs` and `stopped` are guarded by `condition`.
    private let condition = NSCondition()
    private var jobs: [UnownedJob] = []
    private var stopped = false

    /// Starts the thread; it ends after ``stop()``, once the jobs queued before it have run.
    public init() {
        let thread = Thread { [self] in run() }
        thread.name = "test-executor"
        thread.start()
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        condition.lock()
        jobs.append(job)
        condition.signal()
        condition.unlock()
    }

    /// Lets the thread end once its queue is empty.
    public func stop() {
        condition.lock()
        stopped = true
        condition.signal()
        condition.unlock()
    }

    private func run() {
        while true {
            condition.lock()
            while jobs.isEmpty, !stopped { condition.wait() }
            if jobs.isEmpty {
                condition.unlock()
                return
            }
            let batch = jobs
            jobs = []
            condition.unlock()
            for job in batch { job.runSynchronously(on: asUnownedTaskExecutor()) }
        }
    }
}
