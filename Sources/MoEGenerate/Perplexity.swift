import Foundation
import MoE
import MoECore
import MoEModels

/// Perplexity of a model on a token sequence, with sliding windows (Hugging Face's recipe, which
/// llama-perplexity's chunks are the stride = context case of): windows of `context` tokens
/// start every `stride` tokens; each window runs from an empty KV cache and scores the tokens
/// no earlier window scored, so with `stride < context` every token after the first is scored
/// once, with at least `context - stride` tokens of left context (with `stride == context` the
/// windows do not overlap and each window's first token goes unscored, as in Hugging Face's
/// recipe). A model that always starts from a BOS token sees one: with `bos`, each window after
/// the first starts with it in place of its first token, as llama-perplexity does. Routing
/// overrides apply, and the experts each MoE layer read are counted.
public enum Perplexity {
    /// What a run measured.
    public struct Report: Codable, Sendable {
        public var tokens: Int
        public var scored: Int
        public var context: Int
        public var stride: Int
        public var perplexity: Double
        /// Mean negative log-likelihood per scored token (nats).
        public var meanNll: Double
        /// Routed experts per token, per MoE layer (by index), averaged over every token run.
        public var expertsPerTokenByLayer: [Int: Double]
        /// Their mean over the MoE layers (0 for a dense model).
        public var expertsPerToken: Double
        public var tokensPerS: Double
        /// Against a base run's log-probabilities (`--kl-base`): mean KL(base || this), and how
        /// often the two agree on the most likely token.
        public var klDivergence: Double?
        public var top1Agreement: Double?
        /// Under a memory budget: the share of expert uses the cache held.
        public var expertCacheHitRate: Double?
    }

    /// Runs `model` over `tokens`. `onScored(position, logProbs)` sees every scored position's
    /// log-softmax (the next-token distribution after `tokens[position]`) in order. With
    /// `tokenByToken`, each window runs one token a step with the KV cache, as decoding does, so
    /// routing that depends on what earlier steps did (cache-aware routing) is scored as it decodes.
    public static func run(model: DecoderModel, tokens: [Int], context: Int, stride: Int, bos: Int? = nil,
                           routing: RoutingOverride = RoutingOverride(), tokenByToken: Bool = false,
                           onScored: (Int, UnsafeBufferPointer<Float>) throws(ModelError) -> Void = { _, _ throws(ModelError) in }) throws(ModelError) -> Report {
        precondition(context >= 2 && stride >= 1 && stride <= context, "perplexity: need 2 <= context and 1 <= stride <= context")
        guard tokens.count >= 2 else {
            throw .invalidConfig(path: "(text)", field: "tokens", reason: "need at least 2 tokens to score, got \(tokens.count)")
        }
        var assignments: [Int: Int] = [:], routed = 0
        let options = try routing.forwardOptions(for: model) { layer, r in assignments[layer, default: 0] += r.assignmentCount }
        let v = model.spec.vocabSize
        var nll = 0.0, scored = 0, scoredUpTo = 0  // targets at positions < scoredUpTo are scored
        var logProbs = [Float](repeating: 0, count: v)
        let t0 = DispatchTime.now().uptimeNanoseconds
        var begin = 0
        while scoredUpTo < tokens.count {
            let end = min(begin + context, tokens.count)
            var window = Array(tokens[begin..<end])
            if let bos, begin > 0 { window[0] = bos }
            var cache = model.makeCache(capacity: window.count)
            // An owned copy: a pointer into the forward's result would outlive it.
            var values: [Float]
            if tokenByToken {  // one token a step with the KV cache, as decoding runs
                values = []
                values.reserveCapacity(window.count * v)
                for token in window { values += try model.forward([token], cache: &cache, options: options).toFloats() }
            } else {
                values = try model.forward(window, cache: &cache, options: options).toFloats()
            }
            routed += window.count
            // Targets tokens[j] for j in max(scoredUpTo, begin + 1) ..< end, predicted at j - 1.
            for j in max(scoredUpTo, begin + 1)..<end {
                values.withUnsafeBufferPointer { all in
                    logSoftmax(UnsafeBufferPointer(rebasing: all[((j - 1 - begin) * v)..<((j - begin) * v)]), into: &logProbs)
                }
                nll -= Double(logProbs[tokens[j]])
                scored += 1
                try logProbs.withUnsafeBufferPointer { p throws(ModelError) in try onScored(j - 1, p) }
            }
            scoredUpTo = end
            if end == tokens.count { break }
            begin += stride
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        let byLayer = assignments.mapValues { Double($0) / Double(routed) }
        let mean = byLayer.isEmpty ? 0 : byLayer.values.reduce(0, +) / Double(byLayer.count)
        return Report(tokens: tokens.count, scored: scored, context: context, stride: stride, perplexity: exp(nll / Double(scored)),
                      meanNll: nll / Double(scored), expertsPerTokenByLayer: byLayer, expertsPerToken: mean,
                      tokensPerS: Double(routed) / seconds, klDivergence: nil, top1Agreement: nil)
    }

    /// llama-perplexity's scheme: `tokens` cut into whole chunks of `context` tokens (at most
    /// `maxChunks`), each from an empty cache with its first token replaced by `bos` when given,
    /// scoring the second half of each chunk (the targets at chunk positions context/2 + 1 ...
    /// context - 1), so its numbers compare with llama.cpp's directly.
    public static func runChunks(model: DecoderModel, tokens: [Int], context: Int, bos: Int?, maxChunks: Int? = nil,
                                 routing: RoutingOverride = RoutingOverride(),
                                 onScored: (Int, UnsafeBufferPointer<Float>) throws(ModelError) -> Void = { _, _ throws(ModelError) in }) throws(ModelError) -> Report {
        let chunks = min(tokens.count / context, maxChunks ?? Int.max)
        guard context >= 4, chunks >= 1 else {
            throw .invalidConfig(path: "(text)", field: "tokens", reason: "\(tokens.count) tokens make no whole chunk of \(context)")
        }
        var assignments: [Int: Int] = [:], routed = 0
        let options = try routing.forwardOptions(for: model) { layer, r in assignments[layer, default: 0] += r.assignmentCount }
        let v = model.spec.vocabSize, first = context / 2
        var nll = 0.0, scored = 0
        var logProbs = [Float](repeating: 0, count: v)
        let t0 = DispatchTime.now().uptimeNanoseconds
        for c in 0..<chunks {
            let start = c * context
            var window = Array(tokens[start..<(start + context)])
            if let bos { window[0] = bos }
            var cache = model.makeCache(capacity: context)
            let values = try model.forward(window, cache: &cache, options: options).toFloats()
            routed += context
            for j in first..<(context - 1) {
                values.withUnsafeBufferPointer { all in
                    logSoftmax(UnsafeBufferPointer(rebasing: all[(j * v)..<((j + 1) * v)]), into: &logProbs)
                }
                nll -= Double(logProbs[tokens[start + j + 1]])
                scored += 1
                try logProbs.withUnsafeBufferPointer { p throws(ModelError) in try onScored(start + j, p) }
            }
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
        let byLayer = assignments.mapValues { Double($0) / Double(routed) }
        let mean = byLayer.isEmpty ? 0 : byLayer.values.reduce(0, +) / Double(byLayer.count)
        return Report(tokens: tokens.count, scored: scored, context: context, stride: context, perplexity: exp(nll / Double(scored)),
                      meanNll: nll / Double(scored), expertsPerTokenByLayer: byLayer, expertsPerToken: mean,
                      tokensPerS: Double(routed) / seconds, klDivergence: nil, top1Agreement: nil)
    }

    /// `out` = log-softmax of `row`, in f64 sums for a vocabulary of any size.
    static func logSoftmax(_ row: UnsafeBufferPointer<Float>, into out: inout [Float]) {
        var m = -Float.infinity
        for x in row where x > m { m = x }
        var sum = 0.0
        for x in row { sum += Foundation.exp(Double(x - m)) }
        let lse = m + Float(Foundation.log(sum))
        for i in 0..<row.count { out[i] = row[i] - lse }
    }
}
