import Foundation
import _MoEKernels

extension Kernels {
    /// AdamW's hyperparameters for one step (the bias corrections already raised to the step).
    public struct AdamWStep: Sendable {
        public var beta1: Float, beta2: Float, eps: Float, lr: Float, weightDecay: Float
        /// 1 - beta1^t and 1 - beta2^t.
        public var correction1: Float, correction2: Float

        public init(beta1: Float, beta2: Float, eps: Float, lr: Float, weightDecay: Float, step: Int) {
            self.beta1 = beta1
            self.beta2 = beta2
            self.eps = eps
            self.lr = lr
            self.weightDecay = weightDecay
            correction1 = 1 - Foundation.pow(beta1, Float(step))
            correction2 = 1 - Foundation.pow(beta2, Float(step))
        }
    }

    /// One AdamW update in place over n elements, split over `pool`:
    /// m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2; w -= lr ((m / c1) / (sqrt(v / c2) + eps) + wd w).
    public static func adamW(weights w: UnsafeMutablePointer<Float>, grad g: UnsafePointer<Float>,
                             m: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>, count n: Int,
                             _ h: AdamWStep, pool: ThreadPool = .shared) {
        let hyper = [h.beta1, h.beta2, h.correction1, h.correction2, h.eps, h.lr, h.weightDecay]
        hyper.withUnsafeBufferPointer { hp in
            guard let hb = hp.baseAddress else { return }
            parallelChunks(n, grain: 1 << 14, pool: pool) { r in
                let o = r.lowerBound
                moek_adamw(w + o, g + o, m + o, v + o, r.count, hb)
            }
        }
    }

    /// The sum of squares of an f32 tensor's elements, in f64, split over `pool` in fixed blocks
    /// summed in order (so the result does not depend on the thread count).
    public static func sumOfSquares(_ x: Tensor, pool: ThreadPool = .shared) -> Double {
        let b = x.floats
        guard let p = b.baseAddress else { return 0 }
        let block = 1 << 16, blocks = (b.count + block - 1) / block
        var partial = [Double](repeating: 0, count: blocks)
        partial.withUnsafeMutableBufferPointer { out in
            pool.parallelFor(blocks) { i in
                out[i] = moek_sum_squares(p + i * block, min(block, b.count - i * block))
            }
        }
        return partial.reduce(0, +)
    }
}
