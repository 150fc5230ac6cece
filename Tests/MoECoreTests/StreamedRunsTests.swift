@testable import MoECore
import Synchronization
import XCTest

/// `StreamedRuns`: every weight row of every job lands in exactly one piece, each thread's run
/// is contiguous in job order and of about equal bytes, runs are cut into at least the pieces
/// asked for where their rows allow and taper towards their ends, and `run` calls the body
/// once per piece whatever the threads (a thread that finishes takes the others' remaining
/// pieces).
final class StreamedRunsTests: XCTestCase {
    func testEveryRowOnceInBalancedContiguousRuns() {
        let shapes: [[(n: Int, rowBytes: Int)]] = [[(512, 576)], [(1024, 576), (1024, 576), (512, 210)],
                                                   [(3, 100), (5, 100)], [(32000, 840)], (0..<16).map { _ in (512, 576) }]
        for jobs in shapes {
            for threads in [1, 2, 3, 8] {
                let runs = StreamedRuns(jobs, threads: threads)
                XCTAssertEqual(runs.runs.count, threads)
                var seen = jobs.map { [Int](repeating: 0, count: $0.n) }
                var last = (job: 0, row: 0)
                for run in runs.runs {
                    for p in run {
                        XCTAssertTrue(p.n0 < p.n1)
                        XCTAssertTrue((p.job, p.n0) >= (last.job, last.row), "runs follow job order")
                        last = (p.job, p.n1)
                        for r in p.n0..<p.n1 { seen[p.job][r] += 1 }
                    }
                }
                XCTAssertEqual(seen.flatMap { $0 }, [Int](repeating: 1, count: jobs.reduce(0) { $0 + $1.n }), "\(jobs.count) jobs, \(threads) threads")
                let total = jobs.reduce(0) { $0 + $1.n * $1.rowBytes }
                if total >= threads * 64 * 1024 {
                    for run in runs.runs {
                        let bytes = run.reduce(0) { $0 + ($1.n1 - $1.n0) * jobs[$1.job].rowBytes }
                        XCTAssertEqual(Double(bytes), Double(total) / Double(threads), accuracy: Double(total) / Double(threads) * 0.1)
                        XCTAssertGreaterThanOrEqual(run.count, 4)
                    }
                }
            }
        }
    }

    /// Runs taper: no piece holds more than half the bytes left in its run from its start,
    /// unless it is no more than the smallest piece (4 rows, or `minPieceBytes`); so an LM head's
    /// run ends in pieces of about 32 KB, not in a quarter of the run.
    func testPiecesTaperTowardsTheEndOfEachRun() {
        let shapes: [[(n: Int, rowBytes: Int)]] = [[(32000, 840)], (0..<16).map { _ in (512, 576) }, [(1024, 576), (1024, 840)]]
        for jobs in shapes {
            for threads in [1, 2, 3] {
                for run in StreamedRuns(jobs, threads: threads, minPieceBytes: 32 << 10).runs {
                    var left = run.reduce(0) { $0 + ($1.n1 - $1.n0) * jobs[$1.job].rowBytes }
                    for p in run {
                        let bytes = (p.n1 - p.n0) * jobs[p.job].rowBytes
                        XCTAssertTrue(bytes <= left / 2 || bytes <= max(32 << 10, 4 * jobs[p.job].rowBytes),
                                      "\(bytes) bytes with \(left) left, \(threads) threads")
                        left -= bytes
                    }
                    if let last = run.last, jobs.count == 1 {
                        XCTAssertLessThanOrEqual((last.n1 - last.n0) * jobs[last.job].rowBytes, 32 << 10)
                    }
                }
            }
        }
    }

    func testRunCallsEachPieceOnce() {
        for threads in [1, 2, 3] {
            let pool = ThreadPool(threads: threads)
            let runs = StreamedRuns([(1000, 64), (24, 64)], threads: threads)
            let calls = Mutex([String: Int]())
            runs.run(pool: pool) { piece, next in
                calls.withLock { $0["\(piece.job):\(piece.n0)", default: 0] += 1 }
                if let next { XCTAssertTrue((next.job, next.n0) > (piece.job, piece.n0)) }
            }
            let want = runs.runs.flatMap { $0 }.map { "\($0.job):\($0.n0)" }
            XCTAssertEqual(calls.withLock { $0 }, Dictionary(uniqueKeysWithValues: want.map { ($0, 1) }), "\(threads) threads")
        }
    }

    /// A cached split is the split `init` makes for the same jobs and threads, whatever other
    /// splits were cached between (more than the cache holds), and a different job list or
    /// thread count gets its own.
    func testCachedSplitEqualsAFreshOne() {
        func same(_ a: StreamedRuns, _ b: StreamedRuns) -> Bool {
            a.runs.count == b.runs.count && zip(a.runs, b.runs).allSatisfy { x, y in
                x.count == y.count && zip(x, y).allSatisfy { $0 == $1 }
            }
        }
        let jobs: [(n: Int, rowBytes: Int)] = [(768, 576), (768, 576), (1024, 432)]
        for threads in [1, 2, 3] {
            XCTAssertTrue(same(StreamedRuns.cached(jobs, threads: threads), StreamedRuns(jobs, threads: threads)))
        }
        for n in 1...(StreamedRuns.cachedPlans + 5) { _ = StreamedRuns.cached([(n * 4, 64)], threads: 2) }
        XCTAssertTrue(same(StreamedRuns.cached(jobs, threads: 2), StreamedRuns(jobs, threads: 2)))
        XCTAssertTrue(same(StreamedRuns.cached([(64, 64)], threads: 2), StreamedRuns([(64, 64)], threads: 2)))
        XCTAssertFalse(same(StreamedRuns.cached([(64, 64)], threads: 1), StreamedRuns([(64, 64)], threads: 2)))
    }

    /// Two splits whose shapes hash to one slot are both held once made (a layer's down pass and
    /// its attention output did, in a real Q4_K_M file, and each evicted the other every token).
    func testSplitsSharingAHomeSlotAreBothHeld() throws {
        StreamedRuns.forgetCached()
        let a: [(n: Int, rowBytes: Int)] = [(1024, 576)]
        let home = StreamedRuns.homeSlot(a, threads: 2)
        let n = try XCTUnwrap((1...10_000).first { StreamedRuns.homeSlot([($0 * 4, 630)], threads: 2) == home })
        let b: [(n: Int, rowBytes: Int)] = [(n * 4, 630)]
        _ = StreamedRuns.cached(a, threads: 2)
        _ = StreamedRuns.cached(b, threads: 2)
        XCTAssertNotNil(StreamedRuns.held(a, threads: 2, home: home))
        XCTAssertNotNil(StreamedRuns.held(b, threads: 2, home: home))
        XCTAssertNil(StreamedRuns.held([(8, 8)], threads: 2, home: StreamedRuns.homeSlot([(8, 8)], threads: 2)))
    }
}
