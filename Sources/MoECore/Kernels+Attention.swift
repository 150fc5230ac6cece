import Foundation
import _MoEKernels

// Dimension legend: T tokens, H query heads, G key/value heads (H / G query heads share one),
// D head dim, n the length of a segment (a block's rows).

/// Causal softmax attention over token-major q [T, H, D] and k, v [T, G, D], in (head, segment)
/// blocks: token t sees the tokens of its segment up to itself. Each block's probabilities are
/// kept, [n, n], for the backward pass.
///
/// Every product reads q, k, v and writes the outputs in place through row strides (H D for
/// queries, G D for keys and values), so there are no head-major copies; each task is one
/// block's run of query rows, whose scores, softmax and weighted sum stay in L1/L2, and it only
/// touches the keys it can see.
public struct CausalAttention: Sendable {
    public let tokens: Int, heads: Int, kvHeads: Int, headDim: Int, segment: Int
    /// A sliding window: a query sees itself and the window - 1 positions before it (0: all).
    public let window: Int

    /// One (head, segment) block: its query head, its first token and length, and where its
    /// [n, n] probabilities start in the flat buffer.
    struct Block { let head: Int, start: Int, length: Int, offset: Int }
    let blocks: [Block]
    /// Floats in the probabilities buffer: the sum of n^2 over blocks.
    public let scoreCount: Int
    /// (block, first row, end row) runs of query rows, the costliest (last rows) first.
    private let rowTasks: [(block: Int, r0: Int, r1: Int)]

    /// Query rows per task: a block is split into runs of this many rows. A run computes only
    /// the keys it can see, so a 64-token segment in runs of 32 skips a quarter of the products;
    /// 32 measured better than 64 and 16 (attention's share of the step, default and OLMoE shapes).
    static let rowsPerTask = 32

    public init(tokens t: Int, heads h: Int, kvHeads g: Int, headDim d: Int, segment: Int, window: Int? = nil) {
        precondition(t >= 0 && h > 0 && g > 0 && h % g == 0 && d > 0 && segment > 0 && (window ?? 1) > 0,
                     "attention: tokens \(t), heads \(h), kv heads \(g), head dim \(d), segment \(segment), window \(window ?? 0)")
        (tokens, heads, kvHeads, headDim, self.segment) = (t, h, g, d, segment)
        self.window = window.map { $0 >= segment ? 0 : $0 } ?? 0
        var blocks: [Block] = [], offset = 0
        for head in 0..<h {
            for start in stride(from: 0, to: t, by: segment) {
                let n = min(t, start + segment) - start
                blocks.append(Block(head: head, start: start, length: n, offset: offset))
                offset += n * n
            }
        }
        self.blocks = blocks
        scoreCount = offset
        var tasks: [(block: Int, r0: Int, r1: Int)] = []
        for (i, b) in blocks.enumerated() {
            for r0 in stride(from: 0, to: b.length, by: Self.rowsPerTask) {
                tasks.append((i, r0, min(b.length, r0 + Self.rowsPerTask)))
            }
        }
        rowTasks = tasks.sorted { $0.r1 > $1.r1 }
    }

    /// The key/value head a query head reads.
    func kvHead(_ head: Int) -> Int { head / (heads / kvHeads) }

    /// Where a run of query rows reads and writes: its block's length n and probabilities
    /// offset, the offset of its first query row (in [T, H, D] tensors) and of its block's first
    /// key/value row (in [T, G, D] tensors).
    private func place(_ task: (block: Int, r0: Int, r1: Int)) -> (n: Int, scores: Int, query: Int, keys: Int) {
        let b = blocks[task.block], d = headDim
        return (b.length, b.offset, ((b.start + task.r0) * heads + b.head) * d, (b.start * kvHeads + kvHead(b.head)) * d)
    }

    private func check(_ x: Tensor, _ name: String, heads n: Int) {
        precondition(x.dtype == .f32 && x.count == tokens * n * headDim,
                     "attention: \(name) must be f32 [\(tokens), \(n), \(headDim)], got \(x.dtype) \(x.shape)")
    }

    /// out [T, H D] = softmax(scale Q K^T, causal in each segment) V; `probs` [scoreCount]
    /// receives each block's probabilities (zero above the diagonal).
    public func forward(q: Tensor, k: Tensor, v: Tensor, scale: Float, probs: Tensor, into out: Tensor,
                        sinks: [Float]? = nil, pool: ThreadPool = .shared) {
        precondition(sinks == nil || sinks?.count == heads, "attention: one sink per head")
        check(q, "q", heads: heads); check(k, "k", heads: kvHeads); check(v, "v", heads: kvHeads)
        check(out, "out", heads: heads)
        precondition(probs.dtype == .f32 && probs.count == scoreCount, "attention: probs needs \(scoreCount) floats")
        let (h, g, d) = (heads, kvHeads, headDim)
        let qp = q.floatBase, kp = k.floatBase, vp = v.floatBase
        let pp = probs.mutableFloatBase, op = out.mutableFloatBase
        pool.parallelFor(rowTasks.count) { i in
            let (r0, r1) = (rowTasks[i].r0, rowTasks[i].r1), at = place(rowTasks[i]), n = at.n
            // S = Q K^T over the keys these rows see, then the causal softmax in place.
            let p = pp + at.scores + r0 * n
            Kernels.product(qp + at.query, lda: h * d, m: r1 - r0, kp + at.keys, ldw: g * d, n: r1, k: d, into: p, ldo: n)
            if let sinks {
                Self.softmaxWithSink(pp + at.scores, n: n, r0: r0, r1: r1, scale: scale, window: window,
                                     sink: sinks[blocks[rowTasks[i].block].head])
            } else {
                moek_causal_softmax_rows(pp + at.scores, n, n, r0, r1, scale, window)
            }
            // O = P V.
            Kernels.product(p, lda: n, m: r1 - r0, vp + at.keys, ldw: g * d, transposeW: true, n: d, k: r1,
                            into: op + at.query, ldo: h * d)
        }
    }

    /// The gradients from dOut [T, H D]: dq [T, H, D], dk and dv [T, G, D], all overwritten.
    /// From the saved P: dP = dO V^T; dS = scale P (dP - rowsum(P dP)); dQ = dS K;
    /// dK = sum over the group's heads of dS^T Q; dV = sum of P^T dO. With sinks (the forward's),
    /// the formula is the same (a sink's dP is 0), and the sinks' gradients are returned:
    /// d sink_h = -sum over h's rows of P_sink rowsum(P dP), with P_sink = 1 - rowsum(P).
    @discardableResult
    public func backward(dOut: Tensor, q: Tensor, k: Tensor, v: Tensor, probs: Tensor, scale: Float,
                         dq: Tensor, dk: Tensor, dv: Tensor, sinks: Bool = false, pool: ThreadPool = .shared) -> [Float] {
        check(dOut, "dOut", heads: heads); check(q, "q", heads: heads); check(k, "k", heads: kvHeads)
        check(v, "v", heads: kvHeads); check(dq, "dq", heads: heads); check(dk, "dk", heads: kvHeads)
        check(dv, "dv", heads: kvHeads)
        precondition(probs.dtype == .f32 && probs.count == scoreCount, "attention: probs needs \(scoreCount) floats")
        let (h, g, d) = (heads, kvHeads, headDim)
        let dop = dOut.floatBase, qp = q.floatBase, kp = k.floatBase, vp = v.floatBase
        let pp = probs.floatBase
        let dqp = dq.mutableFloatBase, dkp = dk.mutableFloatBase, dvp = dv.mutableFloatBase
        var sinkParts = [Float](repeating: 0, count: sinks ? rowTasks.count : 0)  // per task, summed in order below
        sinkParts.withUnsafeMutableBufferPointer { sinkParts in
        withScratchFloats(scoreCount) { dsp in
            // Per run of query rows: dP, then dS in place, then dQ.
            pool.parallelFor(rowTasks.count) { i in
                let (r0, r1) = (rowTasks[i].r0, rowTasks[i].r1), at = place(rowTasks[i]), n = at.n
                let ds = dsp + at.scores + r0 * n
                Kernels.product(dop + at.query, lda: h * d, m: r1 - r0, vp + at.keys, ldw: g * d, n: r1, k: d, into: ds, ldo: n)
                if sinks {
                    var part: Float = 0
                    for row in r0..<r1 {
                        let p = pp + at.scores + row * n, dp = dsp + at.scores + row * n
                        var dot: Float = 0, mass: Float = 0
                        for j in 0...row { dot += p[j] * dp[j]; mass += p[j] }
                        part -= (1 - mass) * dot
                    }
                    sinkParts[i] = part
                }
                moek_causal_softmax_backward_rows(pp + at.scores, dsp + at.scores, n, n, r0, r1, scale, window)
                Kernels.product(ds, lda: n, m: r1 - r0, kp + at.keys, ldw: g * d, transposeW: true, n: d, k: r1,
                                into: dqp + at.query, ldo: h * d)
            }
            // Per run of key rows of one key/value head: the sums over the group's query heads,
            // from the first query row that sees these keys (earlier rows give zeros).
            let segments = (tokens + segment - 1) / segment, group = h / g
            var keyTasks: [(kvHead: Int, segment: Int, c0: Int, c1: Int)] = []
            for kvh in 0..<g {
                for s in 0..<segments {
                    let n = blocks[s].length
                    for c0 in stride(from: 0, to: n, by: Self.rowsPerTask) {
                        keyTasks.append((kvh, s, c0, min(n, c0 + Self.rowsPerTask)))
                    }
                }
            }
            keyTasks.sort { $0.c0 < $1.c0 }  // earlier keys are seen by more queries: costliest first
            pool.parallelFor(keyTasks.count) { i in
                let (kvh, s, c0, c1) = keyTasks[i]
                let start = s * segment, n = blocks[s].length
                let out = ((start + c0) * g + kvh) * d
                for r in 0..<group {
                    let head = kvh * group + r, b = blocks[head * segments + s]
                    let qRow = ((start + c0) * h + head) * d, at = b.offset + c0 * n + c0
                    Kernels.product(dsp + at, lda: n, transposeA: true, m: c1 - c0, qp + qRow, ldw: h * d,
                                    transposeW: true, n: d, k: n - c0, into: dkp + out, ldo: g * d, accumulate: r > 0)
                    Kernels.product(pp + at, lda: n, transposeA: true, m: c1 - c0, dop + qRow, ldw: h * d,
                                    transposeW: true, n: d, k: n - c0, into: dvp + out, ldo: g * d, accumulate: r > 0)
                }
            }
        }
        }
        var dSinks = [Float](repeating: 0, count: heads)
        for (i, part) in sinkParts.enumerated() { dSinks[blocks[rowTasks[i].block].head] += part }
        return dSinks
    }

    /// Rows [r0, r1) of a block's scores (n columns) become softmax over the row's visible
    /// columns (the window's) and one more logit, the head's sink, whose share is then dropped
    /// (GPT-OSS): P_j = exp(scale s_j - m) / (sum_k exp(scale s_k - m) + exp(sink - m)).
    static func softmaxWithSink(_ s: UnsafeMutablePointer<Float>, n: Int, r0: Int, r1: Int, scale: Float, window: Int, sink: Float) {
        for r in r0..<r1 {
            let row = s + r * n
            let first = window > 0 && r + 1 > window ? r + 1 - window : 0
            var m = sink
            for j in first...r { row[j] *= scale; m = max(m, row[j]) }
            var sum = Foundation.exp(sink - m)
            for j in first...r { row[j] = Foundation.exp(row[j] - m); sum += row[j] }
            let inv = 1 / sum
            for j in 0..<n { row[j] = j >= first && j <= r ? row[j] * inv : 0 }
        }
    }
}

extension Kernels {
    /// One f32 product on the calling thread, on strided memory: out[m, n] (+)= A[m, k] W^T,
    /// where A[i, j] is a[i * lda + j] (or a[j * lda + i] with `transposeA`) and W is [n, k]
    /// with row stride ldw (or stored [k, n] with `transposeW`). Overwrites unless `accumulate`.
    static func product(_ a: UnsafePointer<Float>, lda: Int, transposeA: Bool = false, m: Int,
                        _ w: UnsafePointer<Float>, ldw: Int, transposeW: Bool = false, n: Int, k: Int,
                        into out: UnsafeMutablePointer<Float>, ldo: Int, accumulate: Bool = false) {
        if m == 0 || n == 0 { return }
        let (ta, wt, acc) = (Int32(transposeA ? 1 : 0), Int32(transposeW ? 1 : 0), Int32(accumulate ? 1 : 0))
        if moek_gemm_direct_supported() != 0 {
            moek_gemm_direct(a, lda, ta, m, w, DType.f32.cValue, ldw, wt, acc, out, ldo, 0, n, k)
            return
        }
        withScratchFloats(moek_gemm_packed_size(m, k)) { ap in
            let panels = (m + moek_gemm_mr() - 1) / moek_gemm_mr()
            if transposeA { moek_gemm_pack_a_t(a, lda, m, k, 0, panels, ap) } else { moek_gemm_pack_a(a, lda, m, k, 0, panels, ap) }
            moek_gemm_packed_ex(ap, m, w, DType.f32.cValue, ldw, wt, acc, out, ldo, 0, n, k)
        }
    }
}

private extension Tensor {
    var floatBase: UnsafePointer<Float> { rawPointer.assumingMemoryBound(to: Float.self) }
    var mutableFloatBase: UnsafeMutablePointer<Float> { mutableRawPointer.assumingMemoryBound(to: Float.self) }
}
