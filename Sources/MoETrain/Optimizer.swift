import Foundation
import MoECore

/// AdamW (Loshchilov & Hutter 2019): Adam with weight decay decoupled from the gradient.
///
/// Per parameter: m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; with bias correction
/// m^ = m / (1 - b1^t), v^ = v / (1 - b2^t); then p -= lr (m^ / (sqrt(v^) + eps) + wd p).
/// `weightDecay` applies only to the parameters passed with `decay: true` (by convention
/// matrices, not norms or biases).
public final class AdamW: @unchecked Sendable {
    public var beta1: Float, beta2: Float, eps: Float, weightDecay: Float
    /// Steps taken.
    public private(set) var step = 0
    /// One parameter's moments, boxed so an update mutates them in place (a tuple in the
    /// dictionary was copied out and back, two full copies per parameter per step).
    private final class Moments {
        var m: [Float], v: [Float]
        init(m: [Float], v: [Float]) { self.m = m; self.v = v }
    }
    private var moments: [ObjectIdentifier: Moments] = [:]

    public init(beta1: Float = 0.9, beta2: Float = 0.95, eps: Float = 1e-8, weightDecay: Float = 0.1) {
        self.beta1 = beta1
        self.beta2 = beta2
        self.eps = eps
        self.weightDecay = weightDecay
    }

    /// One update of every parameter with a gradient, at learning rate `lr`.
    /// The elementwise work is the `Kernels.adamW` leaf, split over `pool`.
    public func update(_ params: [(variable: Variable, decay: Bool)], lr: Float, pool: ThreadPool = .shared) {
        step += 1
        let withDecay = Kernels.AdamWStep(beta1: beta1, beta2: beta2, eps: eps, lr: lr, weightDecay: weightDecay, step: step)
        var withoutDecay = withDecay
        withoutDecay.weightDecay = 0
        for (p, decay) in params {
            guard let g = p.grad?.floats else { continue }
            let key = ObjectIdentifier(p)
            let box: Moments
            if let existing = moments[key] {
                box = existing
            } else {
                box = Moments(m: [Float](repeating: 0, count: g.count), v: [Float](repeating: 0, count: g.count))
                moments[key] = box
            }
            let hyper = decay ? withDecay : withoutDecay
            guard let w = p.value.mutableFloats.baseAddress, let gp = g.baseAddress else { continue }
            box.m.withUnsafeMutableBufferPointer { m in
                box.v.withUnsafeMutableBufferPointer { v in
                    Kernels.adamW(weights: w, grad: gp, m: m.baseAddress!, v: v.baseAddress!, count: g.count, hyper, pool: pool)
                }
            }
        }
    }

    /// The first and second moments of `p` (for checkpoints), if it has been updated.
    public func state(of p: Variable) -> (m: [Float], v: [Float])? { moments[ObjectIdentifier(p)].map { ($0.m, $0.v) } }

    /// Restores `p`'s moments and the step count (when resuming).
    public func restore(_ p: Variable, m: [Float], v: [Float], step: Int) {
        moments[ObjectIdentifier(p)] = Moments(m: m, v: v)
        self.step = step
    }
}

/// Scales every gradient so their joint L2 norm is at most `maxNorm`; returns the norm before.
@discardableResult
public func clipGradients(_ params: [Variable], maxNorm: Float, pool: ThreadPool = .shared) -> Float {
    let total = params.reduce(0.0) { sum, p in sum + (p.grad.map { Kernels.sumOfSquares($0, pool: pool) } ?? 0) }
    let norm = Float(total.squareRoot())
    if norm > maxNorm && norm > 0 {
        let scale = maxNorm / norm
        for p in params {
            guard let g = p.grad?.mutableFloats else { continue }
            Kernels.parallelRows((g.count + 4095) / 4096, cost: 4096, pool: pool) { b in
                for i in (b * 4096)..<min(g.count, (b + 1) * 4096) { g[i] *= scale }
            }
        }
    }
    return norm
}

/// Learning rate with linear warm-up then cosine decay to `minLR` at `totalSteps`.
public struct WarmupCosine: Sendable, Equatable {
    public var peak: Float, minLR: Float, warmup: Int, totalSteps: Int

    public init(peak: Float, minLR: Float = 0, warmup: Int, totalSteps: Int) {
        self.peak = peak
        self.minLR = minLR
        self.warmup = warmup
        self.totalSteps = totalSteps
    }

    /// The rate for step `s` (0-based).
    public func rate(at s: Int) -> Float {
        if s < warmup { return peak * Float(s + 1) / Float(warmup) }
        if s >= totalSteps { return minLR }
        let progress = Double(s - warmup) / Double(max(1, totalSteps - warmup))
        return minLR + (peak - minLR) * Float(0.5 * (1 + Foundation.cos(Double.pi * progress)))
    }
}
