import Foundation
import MoECore

/// The auxiliary losses of the MoE literature, unscaled (the caller applies its coefficients).
///
/// `probs` are per-token router probabilities as T * E floats (softmax, or sigmoid scores
/// normalised per token); `counts[i]` is how many of the T tokens chose expert i (every chosen
/// slot, before capacity drops, as Switch and transformers count).
public enum AuxLoss {
    /// Switch / GShard / transformers load balance: `E * sum_i f_i * P_i` with `f_i = counts_i / T`
    /// and `P_i` the mean probability. Uniform routing gives k (1 for top-1). ROUTING.md §1.
    public static func loadBalance(probs: [Float], tokens: Int, experts: Int, counts: [Int]) -> Float {
        loadBalance(probs: probs, tokens: tokens, experts: experts, fractions: counts.map { Double($0) / Double(max(1, tokens)) })
    }

    /// The same loss from the fractions `f_i` themselves, for counts that are not whole (AdaMoE's
    /// null experts share their mean).
    public static func loadBalance(probs: [Float], tokens: Int, experts: Int, fractions f: [Double]) -> Float {
        if tokens == 0 { return 0 }
        return loadBalance(meanProbs: meanPerExpert(probs, tokens: tokens, experts: experts), fractions: f)
    }

    /// The same loss from the mean probabilities `P_i` (a batch run as shards adds up theirs).
    public static func loadBalance(meanProbs p: [Double], fractions f: [Double]) -> Float {
        var sum = 0.0
        for i in p.indices { sum += f[i] * p[i] }
        return Float(Double(p.count) * sum)
    }

    /// ST-MoE router z-loss: the mean over tokens of `(log sum_j exp z_j)^2`. ROUTING.md §1.
    public static func zLoss(logits: Tensor) -> Float {
        let c = logits.shape.last ?? 0
        let t = c == 0 ? 0 : logits.count / c
        if t == 0 { return 0 }
        return Float(zLossSum(logits: logits) / Double(t))
    }

    /// `zLoss` times the number of tokens: the sum over tokens, in f64.
    public static func zLossSum(logits: Tensor) -> Double {
        let c = logits.shape.last ?? 0
        let t = c == 0 ? 0 : logits.count / c
        let z = logits.toFloats()
        var total = 0.0
        for r in 0..<t {
            let row = z[(r * c)..<((r + 1) * c)]
            let m = Double(row.max() ?? 0)
            let lse = m + Foundation.log(row.reduce(0.0) { $0 + Foundation.exp(Double($1) - m) })
            total += lse * lse
        }
        return total
    }

    /// DeepSeekMoE expert-level balance: `sum_i f_i * P_i` with `f_i = E / (k T) * counts_i`.
    /// Uniform routing gives 1. ROUTING.md §8.
    public static func expertBalance(probs: [Float], tokens: Int, experts: Int, counts: [Int], k: Double) -> Float {
        if tokens == 0 || k == 0 { return 0 }
        return expertBalance(meanProbs: meanPerExpert(probs, tokens: tokens, experts: experts), tokens: tokens, counts: counts, k: k)
    }

    /// The same loss from the mean probabilities `P_i`.
    public static func expertBalance(meanProbs p: [Double], tokens: Int, counts: [Int], k: Double) -> Float {
        if tokens == 0 || k == 0 { return 0 }
        let experts = p.count
        var sum = 0.0
        for i in 0..<experts { sum += Double(experts) / (k * Double(tokens)) * Double(counts[i]) * p[i] }
        return Float(sum)
    }

    /// DeepSeekMoE device-level balance with the experts split into `devices` contiguous
    /// groups: `sum_d mean_{j in d} f_j * sum_{j in d} P_j`. ROUTING.md §8.
    public static func deviceBalance(probs: [Float], tokens: Int, experts: Int, counts: [Int], k: Double,
                                     devices: Int) -> Float {
        if tokens == 0 || k == 0 || devices < 1 { return 0 }
        return deviceBalance(meanProbs: meanPerExpert(probs, tokens: tokens, experts: experts), tokens: tokens, counts: counts, k: k,
                             devices: devices)
    }

    /// The same loss from the mean probabilities `P_i`.
    public static func deviceBalance(meanProbs p: [Double], tokens: Int, counts: [Int], k: Double, devices: Int) -> Float {
        if tokens == 0 || k == 0 || devices < 1 { return 0 }
        let experts = p.count, per = experts / devices
        var sum = 0.0
        for d in 0..<devices {
            let group = (d * per)..<(d == devices - 1 ? experts : (d + 1) * per)
            let f = group.reduce(0.0) { $0 + Double(experts) / (k * Double(tokens)) * Double(counts[$1]) } / Double(group.count)
            let pp = group.reduce(0.0) { $0 + p[$1] }
            sum += f * pp
        }
        return Float(sum)
    }

    /// The top-p router's dynamic loss: the mean router entropy `-sum_i P_i log P_i`. ROUTING.md §3.
    public static func entropy(probs: [Float], tokens: Int, experts: Int) -> Float {
        if tokens == 0 { return 0 }
        return Float(entropySum(probs: probs) / Double(tokens))
    }

    /// `entropy` times the number of tokens: the sum over tokens, in f64.
    public static func entropySum(probs: [Float]) -> Double {
        var total = 0.0
        for v in probs where v > 0 { total -= Double(v) * Foundation.log(Double(v)) }
        return total
    }

    /// The per-expert sums over tokens of `probs` (T * E), in f64: T times the mean `P_i`.
    public static func sumPerExpert(_ probs: [Float], tokens: Int, experts: Int) -> [Double] {
        var p = [Double](repeating: 0, count: experts)
        for t in 0..<tokens { for i in 0..<experts { p[i] += Double(probs[t * experts + i]) } }
        return p
    }

    static func meanPerExpert(_ probs: [Float], tokens: Int, experts: Int) -> [Double] {
        sumPerExpert(probs, tokens: tokens, experts: experts).map { $0 / Double(tokens) }
    }
}
