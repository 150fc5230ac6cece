import Foundation
import MoECore

// Dimension legend: R rows, N features.

extension Tape {
    /// y = x + b on every row: x [R, N], b [N]. Backward: dx = dy; db = column sums of dy.
    public func addBias(_ x: Variable, _ b: Variable) -> Variable {
        let y = x.value.copied(), n = b.value.count
        let bp = b.value.floats, yp = y.mutableFloats
        for i in 0..<yp.count { yp[i] += bp[i % n] }
        let out = Variable(y)
        record { [pool] in
            guard let dy = out.grad else { return }
            if b.requiresGrad {
                let g = dy.floats
                var sums = [Float](repeating: 0, count: n)
                for i in 0..<g.count { sums[i % n] += g[i] }
                b.accumulate(Tensor(shape: [n], values: sums))
            }
            x.accumulate(owned: dy, pool: pool)
        }
        return out
    }

    /// y = clamp(x, -c, c) (OLMoE's `clip_qkv`). Backward: dy where x lies in [-c, c], else 0,
    /// as torch's `clamp` passes it.
    public func clamp(_ x: Variable, _ c: Float) -> Variable {
        let xs = x.value
        let y = Tensor(uninitialized: xs.shape)
        let xp = xs.floats, yp = y.mutableFloats
        for i in 0..<yp.count { yp[i] = min(c, max(-c, xp[i])) }
        let out = Variable(y)
        record { [pool] in
            guard let dy = out.grad else { return }
            let d = dy.mutableFloats, xp = xs.floats
            for i in 0..<d.count where xp[i] < -c || xp[i] > c { d[i] = 0 }
            x.accumulate(owned: dy, pool: pool)
        }
        return out
    }

    /// y = x * sigmoid(z) per row: x [R, N], z [R, 1] (Qwen2-MoE's gate on its shared expert).
    /// Backward: dx = dy * s; dz = sum_j dy_j x_j * s (1 - s), with s = sigmoid(z).
    public func sigmoidGate(_ x: Variable, _ z: Variable) -> Variable {
        let xs = x.value, r = z.value.count, n = xs.count / max(1, r)
        let s = z.value.floats.map { 1 / (1 + Foundation.exp(-$0)) }
        let y = Tensor(uninitialized: xs.shape)
        let xp = xs.floats, yp = y.mutableFloats
        for row in 0..<r { for j in 0..<n { yp[row * n + j] = xp[row * n + j] * s[row] } }
        let out = Variable(y)
        record { [pool] in
            guard let dy = out.grad else { return }
            let g = dy.floats, xp = xs.floats
            var dz = [Float](repeating: 0, count: r)
            let dx = Tensor(uninitialized: xs.shape)
            let dxp = dx.mutableFloats
            for row in 0..<r {
                var dot: Float = 0
                for j in 0..<n {
                    dot += g[row * n + j] * xp[row * n + j]
                    dxp[row * n + j] = g[row * n + j] * s[row]
                }
                dz[row] = dot * s[row] * (1 - s[row])
            }
            z.accumulate(Tensor(shape: z.shape, values: dz))
            x.accumulate(owned: dx, pool: pool)
        }
        return out
    }
}
