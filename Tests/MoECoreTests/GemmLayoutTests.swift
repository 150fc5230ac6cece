import MoECore
import _TestSupport
import XCTest

/// `Kernels.gemm` with each operand stored normally or transposed, overwriting or accumulating,
/// against `Reference.matmul` on the logical operands, for every ISA path, 1 and 2 threads, on
/// sizes with ragged panels, ragged N tiles and K past one reduction block, and products big
/// enough to be split into blocks of rows as well as columns.
final class GemmLayoutTests: XCTestCase {
    /// [R, C] -> [C, R] (the test's own transpose, to store an operand the other way round).
    func transpose(_ v: [Float], rows: Int, cols: Int) -> [Float] {
        var out = [Float](repeating: 0, count: v.count)
        for i in 0..<rows { for j in 0..<cols { out[j * rows + i] = v[i * cols + j] } }
        return out
    }

    func testEveryLayoutAndAccumulation() {
        // (61, 16, 140) and (50, 45, 33): narrow tiles (16 and 13 columns) over pairs of panels and a ragged one.
        let shapes = [(1, 1, 1), (3, 5, 2), (17, 25, 3), (21, 7, 300), (40, 49, 513), (5, 70, 17), (400, 20, 300), (61, 16, 140),
                      (50, 45, 33)]
        forEachISA { isa in
            for pool in testPools {
                for (m, n, k) in shapes {
                    let a = Tensor(randomUniform: [m, k], seed: UInt64(m * 31 + k)).toFloats()
                    let b = Tensor(randomUniform: [n, k], seed: UInt64(n * 17 + k)).toFloats()
                    let ref = Reference.matmul(a, b, m: m, n: n, k: k)
                    let start = Tensor(randomUniform: [m, n], seed: 5).toFloats()
                    for ta in [false, true] {
                        for tb in [false, true] {
                            let at = !ta ? Tensor(shape: [m, k], values: a)
                                                        : Tensor(shape: [k, m], values: transpose(a, rows: m, cols: k))
                            let bt = !tb ? Tensor(shape: [n, k], values: b)
                                                        : Tensor(shape: [k, n], values: transpose(b, rows: n, cols: k))
                            let label = "m=\(m) n=\(n) k=\(k) transposeA=\(ta) transposeB=\(tb) threads=\(pool.threadCount) \(isa)"
                            let out = Kernels.gemm(at, bt, transposeA: ta, transposeB: tb, pool: pool)
                            assertClose(out.toFloats(), ref.out, absolute: 1e-6, relative: 1e-5, scale: ref.scale, label)
                            let sum = Tensor(shape: [m, n], values: start)
                            Kernels.gemm(at, bt, transposeA: ta, transposeB: tb, into: sum, accumulate: true, pool: pool)
                            assertClose(sum.toFloats(), zip(start, ref.out).map { $0 + $1 }, absolute: 1e-6, relative: 1e-5,
                                        scale: ref.scale.map { $0 + 1 }, label + " accumulate")
                        }
                    }
                }
            }
        }
    }

    /// A batch of jobs of every layout, sizes from empty to several tiles, some writing into row
    /// views of one tensor (as an MoE layer's experts do), equals the jobs run one by one.
    func testBatchMatchesEachJobAlone() {
        let shapes = [(0, 5, 3), (7, 30, 0), (1, 3, 2), (17, 25, 40), (40, 49, 300), (3, 0, 4), (33, 70, 17), (150, 20, 200)]
        forEachISA { isa in
            for pool in testPools {
                var jobs: [GemmJob] = [], expected: [[Float]] = []
                let big = Tensor(shape: [100, 49], values: [Float](repeating: 2, count: 4900))  // job 4 writes rows 30..<70
                for (i, (m, n, k)) in shapes.enumerated() {
                    let ta = i % 2 == 1, tb = i % 3 != 0, acc = i % 2 == 0
                    let a = Tensor(randomUniform: ta ? [k, m] : [m, k], seed: UInt64(10 + i))
                    let b = Tensor(randomUniform: tb ? [k, n] : [n, k], seed: UInt64(20 + i))
                    let out = i == 4 ? big.rows(30..<70) : Tensor(randomUniform: [m, n], seed: 3)
                    let alone = out.copied()
                    Kernels.gemm(a, b, transposeA: ta, transposeB: tb, into: alone, accumulate: acc, pool: ThreadPool(threads: 1))
                    expected.append(alone.toFloats())
                    jobs.append(GemmJob(a, b, transposeA: ta, transposeB: tb, into: out, accumulate: acc))
                }
                Kernels.gemmBatch(jobs, pool: pool)
                for (i, job) in jobs.enumerated() {
                    XCTAssertEqual(job.out.toFloats(), expected[i], "job \(i) threads=\(pool.threadCount) \(isa)")
                }
                let rest = big.toFloats()
                XCTAssertEqual(Array(rest[..<(30 * 49)]) + Array(rest[(70 * 49)...]), [Float](repeating: 2, count: 60 * 49))
            }
        }
    }

    /// Jobs writing one output form a chain: overwrite, then add, then add, in the order given,
    /// on both the direct path and the packed one (K past 512, row-major A), with other jobs
    /// beside them; equal to the jobs run one after another, to the bit.
    func testChainedJobsRunInOrder() {
        forEachISA { isa in
            for pool in testPools {
                for (m, n, ks) in [(150, 40, [96, 48, 48]), (37, 70, [600, 30, 513])] {
                    let out = Tensor(randomUniform: [m, n], seed: 1), alone = out.copied()
                    let other = Tensor(zeros: [m, n]), otherAlone = other.copied()
                    var jobs: [GemmJob] = []
                    for (i, k) in ks.enumerated() {
                        let tb = i == 1, a = Tensor(randomUniform: [m, k], seed: UInt64(30 + i))
                        let b = Tensor(randomUniform: tb ? [k, n] : [n, k], seed: UInt64(40 + i))
                        jobs.append(GemmJob(a, b, transposeB: tb, into: out, accumulate: i > 0))
                        Kernels.gemm(a, b, transposeB: tb, into: alone, accumulate: i > 0, pool: ThreadPool(threads: 1))
                        if i == 0 {  // an unrelated job in the same batch
                            jobs.append(GemmJob(a, b, into: other))
                            Kernels.gemm(a, b, into: otherAlone, pool: ThreadPool(threads: 1))
                        }
                    }
                    Kernels.gemmBatch(jobs, pool: pool)
                    // Zero tolerance: to the bit (assertClose reports only the worst element).
                    assertClose(out.toFloats(), alone.toFloats(), "chain m=\(m) n=\(n) k=\(ks) threads=\(pool.threadCount) \(isa)")
                    assertClose(other.toFloats(), otherAlone.toFloats(), "other job, k=\(ks) \(isa)")
                }
            }
        }
    }

    /// A group's jobs run together on each block, and `finish` sees every block of every chain or
    /// group exactly once, after its products: here it sums the group's two outputs, and counts.
    func testGroupsAndFinish() {
        forEachISA { isa in
            for pool in testPools {
                for (m, n, k) in [(150, 70, 96), (37, 40, 600)] {  // the direct path, then the packed one
                    let x = Tensor(randomUniform: [m, k], seed: 1)
                    let w1 = Tensor(randomUniform: [n, k], seed: 2), w2 = Tensor(randomUniform: [n, k], seed: 3)
                    let y1 = Tensor(zeros: [m, n]), y2 = Tensor(zeros: [m, n]), other = Tensor(zeros: [m, n])
                    // Separate counters for the group and the other job: their finishes may run at once
                    // on two threads for the same block (one shared += would race).
                    let sum = Tensor(zeros: [m, n]), seen = Tensor(zeros: [m, n]), seenOther = Tensor(zeros: [m, n])
                    let jobs = [GemmJob(x, w1, into: y1, group: 7), GemmJob(x, w2, into: y2, group: 7), GemmJob(x, w1, into: other)]
                    let (p1, p2, ps, pc, po) = (y1.floats, y2.floats, sum.mutableFloats, seen.mutableFloats, seenOther.mutableFloats)
                    Kernels.gemmBatch(jobs, pool: pool) { job, rows, columns in
                        for r in rows {
                            for c in columns {
                                if job == 2 { po[r * n + c] += 1 } else { pc[r * n + c] += job == 0 ? 1 : 100 }  // the group's first job, or the other
                                if job == 0 { ps[r * n + c] = p1[r * n + c] + p2[r * n + c] }
                            }
                        }
                    }
                    let label = "m=\(m) n=\(n) k=\(k) threads=\(pool.threadCount) \(isa)"
                    assertClose(seen.toFloats(), [Float](repeating: 1, count: m * n), "each block of the group once, \(label)")
                    assertClose(seenOther.toFloats(), [Float](repeating: 1, count: m * n), "each block of the other job once, \(label)")
                    assertClose(sum.toFloats(), zip(y1.toFloats(), y2.toFloats()).map { $0 + $1 }, "group done before finish, \(label)")
                    assertClose(other.toFloats(), y1.toFloats(), "the ungrouped job, \(label)")
                }
            }
        }
    }

    /// Rows read through indices (out of order, repeated) equal the same products on gathered
    /// copies, to the bit: A's rows as an MoE expert's forward reads its tokens (a group of two
    /// jobs sharing one index), B's reduction rows as its weight gradient does, and the reduction
    /// rows of an A stored transposed (the down projection's gradient), beside an unindexed job;
    /// on the direct path, and on the packed one (a job with K past 512 in the batch), where the
    /// rows are gathered first.
    func testRowIndicesMatchGatheredRows() {
        forEachISA { isa in
            for pool in testPools {
                for (m, n, k, tokens) in [(150, 40, 96, 200), (30, 33, 600, 41)] {
                    let x = Tensor(randomUniform: [tokens, k], seed: 1)
                    let rows = (0..<m).map { ($0 * 7 + 3) % tokens } + [5, 5]  // out of order, and repeated
                    let w1 = Tensor(randomUniform: [n, k], seed: 2), w2 = Tensor(randomUniform: [n, k], seed: 3)
                    let dy = Tensor(randomUniform: [rows.count, n], seed: 4), dw = Tensor(randomUniform: [n, k], seed: 5)
                    let plain = Tensor(randomUniform: [rows.count, k], seed: 6)
                    let (y1, y2, y3) = (Tensor(zeros: [rows.count, n]), Tensor(zeros: [rows.count, n]), Tensor(zeros: [rows.count, n]))
                    let dwStart = dw.copied()
                    let dz = Tensor(randomUniform: [tokens, 30], seed: 7), dd = Tensor(zeros: [30, n])
                    Kernels.gemmBatch([GemmJob(x, w1, into: y1, group: 1, aRows: rows), GemmJob(x, w2, into: y2, group: 1, aRows: rows),
                                       GemmJob(dy, x, transposeA: true, transposeB: true, into: dw, accumulate: true, bRows: rows),
                                       GemmJob(dz, dy, transposeA: true, transposeB: true, into: dd, aRows: rows),
                                       GemmJob(plain, w1, into: y3)], pool: pool)
                    let gathered = Kernels.gatherRows(x, rows)
                    let one = ThreadPool(threads: 1)
                    let label = "m=\(rows.count) n=\(n) k=\(k) threads=\(pool.threadCount) \(isa)"
                    assertClose(y1.toFloats(), Kernels.gemm(gathered, w1, pool: one).toFloats(), "A rows, first of the group, \(label)")
                    assertClose(y2.toFloats(), Kernels.gemm(gathered, w2, pool: one).toFloats(), "A rows, second of the group, \(label)")
                    Kernels.gemm(dy, gathered, transposeA: true, transposeB: true, into: dwStart, accumulate: true, pool: one)
                    assertClose(dw.toFloats(), dwStart.toFloats(), "B rows, accumulating, \(label)")
                    assertClose(y3.toFloats(), Kernels.gemm(plain, w1, pool: one).toFloats(), "the unindexed job, \(label)")
                    let ddWant = Kernels.gemm(Kernels.gatherRows(dz, rows), dy, transposeA: true, transposeB: true, pool: one)
                    assertClose(dd.toFloats(), ddWant.toFloats(), "transposed A's rows, \(label)")
                }
            }
        }
    }

    /// `wholeRows`: every block `finish` sees spans all the output's columns, the rows are
    /// covered once, and the product is unchanged; on the direct and the packed path, every ISA,
    /// with a shape that is otherwise split by columns.
    func testWholeRowsBlocksSpanEveryColumn() {
        forEachISA { isa in
            for pool in testPools {
                for (m, n, k) in [(150, 200, 96), (40, 200, 600)] {
                    let x = Tensor(randomUniform: [m, k], seed: 1), w = Tensor(randomUniform: [n, k], seed: 2)
                    let y = Tensor(zeros: [m, n]), seen = Tensor(zeros: [m])
                    let ps = seen.mutableFloats
                    Kernels.gemmBatch([GemmJob(x, w, into: y, wholeRows: true)], pool: pool) { _, rows, columns in
                        XCTAssertEqual(columns, 0..<n, "m=\(m) k=\(k) \(isa)")
                        for r in rows { ps[r] += 1 }
                    }
                    let label = "m=\(m) n=\(n) k=\(k) threads=\(pool.threadCount) \(isa)"
                    assertClose(seen.toFloats(), [Float](repeating: 1, count: m), "each row once, \(label)")
                    assertClose(y.toFloats(), Kernels.gemm(x, w, pool: ThreadPool(threads: 1)).toFloats(), "product, \(label)")
                }
            }
        }
    }
}
