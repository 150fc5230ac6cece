import Foundation
import _MoEKernels

extension Kernels {
    /// How GELU is computed.
    public enum GELUApproximation: Sendable {
        /// `0.5 x (1 + erf(x / sqrt 2))` (PyTorch's default, `gelu`).
        case none
        /// `0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))` (`gelu_pytorch_tanh`, `gelu_new`).
        case tanh
    }

    /// `x * sigmoid(x)` of one value.
    @inline(__always)
    public static func silu(_ x: Float) -> Float { x / (1 + Foundation.exp(-x)) }

    /// GELU of one value.
    @inline(__always)
    public static func gelu(_ x: Float, approximation: GELUApproximation = .none) -> Float {
        switch approximation {
        case .none:
            return 0.5 * x * (1 + Foundation.erf(x * 0.70710678118654752))
        case .tanh:
            return 0.5 * x * (1 + Foundation.tanh(0.79788456080286536 * (x + 0.044715 * x * x * x)))
        }
    }

    /// SiLU in place over an f32 tensor (the C leaf, with a vectorised exp).
    public static func silu(_ x: Tensor, pool: ThreadPool = .shared) {
        let b = x.mutableFloats
        guard let p = b.baseAddress else { return }
        parallelChunks(b.count, grain: parallelThreshold, pool: pool) { r in moek_silu_mul(p + r.lowerBound, nil, r.count) }
    }

    /// GELU in place over an f32 tensor.
    public static func gelu(_ x: Tensor, approximation: GELUApproximation = .none, pool: ThreadPool = .shared) {
        elementwise(x, pool: pool) { gelu($0, approximation: approximation) }
    }

    /// SwiGLU combine in place: `gate = silu(gate) * up`, both f32 of the same shape.
    public static func siluMul(gate: Tensor, up: Tensor, pool: ThreadPool = .shared) {
        siluMul(gate: gate, up: up, into: gate, pool: pool)
    }

    /// `out = silu(gate) * up`, leaving `gate` as it is (training keeps it for backward) unless
    /// `out` is `gate` itself.
    public static func siluMul(gate: Tensor, up: Tensor, into out: Tensor, pool: ThreadPool = .shared) {
        precondition(gate.shape == up.shape && out.shape == gate.shape, "siluMul: gate \(gate.shape), up \(up.shape), out \(out.shape)")
        let g = gate.floats, u = up.floats, o = out.mutableFloats
        guard let gp = g.baseAddress, let upp = u.baseAddress, let op = o.baseAddress else { return }
        parallelChunks(g.count, grain: parallelThreshold, pool: pool) { r in
            moek_silu_mul_out(op + r.lowerBound, gp + r.lowerBound, upp + r.lowerBound, r.count)
        }
    }

    /// The SwiGLU combine's backward: for `y = silu(gate) * up` and the gradient `dy`, returns
    /// d gate = dy up s (1 + gate (1 - s)) and d up = dy silu(gate), with s = sigmoid(gate).
    public static func siluMulBackward(_ dy: Tensor, gate: Tensor, up: Tensor,
                                       pool: ThreadPool = .shared) -> (dGate: Tensor, dUp: Tensor) {
        precondition(dy.shape == gate.shape && gate.shape == up.shape, "siluMulBackward: shapes differ")
        let dg = Tensor(uninitialized: gate.shape), du = Tensor(uninitialized: up.shape)
        let d = dy.floats, g = gate.floats, u = up.floats, dgp = dg.mutableFloats, dup = du.mutableFloats
        guard let dp = d.baseAddress, let gp = g.baseAddress, let upp = u.baseAddress,
              let dgb = dgp.baseAddress, let dub = dup.baseAddress else { return (dg, du) }
        parallelChunks(d.count, grain: parallelThreshold, pool: pool) { r in
            let o = r.lowerBound
            moek_silu_mul_backward(dp + o, gp + o, upp + o, dgb + o, dub + o, r.count)
        }
        return (dg, du)
    }

    /// Applies `f` to every element of an f32 tensor, in place.
    static func elementwise(_ x: Tensor, pool: ThreadPool, _ f: (Float) -> Float) {
        let b = x.mutableFloats
        guard let p = b.baseAddress else { return }
        parallelChunks(b.count, grain: parallelThreshold, pool: pool) { range in
            for i in range { p[i] = f(p[i]) }
        }
    }
}
