import Foundation
import MoECore
import _MoEKernels

// Dimension legend: T new tokens, L cached positions (including the new ones), H query heads,
// G key/value heads (GQA: H / G query heads share one), D head dim, d hidden size.

/// Rows of several sequences run together: sequence i's rows are `ranges[i]` of the batch and
/// continue `caches[i]` (positions start at its length).
struct Segments {
    let ranges: [Range<Int>]
    /// For each row of the batch: its sequence.
    let sequence: [Int]

    init(_ ranges: [Range<Int>]) {
        self.ranges = ranges
        var sequence: [Int] = []
        for (i, r) in ranges.enumerated() { sequence += Array(repeating: i, count: r.count) }
        self.sequence = sequence
    }

    /// Each row's position in its own sequence.
    func positions(_ caches: [KVCache]) -> [Int] {
        var out: [Int] = []
        out.reserveCapacity(sequence.count)
        for (i, r) in ranges.enumerated() { out += (0..<r.count).map { caches[i].length + $0 } }
        return out
    }

    /// `rope`'s cos and sin at the rows' positions (`positions(caches)`), made by the first layer
    /// of the pass that asks and reused by the others while the caches' lengths stay as they are
    /// (a forward pass advances them after its last layer). Each layer's q and k had computed
    /// them afresh: two of a head's cosines and sines a value, about 2 us a layer at decode.
    func angles(_ rope: RotaryEmbedding, caches: [KVCache]) -> RotaryAngles {
        if let memo = memo.value, memo.rope.invFreq == rope.invFreq, memo.rope.attentionScaling == rope.attentionScaling {
            return memo.angles
        }
        let angles = rope.angles(for: positions(caches))
        memo.value = (rope, angles)
        return angles
    }

    /// The last `angles` made, for this pass (read and written by the thread running the pass).
    private let memo = AnglesMemo()
    private final class AnglesMemo: @unchecked Sendable {
        var value: (rope: RotaryEmbedding, angles: RotaryAngles)?
    }
}

/// A layer's attention block: causal self-attention over the KV cache.
protocol AttentionBlock: Sendable {
    /// x [T, d] normed rows of the sequences `segments` names, each continuing its own cache;
    /// returns [T, d].
    func forward(_ x: Tensor, layer: Int, segments: Segments, caches: inout [KVCache], pool: ThreadPool) -> Tensor
    /// Bytes of weights one token reads.
    var weightBytes: Int { get }
    /// Weights one token multiplies by (for FLOP counts).
    var weightCount: Int { get }
    /// The weight matrices its products read (not norms or biases).
    var matrices: [Tensor] { get }
}

/// Softmax(q k^T * scale) v over the cached positions of each row's own sequence, causal: query
/// row t of a sequence with T new rows sees positions up to `cache.length + t` (the new rows are
/// already stored, the length not yet advanced), and with a sliding
/// `window` only the last `window` of those (itself included), as transformers' sliding-window
/// mask. With `sinks` ([H] logits, GPT-OSS), each head's softmax also spreads mass over its sink
/// logit, which then contributes no value. q is [T, H, keyDim]; H query heads share each of the
/// G cached key/value heads (GQA). Returns [T, H * valueDim].
/// A sequence with at least `BlockedAttention.minRows` new rows (a prompt), with no window or
/// sinks, goes in blocks of query rows through two matmul leaves per head (`BlockedAttention`;
/// `blocked: false` forbids it, for tests). Other rows take one task per (token, key/value head):
/// the group's query heads (up to 4 at a time) score every visible position with the matvec
/// leaf, softmax, then sum the values with a C leaf.
func causalAttention(q: Tensor, heads h: Int, kvHeads g: Int, keyDim: Int, valueDim: Int, scale: Float,
                     layer: Int, segments: Segments, caches: [KVCache], window: Int? = nil, sinks: [Float]? = nil,
                     blocked: Bool = true, pool: ThreadPool) -> Tensor {
    let t = q.shape[0], group = h / g
    let out = Tensor(zeros: [t, h * valueDim])
    guard let qb = q.floats.baseAddress, let ob = out.mutableFloats.baseAddress else { return out }
    // Runs of rows: blocks of a long sequence's rows, or single rows.
    var runs: [(r0: Int, r1: Int, seq: Int, block: Bool)] = []
    let byBlocks = blocked && window == nil && sinks == nil && moek_gemm_direct_supported() != 0
    for (seq, range) in segments.ranges.enumerated() {
        if byBlocks && range.count >= BlockedAttention.minRows {
            for r0 in stride(from: range.lowerBound, to: range.upperBound, by: BlockedAttention.rows) {
                runs.append((r0, min(range.upperBound, r0 + BlockedAttention.rows), seq, true))
            }
        } else {
            for r in range { runs.append((r, r + 1, seq, false)) }
        }
    }
    runs.sort { $0.r1 - $0.r0 > $1.r1 - $1.r0 }  // blocks first: they are the longest tasks
    pool.parallelFor(runs.count * g) { task in
        let run = runs[task / g], gi = task % g
        if run.block {
            BlockedAttention.run(r0: run.r0, r1: run.r1, start: segments.ranges[run.seq].lowerBound, kv: gi, group: group,
                                 heads: h, keyDim: keyDim, valueDim: valueDim, scale: scale, layer: layer,
                                 cache: caches[run.seq], q: qb, out: ob)
            return
        }
        let ti = run.r0
        let seq = run.seq
        let cache = caches[seq]
        let end = cache.length + (ti - segments.ranges[seq].lowerBound) + 1
        let first = window.map { max(0, end - $0) } ?? 0
        let visible = end - first
        let size = cache.dtype.byteSize, dt = Int32(cache.dtype.rawValue)
        let keys = cache.rows(layer: layer, head: gi, values: false) + first * keyDim * size
        let values = cache.rows(layer: layer, head: gi, values: true) + first * valueDim * size
        // A decode step's first rows into L2 at once: the weights streamed since the last token
        // evicted them, and their short runs (a head's few KB) otherwise come in at the memory's
        // latency, not its bandwidth (OLMoE-shaped decode: the layer's attention 20 -> 17 us).
        // The leaves fetch the rest 4 KB ahead as they go; more than 8 KB here (until the
        // twenty-sixth session, up to 64 KB each) left the thread waiting on its own fetches at
        // long contexts (4096 tokens, alternating pairs at like bandwidth: windowed fractions
        // 0.72-0.77 -> 0.75-0.79 on the Qwen3-MoE shape, 0.82-0.88 -> 0.91 on OLMoE's; level at
        // 256). A prompt's rows read the same keys one after another, which stay in cache.
        if segments.ranges[seq].count == 1 {
            Kernels.prefetch(keys, bytes: min(visible * keyDim * size, 8 << 10))
            Kernels.prefetch(values, bytes: min(visible * valueDim * size, 8 << 10))
        }
        // Scratch for up to 4 heads' scores, on the stack where it fits (no allocation a head and token).
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 4 * visible) { sp in
            guard let s = sp.baseAddress else { return }
            var h0 = 0
            while h0 < group {
                let nx = min(4, group - h0)
                let head = gi * group + h0
                moek_gemv_rows(keys, dt, keyDim, qb + (ti * h + head) * keyDim, keyDim, Int32(nx),
                               s, visible, 0, visible, keyDim)
                for m in 0..<nx { softmaxScores(s + m * visible, count: visible, scale: scale, sink: sinks?[head + m]) }
                moek_weighted_rows(s, visible, Int32(nx), values, dt, valueDim, visible, valueDim,
                                   ob + (ti * h + head) * valueDim, valueDim)
                h0 += nx
            }
        }
    }
    return out
}

/// Causal self-attention with grouped-query heads, RoPE (whole or partial heads) and the
/// variants of the supported architectures: q/k/v and output biases (Qwen2, GLM, GPT-OSS),
/// QK-norm per head (Qwen3, GLM) or over the whole projection (OLMoE), clamping of q, k, v
/// (OLMoE's `clip_qkv`), a sliding window (Mistral, GPT-OSS) and attention sinks (GPT-OSS).
struct Attention: AttentionBlock {
    let wq: Tensor, wk: Tensor, wv: Tensor, wo: Tensor           // [H*D, d], [G*D, d], [G*D, d], [d, H*D]
    let bq: Tensor?, bk: Tensor?, bv: Tensor?, bo: Tensor?
    let qNorm: Tensor?, kNorm: Tensor?                           // [D] (per head) or [H*D] / [G*D] (full)
    /// This layer's sliding window, or nil for full attention.
    let window: Int?
    /// GPT-OSS's per-head sink logits [H], or nil.
    let sinks: [Float]?
    let spec: DecoderSpec
    let rope: RotaryEmbedding
    /// wq, wk, wv, and wo, as a decoded token's products read them (`Kernels.tokenProducts`).
    let qkvBytes: [MatrixBytes], outputBytes: MatrixBytes

    /// x [T, d] normed rows of `segments`' sequences. Returns [T, d].
    func forward(_ x: Tensor, layer: Int, segments: Segments, caches: inout [KVCache], pool: ThreadPool) -> Tensor {
        let t = x.shape[0], h = spec.heads, g = spec.kvHeads, dh = spec.headDim
        // linearBatch overwrites its outputs: no zeroing pass (a decode step's fresh tensors are
        // cold, and zeroing them cost each layer a few microseconds of cache misses).
        let q = Tensor(uninitialized: [t, h * dh]), k = Tensor(uninitialized: [t, g * dh]), v = Tensor(uninitialized: [t, g * dh])
        // One decoded token's products from the weights' bytes (the same bits).
        let token = t == 1 && qkvBytes.allSatisfy(Kernels.takesTokenProducts) && Kernels.takesTokenProducts(outputBytes)
        if t == 1 && segments.ranges.count == 1 { caches[0].prefetchNextRow(layer: layer) }  // lands while the products run
        if token {
            withExtendedLifetime((x, q, k, v)) {
                Kernels.tokenProducts(x: x.floats.baseAddress!, qkvBytes,
                                      into: [q, k, v].map { $0.mutableFloats.baseAddress! }, pool: pool)
            }
        } else {
            Kernels.linearBatch([LinearJob(input: x, weight: wq, output: q), LinearJob(input: x, weight: wk, output: k),
                                 LinearJob(input: x, weight: wv, output: v)], pool: pool)
        }
        if let bq { addRowBias(q, bq) }
        if let bk { addRowBias(k, bk) }
        if let bv { addRowBias(v, bv) }
        switch spec.qkNorm {
        case .none: break
        case .full:
            if let qNorm, let kNorm {
                Kernels.rmsNorm(q, weight: qNorm, eps: spec.rmsNormEps, into: q, pool: pool)
                Kernels.rmsNorm(k, weight: kNorm, eps: spec.rmsNormEps, into: k, pool: pool)
            }
        case .perHead:
            if let qNorm, let kNorm {
                let qh = q.reshaped([t * h, dh]), kh = k.reshaped([t * g, dh])
                Kernels.rmsNorm(qh, weight: qNorm, eps: spec.rmsNormEps, into: qh, pool: pool)
                Kernels.rmsNorm(kh, weight: kNorm, eps: spec.rmsNormEps, into: kh, pool: pool)
            }
        }
        if let c = spec.clipQKV {
            for tensor in [q, k, v] {
                let p = tensor.mutableFloats
                for i in 0..<p.count { p[i] = min(c, max(-c, p[i])) }
            }
        }
        let angles = segments.angles(rope, caches: caches)
        let qh = q.reshaped([t, h, dh]), kh = k.reshaped([t, g, dh])
        rope.apply(qh, angles: angles, into: qh, pool: pool)
        rope.apply(kh, angles: angles, into: kh, pool: pool)
        let keys = k.reshaped([t, g, dh]), values = v.reshaped([t, g, dh])
        for (i, r) in segments.ranges.enumerated() {
            caches[i].store(layer: layer, keys: keys.rows(r), values: values.rows(r))
        }

        let out = causalAttention(q: q, heads: h, kvHeads: g, keyDim: dh, valueDim: dh,
                                  scale: Float(1 / Double(dh).squareRoot()), layer: layer, segments: segments, caches: caches,
                                  window: window, sinks: sinks, pool: pool)
        let y: Tensor
        if token {
            y = Tensor(uninitialized: [1, outputBytes.rows])
            withExtendedLifetime((out, y)) {
                Kernels.tokenProducts(x: out.floats.baseAddress!, [outputBytes], into: [y.mutableFloats.baseAddress!], pool: pool)
            }
        } else {
            y = Kernels.matmul(out, wo, pool: pool)
        }
        if let bo { addRowBias(y, bo) }
        return y
    }

    var weightBytes: Int { [wq, wk, wv, wo].reduce(0) { $0 + $1.byteCount } }
    var weightCount: Int { [wq, wk, wv, wo].reduce(0) { $0 + $1.count } }
    var matrices: [Tensor] { [wq, wk, wv, wo] }
}

/// Adds bias [N] to every row of x [T, N].
func addRowBias(_ x: Tensor, _ bias: Tensor) {
    let b = bias.toFloats(), p = x.mutableFloats, n = b.count
    for i in 0..<p.count { p[i] += b[i % n] }
}
