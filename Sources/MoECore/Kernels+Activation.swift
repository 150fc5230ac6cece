import Foundation

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

    /// SiLU in place over an f32 tensor.
    public static func silu(_ x: Tensor, pool: ThreadPool = .shared) {
        elementwise(x, pool: pool) { silu($0) }
    }

    /// GELU in place over an f32 tensor.
    public static func gelu(_ x: Tensor, approximation: GELUApproximation = .none, pool: ThreadPool = .shared) {
        elementwise(x, pool: pool) { gelu($0, approximation: approximation) }
    }

    /// SwiGLU combine in place: `gate = silu(gate) * up`, both f32 of the same shape.
    public static func siluMul(gate: Tensor, up: Tensor, pool: ThreadPool = .shared) {
        precondition(gate.shape == up.shape, "siluMul: gate \(gate.shape), up \(up.shape)")
        let g = gate.mutableFloats, u = up.floats
        guard let gp = g.baseAddress, let upp = u.baseAddress else { return }
        parallelChunks(g.count, grain: parallelThreshold, pool: pool) { range in
            for i in range { gp[i] = silu(gp[i]) * upp[i] }
        }
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
