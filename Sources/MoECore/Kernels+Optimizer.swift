import Foundation
import _MoEKernels

extension Kernels {
    /// AdamW's hyperparameters for one step (the bias corrections already raised to the step).
    public struct AdamWStep: Sendable {
        public var beta1: Float, beta2: Float, eps: Float, lr: Float, weightDecay: Float
        /// 1 - beta1^t and 1 - beta2^t.
        public var correction1: Float, correction2: Float
        /// What each gradient is multiplied by first (gradient clipping's scale; 1 for none).
        public var gradScale: Float = 1

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
    /// with g scaled by `gradScale`, m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
    /// w -= lr ((m / c1) / (sqrt(v / c2) + eps) + wd w).
    public static func adamW(weights w: UnsafeMutablePointer<Float>, grad g: UnsafePointer<Float>,
                             m: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>, count n: Int,
                             _ h: AdamWStep, pool: ThreadPool = .shared) {
        adamW([AdamWSegment(weights: w, grad: g, m: m, v: v, count: n, step: h)], pool: pool)
    }

    /// One AdamW update of many parameters in one parallel pass: each segment's elements are
    /// split into fixed pieces, and all pieces share the threads. (One pass per parameter
    /// cost a barrier each; an MoE has hundreds of small expert matrices.)
    public static func adamW(_ segments: [AdamWSegment], pool: ThreadPool = .shared) {
        let piece = 1 << 14
        let pieces = blocks(segments.map(\.count), size: piece)
        // Eight floats per segment, written in place (a flat map made an array per segment).
        let hyper = [Float](unsafeUninitializedCapacity: 8 * segments.count) { buffer, count in
            for (i, s) in segments.enumerated() {
                let h = s.step, o = 8 * i
                (buffer[o], buffer[o + 1], buffer[o + 2], buffer[o + 3]) = (h.beta1, h.beta2, h.correction1, h.correction2)
                (buffer[o + 4], buffer[o + 5], buffer[o + 6], buffer[o + 7]) = (h.eps, h.lr, h.weightDecay, h.gradScale)
            }
            count = 8 * segments.count
        }
        hyper.withUnsafeBufferPointer { hp in
            guard let hb = hp.baseAddress else { return }
            pieces.withUnsafeBufferPointer { pieces in
                pool.parallelFor(pieces.count) { p in
                    let (i, o) = pieces[p]
                    let s = segments[i]
                    moek_adamw(s.weights + o, s.grad + o, s.m + o, s.v + o, min(piece, s.count - o), hb + 8 * i)
                }
            }
        }
    }

    /// One parameter's share of `adamW(_:pool:)`: its weights, gradient and moments (`count`
    /// floats each) and its step's hyperparameters.
    public struct AdamWSegment: @unchecked Sendable {
        public var weights: UnsafeMutablePointer<Float>, grad: UnsafePointer<Float>
        public var m: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>
        public var count: Int, step: AdamWStep
        public init(weights: UnsafeMutablePointer<Float>, grad: UnsafePointer<Float>, m: UnsafeMutablePointer<Float>,
                    v: UnsafeMutablePointer<Float>, count: Int, step: AdamWStep) {
            self.weights = weights
            self.grad = grad
            self.m = m
            self.v = v
            self.count = count
            self.step = step
        }
    }

    /// The sum of squares of an f32 tensor's elements, in f64, split over `pool` in fixed blocks
    /// summed in order (so the result does not depend on the thread count).
    public static func sumOfSquares(_ x: Tensor, pool: ThreadPool = .shared) -> Double {
        // One block (a decoded token's row, checked twice a layer): its one sum, without the
        // pass's arrays.
        if x.dtype == .f32 && x.count <= sumOfSquaresBlock {
            return x.count == 0 ? 0 : moek_sum_squares(x.rawPointer.assumingMemoryBound(to: Float.self), x.count)
        }
        return sumOfSquares([x], pool: pool)
    }

    /// The elements a task of `sumsOfSquares` sums.
    static let sumOfSquaresBlock = 1 << 16

    /// The sum of squares over many f32 tensors in one parallel pass: each tensor's fixed blocks
    /// are summed in order, then the tensors in order, so the result equals summing
    /// `sumOfSquares` of each in turn, on any thread count.
    public static func sumOfSquares(_ xs: [Tensor], pool: ThreadPool = .shared) -> Double {
        sumsOfSquares(xs, pool: pool).reduce(0, +)
    }

    /// Each tensor's `sumOfSquares`, from one parallel pass over them all.
    public static func sumsOfSquares(_ xs: [Tensor], pool: ThreadPool = .shared) -> [Double] {
        precondition(xs.allSatisfy { $0.dtype == .f32 }, "sumOfSquares: f32 only")
        let counts = xs.map { $0.count }, block = sumOfSquaresBlock, blocks = blocks(counts, size: block)
        let bases = xs.map { $0.rawPointer.assumingMemoryBound(to: Float.self) }
        var partial = [Double](repeating: 0, count: blocks.count)
        partial.withUnsafeMutableBufferPointer { out in
            blocks.withUnsafeBufferPointer { blocks in
                pool.parallelFor(blocks.count) { b in
                    let (i, o) = blocks[b]
                    out[b] = moek_sum_squares(bases[i] + o, min(block, counts[i] - o))
                }
            }
        }
        var sums = [Double](repeating: 0, count: xs.count), b = 0
        for i in xs.indices {
            while b < blocks.count && blocks[b].item == i { sums[i] += partial[b]; b += 1 }
        }
        return sums
    }

    /// The sum of squares of each of `rows` rows of `length` f32s (row r at `x + r * length`),
    /// into `out[r]`: the per-row sums an op can take of a gradient block it has just written,
    /// while the block is in cache (`moek_sum_squares` of each row).
    public static func rowSumsOfSquares(_ x: UnsafePointer<Float>, rows: Int, length: Int, into out: UnsafeMutablePointer<Double>) {
        for r in 0..<rows { out[r] = moek_sum_squares(x + r * length, length) }
    }

    /// Multiplies every element of many f32 tensors by `s`, in place, in one parallel pass.
    public static func scale(_ xs: [Tensor], by s: Float, pool: ThreadPool = .shared) {
        let block = 1 << 14, blocks = blocks(xs.map(\.count), size: block)
        let bases = xs.map { $0.mutableRawPointer.assumingMemoryBound(to: Float.self) }
        blocks.withUnsafeBufferPointer { blocks in
            pool.parallelFor(blocks.count) { b in
                let (i, o) = blocks[b]
                let p = bases[i] + o
                for j in 0..<min(block, xs[i].count - o) { p[j] *= s }
            }
        }
    }

    /// For each (target, addends) pair, target += each addend in the order given (f32 tensors of
    /// the target's element count), in one parallel pass over fixed blocks of every target: the
    /// same sums as adding them one after another, on any thread count.
    public static func add(_ sums: [(into: Tensor, adds: [Tensor])], pool: ThreadPool = .shared) {
        precondition(sums.allSatisfy { s in s.into.dtype == .f32 && s.adds.allSatisfy { $0.dtype == .f32 && $0.count == s.into.count } },
                     "add: f32 addends of the target's size only")
        let block = 1 << 16, blocks = blocks(sums.map(\.into.count), size: block)
        blocks.withUnsafeBufferPointer { blocks in
            pool.parallelFor(blocks.count) { b in
                let (i, o) = blocks[b]
                let dst = sums[i].into.mutableRawPointer.assumingMemoryBound(to: Float.self) + o
                let n = min(block, sums[i].into.count - o)
                for add in sums[i].adds {
                    let src = add.rawPointer.assumingMemoryBound(to: Float.self) + o
                    for j in 0..<n { dst[j] += src[j] }
                }
            }
        }
    }

    /// Fixed blocks of `size` elements over several buffers of `counts` elements: (buffer,
    /// first element) in buffer order, for one parallel pass over all of them.
    private static func blocks(_ counts: [Int], size: Int) -> [(item: Int, start: Int)] {
        var out: [(item: Int, start: Int)] = []
        out.reserveCapacity(counts.reduce(0) { $0 + ($1 + size - 1) / size })
        for (i, n) in counts.enumerated() {
            for start in stride(from: 0, to: n, by: size) { out.append((i, start)) }
        }
        return out
    }
}
