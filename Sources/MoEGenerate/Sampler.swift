import Foundation
import MoECore

/// How the next token is chosen from the logits.
///
/// `temperature` 0 is greedy (argmax, deterministic). Otherwise, in transformers' order: divide
/// by the temperature, keep the `topK` most likely, keep the smallest set whose probability
/// reaches `topP`, drop tokens below `minP` times the most likely one's probability, and draw
/// from what is left with a generator seeded by `seed`.
public struct SamplingOptions: Sendable, Equatable {
    public var temperature: Float
    public var topK: Int?
    public var topP: Float?
    public var minP: Float?
    public var seed: UInt64

    public init(temperature: Float = 0, topK: Int? = nil, topP: Float? = nil, minP: Float? = nil, seed: UInt64 = 0) {
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.minP = minP
        self.seed = seed
    }

    /// Greedy decoding.
    public static let greedy = SamplingOptions()
}

/// Draws tokens as `SamplingOptions` says; carries its random state from token to token.
public struct Sampler: Sendable {
    public let options: SamplingOptions
    var rng: SplitMix64

    public init(_ options: SamplingOptions) {
        self.options = options
        rng = SplitMix64(seed: options.seed)
    }

    /// The candidates that survive the filters, with their probabilities (summing to 1),
    /// most likely first. Greedy gives the argmax alone with probability 1.
    public func candidates(_ logits: UnsafeBufferPointer<Float>) -> [(id: Int, p: Float)] {
        if options.temperature <= 0 { return [(Kernels.argmaxRow(logits), 1)] }
        let t = options.temperature
        var order: [Int]
        if let k = options.topK, k > 0, k < logits.count {
            order = Kernels.topKRow(logits, k: k)
        } else {
            order = Array(logits.indices).sorted { Kernels.isGreaterForSampling(logits[$0], $0, logits[$1], $1) }
        }
        let top = logits[order[0]] / t
        var probs = order.map { Foundation.exp(Double(logits[$0] / t - top)) }
        var sum = probs.reduce(0, +)
        probs = probs.map { $0 / sum }
        var keep = probs.count
        if let p = options.topP, p < 1 {
            var cumulative = 0.0
            for (i, q) in probs.enumerated() {
                cumulative += q
                if cumulative >= Double(p) { keep = i + 1; break }
            }
        }
        if let m = options.minP, m > 0 {
            let threshold = Double(m) * probs[0]
            keep = min(keep, max(1, probs.prefix(keep).filter { $0 >= threshold }.count))
        }
        sum = probs.prefix(keep).reduce(0, +)
        return (0..<keep).map { (order[$0], Float(probs[$0] / sum)) }
    }

    /// The next token for `logits` [V].
    public mutating func sample(_ logits: UnsafeBufferPointer<Float>) -> Int {
        let c = candidates(logits)
        if c.count == 1 { return c[0].id }
        var u = rng.nextUnitFloat()
        for (id, p) in c {
            if u < p { return id }
            u -= p
        }
        return c[c.count - 1].id
    }
}

extension Kernels {
    /// Larger logit first, ties to the lower id (sampling's candidate order).
    static func isGreaterForSampling(_ a: Float, _ ia: Int, _ b: Float, _ ib: Int) -> Bool {
        a > b || (a == b && ia < ib)
    }
}
