import Foundation

/// A small, fast, seedable generator (SplitMix64, Steele et al. 2014): the same seed gives the
/// same stream on every platform, which tests, benchmarks and random initialisation rely on.
public struct SplitMix64: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// A uniform float in [0, 1) with 24 random bits.
    public mutating func nextUnitFloat() -> Float { Float(next() >> 40) * (1.0 / 16_777_216.0) }
}

extension Tensor {
    /// A tensor of uniform values in `range`, from `seed`, stored as `dtype`.
    public init(randomUniform shape: [Int], in range: ClosedRange<Float> = -1...1, seed: UInt64,
                dtype: DType = .f32) {
        var rng = SplitMix64(seed: seed)
        let width = range.upperBound - range.lowerBound
        let values = (0..<shape.reduce(1, *)).map { _ in range.lowerBound + width * rng.nextUnitFloat() }
        self.init(shape: shape, values: values, dtype: dtype)
    }

    /// A tensor of normal values with mean 0 and standard deviation `std` (Box-Muller), from
    /// `seed`, stored as `dtype`: the draw transformers' `_init_weights` makes (std
    /// `initializer_range`).
    public init(randomNormal shape: [Int], std: Float, seed: UInt64, dtype: DType = .f32) {
        var rng = SplitMix64(seed: seed)
        let count = shape.reduce(1, *)
        var values = [Float](repeating: 0, count: count)
        var i = 0
        while i < count {
            // u1 in (0, 1] so the logarithm is finite.
            let u1 = Double((rng.next() >> 11) + 1) * (1.0 / 9_007_199_254_740_992.0)
            let u2 = Double(rng.next() >> 11) * (1.0 / 9_007_199_254_740_992.0)
            let r = (-2 * Foundation.log(u1)).squareRoot() * Double(std)
            values[i] = Float(r * Foundation.cos(2 * Double.pi * u2))
            if i + 1 < count { values[i + 1] = Float(r * Foundation.sin(2 * Double.pi * u2)) }
            i += 2
        }
        self.init(shape: shape, values: values, dtype: dtype)
    }
}
