import Foundation
import MoECore

// Dimension legend: T tokens, H query heads, G key/value heads (H / G share one), D head dim.

extension Tape {
    /// RoPE on x [T, heads, D] at `positions`. Backward rotates dy back (the same RoPE at the
    /// negated positions: a rotation's inverse is its transpose).
    public func rope(_ x: Variable, positions: [Int], _ rope: RotaryEmbedding) -> Variable {
        self.rope(x, angles: rope.angles(for: positions), rope)
    }

    /// `rope(_:positions:_:)` with the angles computed once by the caller, for every layer.
    public func rope(_ x: Variable, angles: RotaryAngles, _ rope: RotaryEmbedding) -> Variable {
        let y = Tensor(uninitialized: x.shape)
        rope.apply(x.value, angles: angles, into: y, pool: pool)
        let out = Variable(y)
        record { [pool] in
            guard let dy = out.grad else { return }
            // `out` is done with dy: rotate it back in place and hand it on.
            rope.apply(dy, angles: angles, inverse: true, into: dy, pool: pool)
            x.accumulate(owned: dy, pool: pool)
        }
        return out
    }

    /// Causal softmax attention: q [T, H, D], k and v [T, G, D] -> [T, H * D]. Token t sees 0...t,
    /// within its segment when `segment` is set (T rows holding T / segment sequences), and only
    /// the last `window` of those (itself included) with a sliding window. With `sinks` ([H],
    /// GPT-OSS), each head's softmax also spreads mass over its sink logit, which carries no value.
    ///
    /// `CausalAttention` does the work block by block on the token-major tensors, keeping the
    /// probabilities P: S = scale Q K^T, P = causal softmax(S), O = P V. Backward from the saved
    /// P: dV = P^T dO; dP = dO V^T; dS = scale P (dP - rowsum(P dP)); dQ = dS K; dK = dS^T Q.
    public func causalAttention(q: Variable, k: Variable, v: Variable, scale: Float, segment: Int? = nil,
                                window: Int? = nil, sinks: Variable? = nil) -> Variable {
        let (t, h, d) = (q.shape[0], q.shape[1], q.shape[2]), g = k.shape[1]
        let attention = CausalAttention(tokens: t, heads: h, kvHeads: g, headDim: d, segment: max(1, segment ?? t), window: window)
        let probs = Tensor(uninitialized: [attention.scoreCount])  // every block's rows are written
        let y = Tensor(uninitialized: [t, h * d])
        attention.forward(q: q.value, k: k.value, v: v.value, scale: scale, probs: probs, into: y, sinks: sinks?.value.toFloats(),
                          pool: pool)
        let out = Variable(y)
        record { [pool] in
            guard let dy = out.grad else { return }
            let dq = Tensor(uninitialized: q.shape), dk = Tensor(uninitialized: k.shape), dv = Tensor(uninitialized: v.shape)
            let dSinks = attention.backward(dOut: dy, q: q.value, k: k.value, v: v.value, probs: probs, scale: scale,
                                            dq: dq, dk: dk, dv: dv, sinks: sinks != nil, pool: pool)
            if let sinks { sinks.accumulate(Tensor(shape: sinks.shape, values: dSinks)) }
            q.accumulate(owned: dq, pool: pool)
            k.accumulate(owned: dk, pool: pool)
            v.accumulate(owned: dv, pool: pool)
        }
        return out
    }
}
