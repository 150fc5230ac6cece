import Foundation

/// Rotary position embedding (RoPE, Su et al. 2021) for q or k laid out [T, H, D].
///
/// Two layouts are in use: `rotateHalf` pairs dimension i with i + R/2 (Llama, Mixtral, Qwen,
/// OLMoE: transformers' `rotate_half`); `interleaved` pairs 2i with 2i + 1 (GPT-J, DeepSeek's
/// MLA rope part). Only the first `rotaryDim` of each head's `headDim` values rotate (partial
/// rotary); the rest pass through. Angles are `position * invFreq[i]` in f32, as transformers
/// computes them, and the result is scaled by `attentionScaling` (1 unless a scaled rope, such
/// as YaRN, says otherwise).
public struct RotaryEmbedding: Sendable {
    /// Which dimensions form a rotating pair.
    public enum Layout: Sendable { case rotateHalf, interleaved }

    public let headDim: Int
    public let rotaryDim: Int
    public let layout: Layout
    /// One inverse frequency per pair: rotaryDim / 2 values.
    public let invFreq: [Float]
    /// Multiplies cos and sin (YaRN's mscale); 1 for plain RoPE.
    public let attentionScaling: Float

    /// Plain RoPE: `invFreq[i] = 1 / base^(2i / rotaryDim)`.
    public init(headDim: Int, rotaryDim: Int? = nil, base: Double, layout: Layout = .rotateHalf) {
        let r = rotaryDim ?? headDim
        let inv = (0..<(r / 2)).map { i in Float(1.0 / Foundation.pow(base, Double(2 * i) / Double(r))) }
        self.init(headDim: headDim, invFreq: inv, layout: layout)
    }

    /// RoPE with given inverse frequencies (from a scaled-rope recipe); rotaryDim = 2 * count.
    public init(headDim: Int, invFreq: [Float], layout: Layout = .rotateHalf, attentionScaling: Float = 1) {
        precondition(invFreq.count * 2 <= headDim, "rotary dim \(invFreq.count * 2) exceeds head dim \(headDim)")
        self.headDim = headDim
        self.rotaryDim = invFreq.count * 2
        self.layout = layout
        self.invFreq = invFreq
        self.attentionScaling = attentionScaling
    }

    /// Rotates x [T, H, headDim] (f32) in place; `positions[t]` is token t's position.
    public func apply(_ x: Tensor, positions: [Int], pool: ThreadPool = .shared) {
        apply(x, positions: positions, into: x, pool: pool)
    }

    /// Writes x [T, H, headDim] (f32) rotated into `out` (the same shape; it may be x itself).
    ///
    /// cos and sin are computed once per position in the call's range (a batch of sequences
    /// repeats 0..<len), each exactly as for a single token, so the result is the same.
    public func apply(_ x: Tensor, positions: [Int], into out: Tensor, pool: ThreadPool = .shared) {
        precondition(x.rank == 3 && x.shape[2] == headDim && positions.count == x.shape[0] && out.shape == x.shape,
                     "RoPE: x \(x.shape), out \(out.shape), \(positions.count) positions, head dim \(headDim)")
        let (t, h) = (x.shape[0], x.shape[1])
        guard t > 0, let src = x.floats.baseAddress, let dst = out.mutableFloats.baseAddress else { return }
        let half = rotaryDim / 2
        let (angles, slot) = angleTable(positions)
        angles.withUnsafeBufferPointer { angles in
            Kernels.parallelRows(t, cost: h * headDim * 2, pool: pool) { ti in
                let cosv = angles.baseAddress.map { $0 + slot(ti) * 2 * half }, sinv = cosv.map { $0 + half }
                for hi in 0..<h {
                    let v = src + (ti * h + hi) * headDim, o = dst + (ti * h + hi) * headDim
                    if rotaryDim < headDim && o != v {  // the part that does not rotate
                        (o + rotaryDim).update(from: v + rotaryDim, count: headDim - rotaryDim)
                    }
                    guard let cosv, let sinv else { continue }
                    for i in 0..<half {
                        let (a, b) = layout == .rotateHalf ? (i, i + half) : (2 * i, 2 * i + 1)
                        let x0 = v[a], x1 = v[b]
                        o[a] = x0 * cosv[i] - x1 * sinv[i]
                        o[b] = x1 * cosv[i] + x0 * sinv[i]
                    }
                }
            }
        }
    }

    /// cos and sin of `position * invFreq[i]` (times the scaling), in f32 as transformers
    /// computes them: per position from the lowest to the highest when that range is no longer
    /// than the call, else per token; each row is `rotaryDim / 2` cosines then as many sines.
    /// Also returns which row token t uses.
    private func angleTable(_ positions: [Int]) -> (values: [Float], slot: (Int) -> Int) {
        let half = rotaryDim / 2
        let lo = positions.min() ?? 0, hi = positions.max() ?? 0
        let byRange = hi - lo < positions.count
        let rows = byRange ? (lo...hi).map { $0 } : positions
        var values = [Float](repeating: 0, count: rows.count * 2 * half)
        for (r, p) in rows.enumerated() {
            let pos = Float(p)
            for j in 0..<half {
                let angle = pos * invFreq[j]
                values[r * 2 * half + j] = Foundation.cos(angle) * attentionScaling
                values[r * 2 * half + half + j] = Foundation.sin(angle) * attentionScaling
            }
        }
        return (values, byRange ? { positions[$0] - lo } : { $0 })
    }
}
