import Foundation
import MoECore

// Dimension legend: T tokens, H query heads, G key/value heads (H / G share one), D head dim.

extension Tape {
    /// RoPE on x [T, heads, D] at `positions`. Backward rotates dy back (the same RoPE at the
    /// negated positions: a rotation's inverse is its transpose).
    public func rope(_ x: Variable, positions: [Int], _ rope: RotaryEmbedding) -> Variable {
        let y = Tensor(uninitialized: x.shape)
        rope.apply(x.value, positions: positions, into: y, pool: pool)
        let out = Variable(y)
        record { [pool] in
            guard let dy = out.grad else { return }
            // `out` is done with dy: rotate it back in place and hand it on.
            rope.apply(dy, positions: positions.map { -$0 }, pool: pool)
            x.accumulate(owned: dy, pool: pool)
        }
        return out
    }

    /// Causal softmax attention: q [T, H, D], k and v [T, G, D] -> [T, H * D]. Token t sees 0...t,
    /// within its segment when `segment` is set (T rows holding T / segment sequences).
    ///
    /// Each (head, segment) block is a few small products, all run through `Kernels.gemmBatch`
    /// on head-major copies of q, k and v: S = scale Q K^T, P = causal softmax(S), O = P V.
    /// Backward from the saved P: dV += P^T dO; dP = dO V^T; dS = P (dP - rowsum(P dP));
    /// dQ = scale dS K; dK += scale dS^T Q.
    public func causalAttention(q: Variable, k: Variable, v: Variable, scale: Float, segment: Int? = nil) -> Variable {
        let (t, h, d) = (q.shape[0], q.shape[1], q.shape[2]), g = k.shape[1], group = h / g
        let seg = max(1, segment ?? t)
        let blocks = AttentionBlocks(tokens: t, heads: h, kvHeads: g, segment: seg)
        let qh = headMajor(q.value, pool: pool), kh = headMajor(k.value, pool: pool), vh = headMajor(v.value, pool: pool)
        // Saved probabilities, one [len, len] block per (head, segment).
        let probs = Tensor(uninitialized: [blocks.scoreCount])  // the products fill every block
        Kernels.gemmBatch(blocks.all.map { b in
            GemmJob(qh.rows(b.queryRows), kh.rows(b.keyRows), into: blocks.scores(probs, b))
        }, pool: pool)
        let pp = probs.mutableFloats
        Kernels.parallelRows(blocks.all.count, cost: seg * seg * 4, pool: pool) { i in
            let b = blocks.all[i], base = b.scoreOffset, n = b.length
            for r in 0..<n {
                let row = base + r * n
                var mx = -Float.infinity
                for j in 0...r { pp[row + j] *= scale; mx = max(mx, pp[row + j]) }
                var sum: Float = 0
                for j in 0...r { let e = Foundation.exp(pp[row + j] - mx); pp[row + j] = e; sum += e }
                let inv = 1 / sum
                for j in 0...r { pp[row + j] *= inv }
                for j in (r + 1)..<n { pp[row + j] = 0 }
            }
        }
        let oh = Tensor(uninitialized: [h * t, d])
        Kernels.gemmBatch(blocks.all.map { b in
            GemmJob(blocks.scores(probs, b), vh.rows(b.keyRows), transposeB: true, into: oh.rows(b.queryRows))
        }, pool: pool)
        let out = Variable(tokenMajor(oh, heads: h, pool: pool))
        record { [pool] in
            guard let dyT = out.grad else { return }
            let doh = headMajor(dyT.reshaped([t, h, d]), pool: pool)
            // Overwritten by the products below (dK and dV by the first head of each group).
            let dqh = Tensor(uninitialized: [h * t, d]), dkh = Tensor(uninitialized: [g * t, d]), dvh = Tensor(uninitialized: [g * t, d])
            // dP = dO V^T, into a buffer shaped like the probabilities.
            let dS = Tensor(uninitialized: [blocks.scoreCount])
            Kernels.gemmBatch(blocks.all.map { b in
                GemmJob(doh.rows(b.queryRows), vh.rows(b.keyRows), into: blocks.scores(dS, b))
            }, pool: pool)
            let pp = probs.floats, ds = dS.mutableFloats
            Kernels.parallelRows(blocks.all.count, cost: seg * seg * 3, pool: pool) { i in
                let b = blocks.all[i], base = b.scoreOffset, n = b.length
                for r in 0..<n {
                    let row = base + r * n
                    var dot: Float = 0
                    for j in 0...r { dot += pp[row + j] * ds[row + j] }
                    for j in 0..<n { ds[row + j] = pp[row + j] * (ds[row + j] - dot) * scale }
                }
            }
            Kernels.gemmBatch(blocks.all.map { b in
                GemmJob(blocks.scores(dS, b), kh.rows(b.keyRows), transposeB: true, into: dqh.rows(b.queryRows))
            }, pool: pool)
            // dK and dV: the heads of one group add into the same rows, so one batch per head
            // within the group keeps every batch's outputs disjoint.
            for r in 0..<group {
                Kernels.gemmBatch(blocks.all.filter { $0.head % group == r }.flatMap { b in
                    [GemmJob(blocks.scores(dS, b), qh.rows(b.queryRows), transposeA: true, transposeB: true,
                             into: dkh.rows(b.keyRows), accumulate: r > 0),
                     GemmJob(blocks.scores(probs, b), doh.rows(b.queryRows), transposeA: true, transposeB: true,
                             into: dvh.rows(b.keyRows), accumulate: r > 0)]
                }, pool: pool)
            }
            q.accumulate(owned: tokenMajor(dqh, heads: h, pool: pool).reshaped(q.shape), pool: pool)
            k.accumulate(owned: tokenMajor(dkh, heads: g, pool: pool).reshaped(k.shape), pool: pool)
            v.accumulate(owned: tokenMajor(dvh, heads: g, pool: pool).reshaped(v.shape), pool: pool)
        }
        return out
    }
}

/// The (head, segment) blocks of causal attention over T tokens in segments, with where each
/// block's rows sit in head-major [heads * T, D] tensors and its [len, len] scores in a flat buffer.
struct AttentionBlocks {
    struct Block {
        var head: Int, queryRows: Range<Int>, keyRows: Range<Int>, scoreOffset: Int
        var length: Int { queryRows.count }
    }
    let all: [Block]
    let scoreCount: Int

    init(tokens t: Int, heads h: Int, kvHeads g: Int, segment seg: Int) {
        var all: [Block] = [], offset = 0
        for hi in 0..<h {
            let gi = hi / (h / g)
            for start in stride(from: 0, to: t, by: seg) {
                let end = min(t, start + seg)
                all.append(Block(head: hi, queryRows: (hi * t + start)..<(hi * t + end),
                                 keyRows: (gi * t + start)..<(gi * t + end), scoreOffset: offset))
                offset += (end - start) * (end - start)
            }
        }
        self.all = all
        scoreCount = offset
    }

    /// Block b's [len, len] view of a flat scores buffer.
    func scores(_ buffer: Tensor, _ b: Block) -> Tensor {
        buffer.rows(b.scoreOffset..<(b.scoreOffset + b.length * b.length)).reshaped([b.length, b.length])
    }
}

/// [T, H, D] -> [H * T, D]: each head's rows together.
func headMajor(_ x: Tensor, pool: ThreadPool) -> Tensor {
    let (t, h, d) = (x.shape[0], x.shape[1], x.shape[2])
    let out = Tensor(uninitialized: [h * t, d])
    let src = x.floats, dst = out.mutableFloats
    Kernels.parallelRows(t, cost: h * d, pool: pool) { ti in
        for hi in 0..<h { for c in 0..<d { dst[(hi * t + ti) * d + c] = src[(ti * h + hi) * d + c] } }
    }
    return out
}

/// [H * T, D] (head-major) -> [T, H * D].
func tokenMajor(_ x: Tensor, heads h: Int, pool: ThreadPool) -> Tensor {
    let d = x.shape[1], t = x.shape[0] / h
    let out = Tensor(uninitialized: [t, h * d])
    let src = x.floats, dst = out.mutableFloats
    Kernels.parallelRows(t, cost: h * d, pool: pool) { ti in
        for hi in 0..<h { for c in 0..<d { dst[(ti * h + hi) * d + c] = src[(hi * t + ti) * d + c] } }
    }
    return out
}
