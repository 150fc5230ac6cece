import Foundation
import MoECore
import _MoEKernels

// Dimension legend: R rows, C features.

extension Tape {
    /// RMSNorm over the last dimension: y = x * r * w with r = 1 / sqrt(mean(x^2) + eps).
    ///
    /// Backward per row: dw += dy * x * r; dx = r * (dy * w) - x * r^3 * mean(dy * w * x).
    public func rmsNorm(_ x: Variable, weight w: Variable, eps: Float) -> Variable {
        let c = x.shape.last ?? 1, rows = x.value.count / max(1, c)
        let (xT, wT) = (x.value, w.value)  // the closure keeps these alive
        let xs = xT.floats, ws = wT.floats
        let y = Tensor(uninitialized: x.shape)
        let yp = y.mutableFloats
        var inv = [Float](repeating: 0, count: rows)
        inv.withUnsafeMutableBufferPointer { inv in
            guard let xb = xs.baseAddress, let wb = ws.baseAddress, let yb = yp.baseAddress else { return }
            Kernels.parallelRows(rows, cost: c * 3, pool: pool) { r in
                inv[r] = moek_rms_norm_row(xb + r * c, wb, eps, yb + r * c, c)
            }
        }
        let out = Variable(y, inputs: [x, w])
        record { [pool] in
            guard let dy = out.grad else { return }
            let dyp = dy.floats, xs = xT.floats, ws = wT.floats
            let dx = Tensor(uninitialized: x.shape)
            let dxp = dx.mutableFloats
            // dw sums over rows: per block of rows into its own partial, then the partials in
            // order, so the result does not depend on the thread count.
            let block = 64, blocks = (rows + block - 1) / block
            var partial = [Float](repeating: 0, count: blocks * c)
            partial.withUnsafeMutableBufferPointer { partial in
                guard let dyb = dyp.baseAddress, let xb = xs.baseAddress, let wb = ws.baseAddress,
                      let dxb = dxp.baseAddress, let pb = partial.baseAddress else { return }
                Kernels.parallelRows(blocks, cost: block * c * 6, pool: pool) { b in
                    for r in (b * block)..<min(rows, (b + 1) * block) {
                        moek_rms_norm_backward_row(dyb + r * c, xb + r * c, wb, inv[r], dxb + r * c, pb + b * c, c)
                    }
                }
            }
            var dw = [Float](repeating: 0, count: c)
            for b in 0..<blocks { for i in 0..<c { dw[i] += partial[b * c + i] } }
            x.accumulate(owned: dx, pool: pool)
            w.accumulate(owned: Tensor(shape: [c], values: dw))
        }
        return out
    }

    /// SwiGLU combine: y = silu(gate) * up. Backward: d up = dy * silu(gate);
    /// d gate = dy * up * s * (1 + gate * (1 - s)) with s = sigmoid(gate).
    public func siluMul(gate: Variable, up: Variable) -> Variable {
        let (gT, uT) = (gate.value, up.value)  // the closure keeps these alive
        let y = Tensor(uninitialized: gT.shape)
        Kernels.siluMul(gate: gT, up: uT, into: y, pool: pool)
        let out = Variable(y)
        record { [pool] in
            guard let dy = out.grad else { return }
            let (dg, du) = Kernels.siluMulBackward(dy, gate: gT, up: uT, pool: pool)
            gate.accumulate(owned: dg, pool: pool)
            up.accumulate(owned: du, pool: pool)
        }
        return out
    }
}
