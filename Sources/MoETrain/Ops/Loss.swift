import Foundation
import MoECore

// Dimension legend: T positions, V vocabulary.

extension Tape {
    /// Mean softmax cross-entropy of logits [T, V] against `targets` (one id per position; a
    /// negative target is ignored). Returns a [1] variable. Backward: (softmax - onehot) / count.
    public func crossEntropy(_ logits: Variable, targets: [Int]) -> Variable {
        let v = logits.shape[1], t = logits.shape[0]
        precondition(targets.count == t, "crossEntropy: \(targets.count) targets for \(t) positions")
        let z = logits.value.floats
        var probs = [Float](repeating: 0, count: t * v)
        var total: Double = 0
        let counted = targets.filter { $0 >= 0 }.count
        for r in 0..<t {
            var mx = -Float.infinity
            for i in 0..<v { mx = max(mx, z[r * v + i]) }
            var sum: Double = 0
            for i in 0..<v { let e = Foundation.exp(Double(z[r * v + i] - mx)); probs[r * v + i] = Float(e); sum += e }
            for i in 0..<v { probs[r * v + i] = Float(Double(probs[r * v + i]) / sum) }
            if targets[r] >= 0 { total -= Double(z[r * v + targets[r]] - mx) - Foundation.log(sum) }
        }
        let out = Variable(Tensor(shape: [1], values: [Float(total / Double(max(1, counted)))]))
        record {
            guard let g = out.grad?.floats[0], logits.requiresGrad else { return }
            let scale = g / Float(max(1, counted))
            var d = probs
            for r in 0..<t {
                if targets[r] < 0 { for i in 0..<v { d[r * v + i] = 0 }; continue }
                d[r * v + targets[r]] -= 1
                for i in 0..<v { d[r * v + i] *= scale }
            }
            logits.accumulate(Tensor(shape: [t, v], values: d))
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
        let out = Variable(x.value.copied().reshaped(shape))
        record {
            guard let dy = out.grad else { return }
            x.accumulate(dy.reshaped(x.shape))
        }
        return out
    }
}
