import Dispatch
@testable import MoECore
import Synchronization
import XCTest

final class ThreadPoolTests: XCTestCase {
    func testEveryIndexRunsExactlyOnce() {
        for threads in [1, 2, 3] {
            let pool = ThreadPool(threads: threads)
            for count in [0, 1, 2, 3, 17, 1000] {
                let hits = UnsafeMutableBufferPointer<Int>.allocate(capacity: max(1, count))
                hits.initialize(repeating: 0)
                defer { hits.deallocate() }
                for _ in 0..<3 {  // reuse the same pool for several jobs
                    pool.parallelFor(count) { i in hits[i] += 1 }
                }
                XCTAssertEqual(Array(hits.prefix(count)), [Int](repeating: 3, count: count), "threads=\(threads) count=\(count)")
            }
        }
    }

    func testNestedAndConcurrentCallsDoNotDeadlock() {
        let pool = ThreadPool(threads: 2)
        let total = Atomic<Int>(0)
        pool.parallelFor(4) { _ in
            pool.parallelFor(5) { _ in total.add(1, ordering: .relaxed) }
        }
        XCTAssertEqual(total.load(ordering: .relaxed), 20)
        total.store(0, ordering: .relaxed)
        DispatchQueue.concurrentPerform(iterations: 4) { _ in
            for _ in 0..<50 { pool.parallelFor(10) { _ in total.add(1, ordering: .relaxed) } }
        }
        XCTAssertEqual(total.load(ordering: .relaxed), 2000)
    }

    func testWorkersWakeAfterSleeping() {
        let pool = ThreadPool(threads: 2)
        let seen = Atomic<Int>(0)
        pool.parallelFor(2) { _ in seen.add(1, ordering: .relaxed) }
        usleep(50_000)  // long enough for the worker to stop spinning and sleep
        pool.parallelFor(64) { _ in seen.add(1, ordering: .relaxed) }
        XCTAssertEqual(seen.load(ordering: .relaxed), 66)
    }

    /// `parallelTime` counts the loops that took the workers, from start to the last thread's
    /// end, and not the ones that ran inline on the caller.
    func testParallelTimeCountsTheLoopsOnTheWorkers() {
        let pool = ThreadPool(threads: 2)
        XCTAssertEqual(pool.parallelTime, 0)
        pool.parallelFor(2) { _ in usleep(5_000) }
        let one = pool.parallelTime
        XCTAssertGreaterThanOrEqual(one, 0.005)
        XCTAssertLessThan(one, 5, "seconds, not nanoseconds")
        pool.parallelFor(1) { _ in usleep(5_000) }  // a single iteration runs inline
        XCTAssertEqual(pool.parallelTime, one, "a loop on the caller alone is not counted")
        pool.parallelFor(2) { _ in pool.parallelFor(2) { _ in usleep(1_000) } }  // nested calls run inline
        XCTAssertGreaterThanOrEqual(pool.parallelTime - one, 0.002, "the outer loop, once")
        let single = ThreadPool(threads: 1)
        single.parallelFor(4) { _ in usleep(1_000) }
        XCTAssertEqual(single.parallelTime, 0)
    }

    func testSharedPoolThreadCountIsSettable() {
        let before = ThreadPool.shared.threadCount
        ThreadPool.setSharedThreadCount(3)
        XCTAssertEqual(ThreadPool.shared.threadCount, 3)
        ThreadPool.setSharedThreadCount(before)
        XCTAssertEqual(ThreadPool.shared.threadCount, before)
        XCTAssertEqual(ThreadPool(threads: 0).threadCount, 1)
    }

    /// A worker the system refuses to start is left out: the pool reports the threads it got and
    /// its loops finish (they used to wait forever for the missing worker).
    func testAPoolWhoseThreadsFailToStartRunsWithTheOnesItGot() {
        for started in [0, 1, 2] {
            let budget = Atomic<Int>(started)
            let pool = ThreadPool(threads: 4) { body in
                guard budget.subtract(1, ordering: .relaxed).newValue >= 0 else { return false }
                return ThreadPool.spawnDetachedForTests(body)
            }
            XCTAssertEqual(pool.threadCount, started + 1)
            let total = Atomic<Int>(0)
            for _ in 0..<20 { pool.parallelFor(16) { _ in total.add(1, ordering: .relaxed) } }
            XCTAssertEqual(total.load(ordering: .relaxed), 320)
        }
    }
}
