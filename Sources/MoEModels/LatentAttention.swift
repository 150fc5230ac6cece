import Foundation
import MoECore

// Dimension legend: T tokens, H heads, d hidden, Rq q LoRA rank, Rkv kv LoRA rank,
// Dn nope (no-position) dims, Dr rope dims, Dv value dims; a key is Dn + Dr wide.

/// Multi-head latent attention (DeepSeek-V2/V3; transformers' `DeepseekV3Attention`).
///
/// q = W_qb · RMSNorm(W_qa x) (or W_q x without a q LoRA rank), split per head into a nope part
/// and a rope part. The keys and values come from a shared latent: [c ; k_rot] = W_kva x,
/// c = RMSNorm(c), [k_nope ; v] = W_kvb c per head, and k_rot (one rope part shared by all
/// heads). RoPE (interleaved pairs for DeepSeek) rotates the rope parts; each head's key is
/// [k_nope ; k_rot]. The expanded keys and values are cached per head.
struct LatentAttention: AttentionBlock {
    /// How queries are made.
    enum QueryProjection: Sendable {
        /// W_qb · RMSNorm(W_qa x): [Rq, d], norm [Rq], [H*(Dn+Dr), Rq].
        case lowRank(a: Tensor, norm: Tensor, b: Tensor)
        /// W_q x: [H*(Dn+Dr), d] (no q LoRA rank, as DeepSeek-V2-Lite).
        case full(Tensor)
    }
    let query: QueryProjection
    let kvA: Tensor, kvANorm: Tensor, kvB: Tensor, o: Tensor       // [Rkv+Dr, d], [Rkv], [H*(Dn+Dv), Rkv], [d, H*Dv]
    let heads: Int, nope: Int, ropeDim: Int, valueDim: Int, kvRank: Int
    let eps: Float
    /// Softmax scale: (Dn + Dr)^-1/2, times YaRN's mscale squared when the config says.
    let scale: Float
    let rope: RotaryEmbedding

    var queryWeights: [Tensor] {
        switch query {
        case let .lowRank(a, norm, b): return [a, norm, b]
        case let .full(w): return [w]
        }
    }
    var weightBytes: Int { (queryWeights + [kvA, kvANorm, kvB, o]).reduce(0) { $0 + $1.byteCount } }
    var weightCount: Int { (queryWeights + [kvA, kvB, o]).reduce(0) { $0 + ($1.rank == 2 ? $1.count : 0) } }
    var matrices: [Tensor] { (queryWeights + [kvA, kvB, o]).filter { $0.rank == 2 } }

    func forward(_ x: Tensor, layer: Int, segments: Segments, caches: inout [KVCache], pool: ThreadPool) -> Tensor {
        let t = x.shape[0], h = heads, kd = nope + ropeDim
        // Queries [T, H, Dn + Dr].
        let queries: Tensor
        switch query {
        case let .lowRank(a, norm, b):
            let low = Kernels.matmul(x, a, pool: pool)
            Kernels.rmsNorm(low, weight: norm, eps: eps, into: low, pool: pool)
            queries = Kernels.matmul(low, b, pool: pool)
        case let .full(w):
            queries = Kernels.matmul(x, w, pool: pool)
        }
        // The latent and the shared rope key.
        let compressed = Kernels.matmul(x, kvA, pool: pool)            // [T, Rkv + Dr]
        let latent = Tensor(zeros: [t, kvRank]), kRot = Tensor(zeros: [t, 1, ropeDim])
        let cp = compressed.floats, lp = latent.mutableFloats, rp = kRot.mutableFloats
        for ti in 0..<t {
            for j in 0..<kvRank { lp[ti * kvRank + j] = cp[ti * (kvRank + ropeDim) + j] }
            for j in 0..<ropeDim { rp[ti * ropeDim + j] = cp[ti * (kvRank + ropeDim) + kvRank + j] }
        }
        Kernels.rmsNorm(latent, weight: kvANorm, eps: eps, into: latent, pool: pool)
        let expanded = Kernels.matmul(latent, kvB, pool: pool)         // [T, H*(Dn+Dv)]
        // RoPE on the rope parts of q and on k_rot.
        let angles = segments.angles(rope, caches: caches)
        let qRot = Tensor(zeros: [t, h, ropeDim])
        let qp = queries.mutableFloats, qrp = qRot.mutableFloats
        for i in 0..<(t * h) { for j in 0..<ropeDim { qrp[i * ropeDim + j] = qp[i * kd + nope + j] } }
        rope.apply(qRot, angles: angles, into: qRot, pool: pool)
        rope.apply(kRot, angles: angles, into: kRot, pool: pool)
        for i in 0..<(t * h) { for j in 0..<ropeDim { qp[i * kd + nope + j] = qrp[i * ropeDim + j] } }
        // Per-head keys [T, H, Dn + Dr] and values [T, H, Dv].
        let keys = Tensor(zeros: [t, h, kd]), values = Tensor(zeros: [t, h, valueDim])
        let ep = expanded.floats, kp = keys.mutableFloats, vp = values.mutableFloats
        for ti in 0..<t {
            for hi in 0..<h {
                let src = (ti * h + hi) * (nope + valueDim), k0 = (ti * h + hi) * kd
                for j in 0..<nope { kp[k0 + j] = ep[src + j] }
                for j in 0..<ropeDim { kp[k0 + nope + j] = rp[ti * ropeDim + j] }
                for j in 0..<valueDim { vp[(ti * h + hi) * valueDim + j] = ep[src + nope + j] }
            }
        }
        for (i, r) in segments.ranges.enumerated() {
            caches[i].store(layer: layer, keys: keys.rows(r), values: values.rows(r))
        }
        let out = causalAttention(q: queries, heads: h, kvHeads: h, keyDim: kd, valueDim: valueDim, scale: scale,
                                  layer: layer, segments: segments, caches: caches, pool: pool)
        return Kernels.matmul(out, o, pool: pool)
    }
}
