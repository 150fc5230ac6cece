import MoECore
import MoEDistributed
import XCTest

/// The in-process communicator's collectives, on ragged counts (the reference the MPI build's
/// `scripts/check-expert-parallel.sh` runs against).
final class CommunicatorTests: XCTestCase {
    /// Rank r sends q + 1 values (r * 100 + q * 10 + i) to each rank q; every rank receives
    /// exactly what each sender addressed to it, in rank order; empty messages are allowed.
    func testAllToAllVDeliversRaggedMessages() {
        for ranks in 1...4 {
            let got = ThreadCommunicator.run(ranks: ranks) { comm -> [Float] in
                let r = comm.rank
                let sendCounts = (0..<ranks).map { q in (q + r) % 3 }
                var send: [Float] = []
                for q in 0..<ranks { send += (0..<sendCounts[q]).map { Float(r * 100 + q * 10 + $0) } }
                let receiveCounts = (0..<ranks).map { s in (r + s) % 3 }
                var box = [Float](repeating: -1, count: receiveCounts.reduce(0, +))
                send.withUnsafeBufferPointer { s in
                    box.withUnsafeMutableBufferPointer { comm.allToAllV(send: s, sendCounts: sendCounts, receive: $0, receiveCounts: receiveCounts) }
                }
                return box
            }
            for r in 0..<ranks {
                var want: [Float] = []
                for s in 0..<ranks { want += (0..<((r + s) % 3)).map { Float(s * 100 + r * 10 + $0) } }
                XCTAssertEqual(got[r], want, "\(ranks) ranks, rank \(r)")
            }
        }
    }

    /// The non-blocking form delivers the same messages once waited for.
    func testStartedAllToAllVDeliversOnWait() {
        let got = ThreadCommunicator.run(ranks: 3) { comm -> [Float] in
            let send = (0..<3).map { Float(comm.rank * 10 + $0) }
            var box = [Float](repeating: -1, count: 3)
            send.withUnsafeBufferPointer { s in
                box.withUnsafeMutableBufferPointer { b in
                    let pending = comm.startAllToAllV(send: s, sendCounts: [1, 1, 1], receive: b, receiveCounts: [1, 1, 1])
                    pending.wait()
                    XCTAssertTrue(pending.test())
                }
            }
            return box
        }
        for r in 0..<3 { XCTAssertEqual(got[r], (0..<3).map { Float($0 * 10 + r) }) }
    }

    func testGathersAndSums() {
        let got = ThreadCommunicator.run(ranks: 3) { comm -> ([Int64], [Float], [Float], Double) in
            let r = comm.rank
            let ints = comm.allGather([Int64(r), Int64(10 * r)])
            let mine = [Float](repeating: Float(r), count: r)  // rank r sends r values
            var all = [Float](repeating: 0, count: 3)
            mine.withUnsafeBufferPointer { m in all.withUnsafeMutableBufferPointer { comm.allGatherV(send: m, receive: $0, counts: [0, 1, 2]) } }
            var sum: [Float] = [Float(r), 1]
            sum.withUnsafeMutableBufferPointer { comm.allReduceSum($0) }
            comm.barrier()
            return (ints, all, sum, comm.sum(Double(r) + 0.5))
        }
        for g in got {
            XCTAssertEqual(g.0, [0, 0, 1, 10, 2, 20])
            XCTAssertEqual(g.1, [1, 2, 2])
            XCTAssertEqual(g.2, [3, 3])
            XCTAssertEqual(g.3, 4.5)
        }
    }

    func testShardsAreContiguousAndEven() throws {
        let shard = try XCTUnwrap(ExpertShard(experts: 8, ranks: 3))
        XCTAssertEqual((0..<3).map { shard.experts(of: $0) }, [0..<3, 3..<6, 6..<8])
        XCTAssertEqual((0..<8).map { shard.owner(of: $0) }, [0, 0, 0, 1, 1, 1, 2, 2])
        XCTAssertNil(ExpertShard(experts: 2, ranks: 3))
        XCTAssertNil(ExpertShard(experts: 2, ranks: 0))
    }
}
