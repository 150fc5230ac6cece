import Foundation
import MoECore

// Dimension legend: T tokens, H query heads, G key/value heads (H / G share one), D head dim.

extension Tape {
    /// RoPE on x [T, heads, D] at `positions`. Backward rotates dy back (the same RoPE at the
    /// negated positions: a rotation's inverse is its transpose).
    public func rope(_ x: Variable, positions: [Int], _ rope: RotaryEmbedding) -> Variable {
        let y = x.value.copied()
        rope.apply(y, positions: positions, pool: pool)
        let out = Variable(y)
        record { [pool] in
            guard let dy = out.grad else { return }
            let dx = dy.copied()
            rope.apply(dx, positions: positions.map { -$0 }, pool: pool)
            x.accumulate(dx)
        }
        return out
    }

    /// Causal softmax attention: q [T, H, D], k and v [T, G, D] -> [T, H * D]. Token t sees 0...t,
    /// within its segment when `segment` is set (T rows holding T / segment sequences).
    ///
    /// Backward from the saved probabilities P: dv_j += sum_t P_tj do_t;
    /// dS_tj = P_tj (do_t . v_j - sum_j' P_tj' do_t . v_j'); dq_t = scale sum_j dS_tj k_j;
    /// dk_j += scale sum_t dS_tj q_t.
    public func causalAttention(q: Variable, k: Variable, v: Variable, scale: Float, segment: Int? = nil) -> Variable {
        let (t, h, d) = (q.shape[0], q.shape[1], q.shape[2]), g = k.shape[1], group = h / g
        let seg = max(1, segment ?? t)
        let (qT, kT, vT) = (q.value, k.value, v.value)  // the closure keeps these alive
        let qs = qT.floats, ks = kT.floats, vs = vT.floats
        let segments = (t + seg - 1) / seg
        // Saved probabilities [H, T, segment]: row (hi, ti) holds P over its segment's keys.
        let probs = Tensor(zeros: [h, t, seg])
        let pp = probs.mutableFloats
        let y = Tensor(zeros: [t, h * d])
        let yp = y.mutableFloats
        // Sequences are independent: each task takes whole segments.
        Kernels.parallelRows(segments, cost: h * seg * seg * d, pool: pool) { sIdx in
            let start = sIdx * seg, end = min(t, start + seg)
            var row = [Float](repeating: 0, count: seg)
            for hi in 0..<h {
                let gi = hi / group
                for ti in start..<end {
                    var mx = -Float.infinity
                    for j in start...ti {
                        var s: Float = 0
                        for c in 0..<d { s += qs[(ti * h + hi) * d + c] * ks[(j * g + gi) * d + c] }
                        row[j - start] = s * scale
                        mx = max(mx, row[j - start])
                    }
                    var sum: Float = 0
                    for j in start...ti { row[j - start] = Foundation.exp(row[j - start] - mx); sum += row[j - start] }
                    for j in start...ti {
                        let p = row[j - start] / sum
                        pp[(hi * t + ti) * seg + j - start] = p
                        for c in 0..<d { yp[(ti * h + hi) * d + c] += p * vs[(j * g + gi) * d + c] }
                    }
                }
            }
        }
        let out = Variable(y)
        record { [pool] in
            guard let dyT = out.grad else { return }
            let dy = dyT.floats, qs = qT.floats, ks = kT.floats, vs = vT.floats, pp = probs.floats
            let dq = Tensor(zeros: q.shape), dk = Tensor(zeros: k.shape), dv = Tensor(zeros: v.shape)
            let dqp = dq.mutableFloats, dkp = dk.mutableFloats, dvp = dv.mutableFloats
            Kernels.parallelRows(segments, cost: 2 * h * seg * seg * d, pool: pool) { sIdx in
                let start = sIdx * seg, end = min(t, start + seg)
                var dp = [Float](repeating: 0, count: seg)
                for hi in 0..<h {
                    let gi = hi / group
                    for ti in start..<end {
                        var dot: Float = 0
                        for j in start...ti {
                            let p = pp[(hi * t + ti) * seg + j - start]
                            var s: Float = 0
                            for c in 0..<d {
                                let o = dy[(ti * h + hi) * d + c]
                                s += o * vs[(j * g + gi) * d + c]
                                dvp[(j * g + gi) * d + c] += p * o
                            }
                            dp[j - start] = s
                            dot += p * s
                        }
                        for j in start...ti {
                            let ds = pp[(hi * t + ti) * seg + j - start] * (dp[j - start] - dot) * scale
                            for c in 0..<d {
                                dqp[(ti * h + hi) * d + c] += ds * ks[(j * g + gi) * d + c]
                                dkp[(j * g + gi) * d + c] += ds * qs[(ti * h + hi) * d + c]
                            }
                        }
                    }
                }
            }
            q.accumulate(dq)
            k.accumulate(dk)
            v.accumulate(dv)
        }
        return out
    }
}
