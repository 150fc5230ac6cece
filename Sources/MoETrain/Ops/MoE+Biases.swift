import Foundation
import MoE
import MoECore

// Dimension legend: R routed rows, I expert intermediate size, d hidden.

/// GPT-OSS's experts in the MoE op: biases on the three projections and the clamped SwiGLU
/// (transformers' `GptOssExperts`): g = x G^T + b_g, u = x U^T + b_u, a = min(g, L),
/// c = clamp(u, -L, L), act = (c + 1) a sigmoid(alpha a), E = act D^T + b_d. The op keeps the
/// routing weight w in the hidden activation, h_w = w act, so E' = w E = h_w D^T + w b_d.
struct ExpertBiasValues {
    /// Per expert: the gate, up and down biases (zeros where the layer has none).
    let gate: [[Float]], up: [[Float]], down: [[Float]]?

    init(_ p: MoEParameters) {
        let e = p.gate.count, inner = p.gate.first?.shape[0] ?? 0
        let zeros = [[Float]](repeating: [Float](repeating: 0, count: inner), count: e)
        gate = p.gateBias?.map { $0.value.toFloats() } ?? zeros
        up = p.upBias?.map { $0.value.toFloats() } ?? zeros
        down = p.downBias?.map { $0.value.toFloats() }
    }

    /// Adds the row's gate and up biases in place (backward reads the biased values) and writes
    /// h_w = w act(g, u).
    func activate(row: Int, expert: Int, gate g: UnsafeMutablePointer<Float>, up u: UnsafeMutablePointer<Float>,
                  weight w: Float, into h: UnsafeMutablePointer<Float>, inner: Int, activation: ExpertActivation) {
        let bg = gate[expert], bu = up[expert]
        for j in 0..<inner {
            g[j] += bg[j]
            u[j] += bu[j]
            switch activation {
            case .swiglu:
                h[j] = w * g[j] / (1 + Foundation.exp(-g[j])) * u[j]
            case let .clampedSwiGLU(alpha, limit):
                let a = min(g[j], limit), c = min(max(u[j], -limit), limit)
                h[j] = w * (c + 1) * a / (1 + Foundation.exp(-alpha * a))
            }
        }
    }

    /// From dh = dy D (unweighted) on one row: writes dgate and dup (through the weight and the
    /// clamps: torch's clamp passes the gradient where the input lies within its bounds) and
    /// returns the routing weight's gradient dh . act.
    func activationBackward(dh: UnsafePointer<Float>, gate g: UnsafePointer<Float>, up u: UnsafePointer<Float>, weight w: Float,
                            dgate: UnsafeMutablePointer<Float>, dup: UnsafeMutablePointer<Float>, inner: Int,
                            activation: ExpertActivation) -> Float {
        var dw: Float = 0
        for j in 0..<inner {
            switch activation {
            case .swiglu:
                let s = 1 / (1 + Foundation.exp(-g[j])), silu = g[j] * s
                dw += dh[j] * silu * u[j]
                dup[j] = w * dh[j] * silu
                dgate[j] = w * dh[j] * u[j] * s * (1 + g[j] * (1 - s))
            case let .clampedSwiGLU(alpha, limit):
                let a = min(g[j], limit), c = min(max(u[j], -limit), limit)
                let s = 1 / (1 + Foundation.exp(-alpha * a)), glu = a * s
                dw += dh[j] * (c + 1) * glu
                let dact = w * dh[j]
                dup[j] = u[j] >= -limit && u[j] <= limit ? dact * glu : 0
                dgate[j] = g[j] <= limit ? dact * (c + 1) * (s + a * alpha * s * (1 - s)) : 0
            }
        }
        return dw
    }
}

extension Tape {
    /// The expert each grouped row belongs to.
    static func rowExperts(_ spans: [Range<Int>], rows r: Int) -> [Int] {
        var out = [Int](repeating: 0, count: r)
        for (e, s) in spans.enumerated() { for row in s { out[row] = e } }
        return out
    }

    /// The biases' gradients: per expert, the column sums of dgate and dup over its rows, and
    /// of w dy over its rows' tokens for the down bias.
    static func biasGradients(_ p: MoEParameters, biases: ExpertBiasValues, spans: [Range<Int>], used: [Int], dg: Tensor, du: Tensor,
                              dy: Tensor, rowToken: [Int], rowWeight: [Float]) {
        let inner = dg.shape[1], d = dy.shape[1]
        let dgp = dg.floats, dup = du.floats, dyp = dy.floats
        for i in used {
            if let gb = p.gateBias?[i], gb.requiresGrad {
                var sums = [Float](repeating: 0, count: inner)
                for row in spans[i] { for j in 0..<inner { sums[j] += dgp[row * inner + j] } }
                gb.accumulate(Tensor(shape: [inner], values: sums))
            }
            if let ub = p.upBias?[i], ub.requiresGrad {
                var sums = [Float](repeating: 0, count: inner)
                for row in spans[i] { for j in 0..<inner { sums[j] += dup[row * inner + j] } }
                ub.accumulate(Tensor(shape: [inner], values: sums))
            }
            if let db = p.downBias?[i], db.requiresGrad {
                var sums = [Float](repeating: 0, count: d)
                for row in spans[i] {
                    let tok = rowToken[row], w = rowWeight[row]
                    for j in 0..<d { sums[j] += w * dyp[tok * d + j] }
                }
                db.accumulate(Tensor(shape: [d], values: sums))
            }
        }
    }
}
