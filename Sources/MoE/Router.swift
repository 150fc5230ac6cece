import MoECore

/// A token-to-expert routing method: turns router logits into a `Routing`.
///
/// Each method of the literature is a value type conforming to this (see `RouterConfig` for
/// choosing one by name). Router math is f32. How the logits are produced (a linear gate, or
/// the recurrent gate of RMoE) is the layer's `RouterGate`; a router only selects.
public protocol Router: Sendable {
    /// The name it is selected by (`topk-softmax`, `top-p`, ...).
    var name: String { get }
    /// Routed experts: ids in `0 ..< expertCount`.
    var expertCount: Int { get }
    /// Logits it reads per token: `expertCount`, plus the null experts for AdaMoE.
    var logitCount: Int { get }
    /// False when a token's experts depend on other tokens (expert choice): such a router
    /// must not be used for causal decoding.
    var isCausal: Bool { get }
    /// Whether the chosen weights are divided by their sum (so a token's weights sum to 1, or
    /// to the routed scaling). Training differentiates through this division.
    var renormalizesChosenWeights: Bool { get }
    /// The fixed number of routed experts each token gets from a top-k selection over the
    /// routed experts (config.json's `num_experts_per_tok`); nil when it varies or counts
    /// other slots (top-p, expert choice, null experts, capacity).
    var topK: Int? { get }
    /// Chooses experts and weights for every row of `logits` ([T, logitCount], f32).
    func route(_ logits: Tensor) -> Routing
    /// `route(_:)` with the per-token work split over `pool` (nil: on the calling thread). The
    /// routing is the same either way.
    func route(_ logits: Tensor, pool: ThreadPool?) -> Routing
    /// The auxiliary losses for `logits` and the routing `route` gave for them, by name
    /// (`load_balance`, `z_loss`, ...): unscaled, for the caller to weight.
    func auxLosses(_ logits: Tensor, routing: Routing) -> [String: Float]
}

extension Router {
    public var logitCount: Int { expertCount }
    public var isCausal: Bool { true }
    public var renormalizesChosenWeights: Bool { false }
    public var topK: Int? { nil }
    public func route(_ logits: Tensor, pool: ThreadPool?) -> Routing { route(logits) }
}

/// Helpers shared by the routers.
enum RouterMath {
    /// Row-wise softmax of logits [T, C], as T * C floats.
    static func softmax(_ logits: Tensor, pool: ThreadPool? = nil) -> [Float] {
        let p = logits.converted(to: .f32)
        Kernels.softmax(p, pool: pool ?? .shared)
        return p.toFloats()
    }

    /// A routing from per-token choices: `choose(t)` gives token t's (expert, weight) list;
    /// tokens run (and their lists are put in order) in parallel on `pool` (nil: in order on the
    /// calling thread), then are laid out in token order, so the result does not depend on the
    /// threads.
    static func routeRows(tokens t: Int, experts: Int, pool: ThreadPool?,
                          _ choose: (Int) -> [(expert: Int, weight: Float)]) -> Routing {
        var choices = [[(expert: Int, weight: Float)]](repeating: [], count: t)
        choices.withUnsafeMutableBufferPointer { out in
            Kernels.parallelRows(t, cost: 64 * experts, pool: pool) { out[$0] = Routing.ordered(choose($0)) }
        }
        var offsets = [0]
        offsets.reserveCapacity(t + 1)
        for c in choices { offsets.append(offsets[offsets.count - 1] + c.count) }
        var ids = [Int](), weights = [Float]()
        ids.reserveCapacity(offsets[t])
        weights.reserveCapacity(offsets[t])
        for c in choices {
            for (e, w) in c { ids.append(e); weights.append(w) }
        }
        return Routing(expertCount: experts, offsets: offsets, experts: ids, weights: weights)
    }

    /// A routing where every token chooses exactly `k` experts: `choose(t, ids, weights)` fills
    /// token t's k slots in `append`'s order (descending weight, ties to the lower id). Tokens
    /// run in parallel on `pool` straight into the flat lists, with no allocation per token.
    static func routeFixedK(tokens t: Int, experts: Int, k: Int, pool: ThreadPool?,
                            _ choose: (Int, UnsafeMutableBufferPointer<Int>, UnsafeMutableBufferPointer<Float>) -> Void) -> Routing {
        var ids = [Int](repeating: 0, count: t * k), weights = [Float](repeating: 0, count: t * k)
        ids.withUnsafeMutableBufferPointer { ids in
            weights.withUnsafeMutableBufferPointer { weights in
                Kernels.parallelRows(t, cost: 16 * experts, pool: pool) { tok in
                    choose(tok, UnsafeMutableBufferPointer(rebasing: ids[(tok * k)..<((tok + 1) * k)]),
                           UnsafeMutableBufferPointer(rebasing: weights[(tok * k)..<((tok + 1) * k)]))
                }
            }
        }
        return Routing(expertCount: experts, offsets: (0...t).map { $0 * k }, experts: ids, weights: weights)
    }

    /// The logistic function.
    static func sigmoid(_ x: Float) -> Float { 1 / (1 + Foundation.exp(-x)) }

    /// Routes each token from its softmax probabilities: `choose(row)` returns the token's
    /// (expert, weight) choices from its row of `width` probabilities.
    static func routeSoftmaxRows(_ logits: Tensor, width: Int, experts: Int, pool: ThreadPool? = nil,
                                 _ choose: (ArraySlice<Float>) -> [(expert: Int, weight: Float)]) -> Routing {
        let t = logits.count / max(1, width)
        let probs = softmax(logits, pool: pool)
        return routeRows(tokens: t, experts: experts, pool: pool) { tok in choose(probs[(tok * width)..<((tok + 1) * width)]) }
    }

    /// `weights` divided by their sum when `renormalize` (and the sum is positive).
    static func renormalized(_ weights: [Float], _ renormalize: Bool) -> [Float] {
        guard renormalize else { return weights }
        let s = weights.reduce(0, +)
        return s > 0 ? weights.map { $0 / s } : weights
    }

    /// Indices of the k largest of `values`, largest first, ties to the lower index.
    static func topK(_ values: ArraySlice<Float>, _ k: Int) -> [Int] {
        values.withUnsafeBufferPointer { Kernels.topKRow($0, k: k) }
    }
}

import Foundation
