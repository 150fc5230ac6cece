import Foundation
import MoECore
import _MoEKernels

// Dimension legend: T positions, V vocabulary.

extension Tape {
    /// Mean softmax cross-entropy of logits [T, V] against `targets` (one id per position; a
    /// negative target is ignored). Returns a [1] variable. Backward: (softmax - onehot) / count.
    public func crossEntropy(_ logits: Variable, targets: [Int]) -> Variable {
        let v = logits.shape[1], t = logits.shape[0]
        precondition(targets.count == t, "crossEntropy: \(targets.count) targets for \(t) positions")
        precondition(v > 0 || t == 0, "crossEntropy: logits have no classes")
        let z = logits.value.floats
        let probs = Tensor(uninitialized: [t, v])
        let p = probs.mutableFloats
        var rowLoss = [Double](repeating: 0, count: t)  // summed in order: the same on any thread count
        let counted = targets.filter { $0 >= 0 }.count
        rowLoss.withUnsafeMutableBufferPointer { rowLoss in
            Kernels.parallelRows(t, cost: v * 8, pool: pool) { r in
                // f32 exponentials (as PyTorch's f32 log-softmax), summed in f64
                var mx: Float = 0
                let sum = moek_softmax_row_f64(z.baseAddress! + r * v, p.baseAddress! + r * v, v, &mx)
                if targets[r] >= 0 { rowLoss[r] = Foundation.log(sum) - Double(z[r * v + targets[r]] - mx) }
            }
        }
        let total = rowLoss.reduce(0, +)
        let out = Variable(Tensor(shape: [1], values: [Float(total / Double(max(1, counted)))]))
        record { [pool] in
            guard let g = out.grad?.floats[0], logits.requiresGrad else { return }
            let scale = g / Float(max(1, counted))
            let d = Tensor(uninitialized: [t, v])
            let dp = d.mutableFloats, pp = probs.floats
            Kernels.parallelRows(t, cost: v * 2, pool: pool) { r in
                guard targets[r] >= 0 else {
                    for i in 0..<v { dp[r * v + i] = 0 }
                    return
                }
                for i in 0..<v { dp[r * v + i] = pp[r * v + i] * scale }
                dp[r * v + targets[r]] -= scale
            }
            logits.accumulate(owned: d)
        }
        return out
    }

    /// sum(x * r) for a fixed tensor r of x's shape: a scalar probe that turns any output into a
    /// loss (for gradient checks). Backward: dx = r * dloss.
    public func weightedSum(_ x: Variable, _ r: Tensor) -> Variable {
        let r = r.copied()  // the closure keeps its own copy alive
        let xs = x.value.floats, rs = r.floats
        var s: Double = 0
        for i in 0..<xs.count { s += Double(xs[i]) * Double(rs[i]) }
        let out = Variable(Tensor(shape: [1], values: [Float(s)]))
        record {
            guard let g = out.grad?.floats[0] else { return }
            x.accumulate(Tensor(shape: x.shape, values: r.toFloats().map { $0 * g }))
        }
        return out
    }

    /// The same values seen with another shape (gradients flow through unchanged).
    public func reshape(_ x: Variable, _ shape: [Int]) -> Variable {
        let out = Variable(x.value.reshaped(shape))  // shares x's storage: no op writes into a value
        record { [pool] in
            guard let dy = out.grad else { return }
            x.accumulate(owned: dy.reshaped(x.shape), pool: pool)  // `out` is done with dy
        }
        return out
    }
}
