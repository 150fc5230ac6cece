import Foundation
import _MoEKernels

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
    public func apply(_ x: Tensor, positions: [Int], into out: Tensor, pool: ThreadPool = .shared) {
        apply(x, angles: angles(for: positions), into: out, pool: pool)
    }

    /// cos and sin for the tokens at `positions`, to reuse across calls over the same positions
    /// (every layer's q and k, and their backward).
    ///
    /// They are computed once per position in the range (a batch of sequences repeats
    /// 0..<len), each exactly as for a single token, so the result is the same: in f32 as
    /// transformers computes them, per position from the lowest to the highest when that range
    /// is no longer than the list, else per token.
    public func angles(for positions: [Int]) -> RotaryAngles {
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
        return RotaryAngles(values: values, row: byRange ? positions.map { $0 - lo } : Array(positions.indices), half: half)
    }

    /// Writes x [T, H, headDim] (f32), rotated by `angles` (from `angles(for:)` over T
    /// positions), into `out` (the same shape; it may be x itself). With `inverse`, rotates by
    /// the negated angles: cos and sin being even and odd, exactly RoPE at the negated positions.
    public func apply(_ x: Tensor, angles: RotaryAngles, inverse: Bool = false, into out: Tensor, pool: ThreadPool = .shared) {
        precondition(x.rank == 3 && x.shape[2] == headDim && angles.row.count == x.shape[0] && out.shape == x.shape
                     && angles.half == rotaryDim / 2,
                     "RoPE: x \(x.shape), out \(out.shape), angles for \(angles.row.count) tokens, head dim \(headDim)")
        let (t, h) = (x.shape[0], x.shape[1])
        guard t > 0, let src = x.floats.baseAddress, let dst = out.mutableFloats.baseAddress else { return }
        let half = rotaryDim / 2, (rd, hd) = (rotaryDim, headDim), rotateHalf: Int32 = layout == .rotateHalf ? 1 : 0
        let sign: Float = inverse ? -1 : 1
        angles.values.withUnsafeBufferPointer { table in
            angles.row.withUnsafeBufferPointer { row in
                Kernels.parallelRows(t, cost: h * headDim * 2, pool: pool) { ti in
                    let v = src + ti * h * hd, o = dst + ti * h * hd
                    guard let base = table.baseAddress else {  // nothing rotates: copy
                        if o != v { o.update(from: v, count: h * hd) }
                        return
                    }
                    let cosv = base + row[ti] * 2 * half
                    moek_rope_rows(v, o, h, hd, rd, cosv, cosv + half, sign, rotateHalf)
                }
            }
        }
    }
}

/// RoPE's cos and sin for a list of positions (`RotaryEmbedding.angles(for:)`): a table of
/// `rotaryDim / 2` cosines then as many sines per distinct position, and each token's row.
public struct RotaryAngles: Sendable {
    let values: [Float]
    let row: [Int]
    let half: Int
    /// Tokens covered.
    public var count: Int { row.count }
}
