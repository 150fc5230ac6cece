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
        precondition(x.rank == 3 && x.shape[2] == headDim && positions.count == x.shape[0],
                     "RoPE: x \(x.shape), \(positions.count) positions, head dim \(headDim)")
        let (t, h) = (x.shape[0], x.shape[1])
        guard let p = x.mutableFloats.baseAddress else { return }
        let half = rotaryDim / 2
        Kernels.parallelChunks(t, grain: max(1, Kernels.parallelThreshold / max(1, h * headDim)), pool: pool) { range in
            var cosv = [Float](repeating: 0, count: half), sinv = cosv
            for ti in range {
                let pos = Float(positions[ti])
                for i in 0..<half {
                    let angle = pos * invFreq[i]
                    cosv[i] = Foundation.cos(angle) * attentionScaling
                    sinv[i] = Foundation.sin(angle) * attentionScaling
                }
                for hi in 0..<h {
                    let v = p + (ti * h + hi) * headDim
                    for i in 0..<half {
                        let (a, b) = layout == .rotateHalf ? (i, i + half) : (2 * i, 2 * i + 1)
                        let x0 = v[a], x1 = v[b]
                        v[a] = x0 * cosv[i] - x1 * sinv[i]
                        v[b] = x1 * cosv[i] + x0 * sinv[i]
                    }
                }
            }
        }
    }
}
