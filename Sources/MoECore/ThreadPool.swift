import Foundation
import Synchronization
import _MoEKernels

/// A fixed set of threads that runs data-parallel loops for the kernels.
///
/// `parallelFor(n) { i in ... }` runs the body once for each `i` in `0..<n`, spread over the
/// pool's threads (the calling thread is one of them), and returns when all are done. Idle
/// workers spin for a short while (so the back-to-back kernel calls of a decode step do not pay
/// a wake-up each) and then sleep. A call made while the pool is busy (from inside a body, or
/// from another thread) runs inline on the caller, so nesting can never deadlock.
///
/// ```swift
/// let pool = ThreadPool(threads: 2)
/// pool.parallelFor(8) { i in work(on: i) }
/// ```
public final class ThreadPool: @unchecked Sendable {
    /// Threads that run a loop, counting the caller.
    public let threadCount: Int
    private let state: PoolState

    /// A pool of `threads` threads (at least 1); `threads - 1` workers are started.
    /// At most `maxThreads` threads (more would only spin-wait for the cores): a larger request
    /// gets `maxThreads`. A worker the system refuses to start (`pthread_create` failing, as it
    /// does when a process hits its thread limit) is left out: the pool runs with the threads
    /// it got, which `threadCount` reports, and never waits for one that does not exist.
    public convenience init(threads: Int) {
        self.init(threads: threads, spawn: PoolState.spawnDetached)
    }

    /// A pool whose workers are started by `spawn`, which returns false when it could not start
    /// one (the tests inject failures through it).
    init(threads: Int, spawn: (@escaping @Sendable () -> Void) -> Bool) {
        state = PoolState(workers: min(max(1, threads), ThreadPool.maxThreads) - 1, spawn: spawn)
        threadCount = state.workerCount + 1
    }

    deinit { state.shutdown() }

    /// The real thread starter, for tests that wrap it.
    static func spawnDetachedForTests(_ body: @escaping @Sendable () -> Void) -> Bool { PoolState.spawnDetached(body) }

    /// The active processor count of this machine.
    public static var defaultThreadCount: Int { max(1, ProcessInfo.processInfo.activeProcessorCount) }

    /// The most threads a pool takes: 4 per active core (8 at least). Past the cores, threads
    /// only wait on each other.
    public static var maxThreads: Int { max(8, 4 * defaultThreadCount) }

    private static let sharedPool = Mutex(ThreadPool(threads: ThreadPool.defaultThreadCount))

    /// The pool kernels use when none is given: the active cores unless `setSharedThreadCount`
    /// chose otherwise.
    public static var shared: ThreadPool { sharedPool.withLock { $0 } }

    /// Replaces the shared pool with one of `threads` threads.
    public static func setSharedThreadCount(_ threads: Int) {
        sharedPool.withLock { pool in
            if pool.threadCount != max(1, threads) { pool = ThreadPool(threads: threads) }
        }
    }

    /// Runs `body(i)` for every `i` in `0..<count`, in parallel, and returns when all are done.
    /// Iterations are handed out one at a time from a shared counter, so uneven work balances.
    public func parallelFor(_ count: Int, _ body: (Int) -> Void) {
        if count <= 0 { return }
        if threadCount == 1 || count == 1 || !state.tryAcquire() {
            for i in 0..<count { body(i) }
            return
        }
        let start = DispatchTime.now().uptimeNanoseconds
        withoutActuallyEscaping(body) { escapable in
            state.run(count: count, body: escapable)
        }
        parallelNanoseconds.add(Int(DispatchTime.now().uptimeNanoseconds - start), ordering: .relaxed)
        state.release()
    }

    /// Nanoseconds this pool has spent in loops it ran on its threads (`parallelFor` calls that
    /// took the workers, from the caller's start to the last thread's end), summed since it was
    /// made. A caller reads it around a stretch of work: the rest of that stretch is time on
    /// the calling thread alone, while the workers wait (`moe bench`'s `decode_serial_fraction`).
    public var parallelTime: Double { Double(parallelNanoseconds.load(ordering: .relaxed)) / 1e9 }
    private let parallelNanoseconds = Atomic<Int>(0)
}

/// The workers' shared state, apart from `ThreadPool` so that workers do not keep the pool alive.
private final class PoolState: @unchecked Sendable {
    /// How long an idle worker spins before it sleeps. A sleeping worker costs the next loop a
    /// wake-up (50-150 us in a VM), which a training step's short serial stretches (routing,
    /// bookkeeping) would otherwise pay about 20 times a step; a spinning one costs only its own
    /// core, for at most this long after the last loop.
    private static let spinNanoseconds: UInt64 = 5_000_000

    /// The workers that started.
    private(set) var workerCount = 0
    private let generation = Atomic<Int>(0)
    private let next = Atomic<Int>(0)
    private let finished = Atomic<Int>(0)
    private let sleepers = Atomic<Int>(0)
    private let busy = Atomic<Bool>(false)
    private let stopping = Atomic<Bool>(false)
    private let condition = NSCondition()
    // Written by the caller before `generation` is bumped, read by workers after they see it.
    private var job: ((Int) -> Void)?
    private var jobCount = 0

    init(workers: Int, spawn: (@escaping @Sendable () -> Void) -> Bool) {
        for _ in 0..<workers {
            guard spawn({ [self] in self.workerLoop() }) else { break }
            workerCount += 1
        }
    }

    /// Starts `body` on a detached thread with a 1 MiB stack; false when the system refuses.
    static func spawnDetached(_ body: @escaping @Sendable () -> Void) -> Bool {
        final class Box { let body: () -> Void; init(_ body: @escaping () -> Void) { self.body = body } }
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        pthread_attr_setstacksize(&attributes, 1 << 20)
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        let box = Unmanaged.passRetained(Box(body)).toOpaque()
        #if canImport(Darwin)
        var thread: pthread_t?
        #else
        var thread = pthread_t()
        #endif
        let status = pthread_create(&thread, &attributes, { raw in
            #if canImport(Darwin)
            let box = Unmanaged<Box>.fromOpaque(raw).takeRetainedValue()
            #else
            let box = Unmanaged<Box>.fromOpaque(raw!).takeRetainedValue()  // safe: the pointer passed below
            #endif
            box.body()
            return nil
        }, box)
        if status != 0 { Unmanaged<Box>.fromOpaque(box).release() }
        return status == 0
    }

    func tryAcquire() -> Bool {
        busy.compareExchange(expected: false, desired: true, ordering: .acquiring).exchanged
    }

    func release() { busy.store(false, ordering: .releasing) }

    func run(count: Int, body: @escaping (Int) -> Void) {
        job = body
        jobCount = count
        next.store(0, ordering: .relaxed)
        finished.store(0, ordering: .relaxed)
        generation.add(1, ordering: .sequentiallyConsistent)
        if sleepers.load(ordering: .sequentiallyConsistent) > 0 {
            condition.lock()
            condition.broadcast()
            condition.unlock()
        }
        drain(body, count)
        // Wait for the workers; yield the core now and then, so that with more threads than
        // cores the workers this caller waits for get to run (a pure spin starved them).
        var spins = 0
        while finished.load(ordering: .acquiring) < workerCount {
            moek_cpu_relax()
            spins += 1
            if spins & 1023 == 0 { sched_yield() }
        }
        job = nil
    }

    func shutdown() {
        stopping.store(true, ordering: .sequentiallyConsistent)
        generation.add(1, ordering: .sequentiallyConsistent)
        condition.lock()
        condition.broadcast()
        condition.unlock()
    }

    private func drain(_ body: (Int) -> Void, _ count: Int) {
        while true {
            let i = next.wrappingAdd(1, ordering: .relaxed).oldValue
            if i >= count { return }
            body(i)
        }
    }

    private func workerLoop() {
        var seen = 0
        while true {
            var spins = 0, spinStart: UInt64 = 0, spinning = true
            while generation.load(ordering: .acquiring) == seen {
                if spinning {
                    moek_cpu_relax()
                    spins += 1
                    if spins & 255 == 0 {  // look at the clock now and then: it costs more than a pause
                        sched_yield()  // and let a thread that has work run, when cores are oversubscribed
                        let now = DispatchTime.now().uptimeNanoseconds
                        if spinStart == 0 { spinStart = now } else if now - spinStart > Self.spinNanoseconds { spinning = false }
                    }
                    continue
                }
                condition.lock()
                sleepers.add(1, ordering: .sequentiallyConsistent)
                while generation.load(ordering: .sequentiallyConsistent) == seen {
                    condition.wait()
                }
                sleepers.subtract(1, ordering: .sequentiallyConsistent)
                condition.unlock()
            }
            seen = generation.load(ordering: .acquiring)
            if stopping.load(ordering: .acquiring) { return }
            if let body = job { drain(body, jobCount) }
            finished.add(1, ordering: .releasing)
        }
    }
}
