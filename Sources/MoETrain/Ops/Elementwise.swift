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

// MARK: - Column slices, concatenation and tiling (multi-head latent attention)

extension Tape {
    /// Columns `range` of x [R, C] (any shape, read as rows of its last dimension): [R, n].
    /// Backward: dy goes back into those columns of dx, zeros elsewhere.
    public func sliceColumns(_ x: Variable, _ range: Range<Int>) -> Variable {
        let c = x.shape.last ?? 1, rows = x.value.count / max(1, c), n = range.count
        precondition(range.lowerBound >= 0 && range.upperBound <= c, "sliceColumns: \(range) of \(c)")
        let y = Tensor(uninitialized: [rows, n])
        let xp = x.value.floats, yp = y.mutableFloats
        for r in 0..<rows { for j in 0..<n { yp[r * n + j] = xp[r * c + range.lowerBound + j] } }
        let out = Variable(y)
        record { [pool] in
            guard let dy = out.grad, x.requiresGrad else { return }
            let dx = Tensor(zeros: x.shape)
            let g = dy.floats, dp = dx.mutableFloats
            for r in 0..<rows { for j in 0..<n { dp[r * c + range.lowerBound + j] = g[r * n + j] } }
            x.accumulate(owned: dx, pool: pool)
        }
        return out
    }

    /// The columns of each part side by side: parts [R, C_i] -> [R, sum C_i]. Backward: each
    /// part takes its columns of dy.
    public func concatColumns(_ parts: [Variable]) -> Variable {
        let widths = parts.map { $0.shape.last ?? 1 }, total = widths.reduce(0, +)
        let rows = parts[0].value.count / max(1, widths[0])
        precondition(parts.indices.allSatisfy { parts[$0].value.count == rows * widths[$0] }, "concatColumns: unequal rows")
        let y = Tensor(uninitialized: [rows, total])
        let yp = y.mutableFloats
        var offset = 0
        for (p, w) in zip(parts, widths) {
            let xp = p.value.floats
            for r in 0..<rows { for j in 0..<w { yp[r * total + offset + j] = xp[r * w + j] } }
            offset += w
        }
        let out = Variable(y)
        record { [pool] in
            guard let dy = out.grad else { return }
            let g = dy.floats
            var offset = 0
            for (p, w) in zip(parts, widths) {
                if p.requiresGrad {
                    let dx = Tensor(uninitialized: p.shape)
                    let dp = dx.mutableFloats
                    for r in 0..<rows { for j in 0..<w { dp[r * w + j] = g[r * total + offset + j] } }
                    p.accumulate(owned: dx, pool: pool)
                }
                offset += w
            }
        }
        return out
    }

    /// x [R, C] repeated `times` across: [R, times * C] (one rope key shared by every head).
    /// Backward: the copies' gradients summed.
    public func tileColumns(_ x: Variable, _ times: Int) -> Variable {
        let c = x.shape.last ?? 1, rows = x.value.count / max(1, c)
        let y = Tensor(uninitialized: [rows, times * c])
        let xp = x.value.floats, yp = y.mutableFloats
        for r in 0..<rows { for k in 0..<times { for j in 0..<c { yp[(r * times + k) * c + j] = xp[r * c + j] } } }
        let out = Variable(y)
        record { [pool] in
            guard let dy = out.grad, x.requiresGrad else { return }
            let dx = Tensor(zeros: x.shape)
            let g = dy.floats, dp = dx.mutableFloats
            for r in 0..<rows { for k in 0..<times { for j in 0..<c { dp[r * c + j] += g[(r * times + k) * c + j] } } }
            x.accumulate(owned: dx, pool: pool)
        }
        return out
    }

    /// x [R, C] with zero columns appended up to `width`: [R, width] (x itself when C = width).
    public func padColumns(_ x: Variable, to width: Int) -> Variable {
        let c = x.shape.last ?? 1, rows = x.value.count / max(1, c)
        guard width > c else { return x }
        return concatColumns([x, Variable(Tensor(zeros: [rows, width - c]), requiresGrad: false)])
    }
}
