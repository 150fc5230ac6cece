import Foundation
import MoE
import MoECore
import MoEModels

/// Routing statistics gathered from a model's routing traces over a corpus (`moe analyze`):
/// per MoE layer the expert load, expert co-activation, the histogram of experts per token,
/// OpenMoE's context-independence (how consistently a token id goes to the same top expert
/// across contexts), where in a window capacity dropped tokens, and each labelled group's
/// (synthetic task's) expert distribution. `profile` is what expert pruning reads.
public final class RoutingAnalysis: @unchecked Sendable {
    /// One MoE layer's counts.
    public struct Layer: Encodable, Sendable {
        public var layer: Int
        public var experts: Int
        /// Tokens routed to each expert.
        public var load: [Int]
        /// Tokens that chose both i and j (i != j), row-major E x E.
        public var coactivation: [Int]
        /// Tokens by how many experts they got.
        public var expertsPerTokenHistogram: [Int: Int]
        /// Per group label: tokens routed to each expert, and the tokens in the group.
        public var loadByGroup: [String: [Int]]
        public var tokensByGroup: [String: Int]
        /// Dropped (token, expert) assignments by position in the window.
        public var droppedByPosition: [Int]
        /// Per token id: how often each expert was its top choice.
        var topByTokenID: [Int: [Int: Int]]

        enum CodingKeys: String, CodingKey {
            case layer, experts, load, coactivation, expertsPerTokenHistogram, loadByGroup, tokensByGroup, droppedByPosition
            case expertsPerToken, tokenConsistency, expertsPerTokenByGroup
        }

        /// Mean experts per token of each group (task): how a top-p or null-expert router spends
        /// experts on each.
        public var expertsPerTokenByGroup: [String: Double] {
            loadByGroup.mapValues { $0.reduce(0, +) }.reduce(into: [:]) { out, item in
                out[item.key] = Double(item.value) / Double(max(1, tokensByGroup[item.key] ?? 0))
            }
        }

        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(layer, forKey: .layer)
            try c.encode(experts, forKey: .experts)
            try c.encode(load, forKey: .load)
            try c.encode(coactivation, forKey: .coactivation)
            try c.encode(Dictionary(uniqueKeysWithValues: expertsPerTokenHistogram.map { (String($0.key), $0.value) }), forKey: .expertsPerTokenHistogram)
            try c.encode(loadByGroup, forKey: .loadByGroup)
            try c.encode(tokensByGroup, forKey: .tokensByGroup)
            try c.encode(droppedByPosition, forKey: .droppedByPosition)
            try c.encode(expertsPerToken, forKey: .expertsPerToken)
            try c.encode(tokenConsistency, forKey: .tokenConsistency)
            try c.encode(expertsPerTokenByGroup, forKey: .expertsPerTokenByGroup)
        }

        /// Mean experts per token.
        public var expertsPerToken: Double {
            let tokens = expertsPerTokenHistogram.values.reduce(0, +)
            return tokens == 0 ? 0 : Double(expertsPerTokenHistogram.reduce(0) { $0 + $1.key * $1.value }) / Double(tokens)
        }

        /// OpenMoE's context-independent specialisation: over the token ids seen at least twice,
        /// the share of their occurrences whose top expert is that id's most frequent one (1 when
        /// every id always goes to one expert; about 1/E for routing blind to the token).
        public var tokenConsistency: Double {
            var same = 0, total = 0
            for counts in topByTokenID.values {
                let n = counts.values.reduce(0, +)
                guard n >= 2 else { continue }
                same += counts.values.max() ?? 0
                total += n
            }
            return total == 0 ? 0 : Double(same) / Double(total)
        }
    }

    public private(set) var layers: [Int: Layer] = [:]
    public private(set) var tokens = 0

    public init() {}

    /// Records one MoE layer's routing of `ids` (the token ids at its rows, window positions
    /// from 0), under the group label `group` (a task name, or "text").
    public func record(layer: Int, routing r: Routing, ids: [Int], group: String) {
        let e = r.expertCount
        var l = layers[layer] ?? Layer(layer: layer, experts: e, load: Array(repeating: 0, count: e),
                                       coactivation: Array(repeating: 0, count: e * e), expertsPerTokenHistogram: [:],
                                       loadByGroup: [:], tokensByGroup: [:], droppedByPosition: [], topByTokenID: [:])
        var groupLoad = l.loadByGroup[group] ?? Array(repeating: 0, count: e)
        for t in 0..<r.tokenCount {
            let chosen = r.experts(of: t)
            l.expertsPerTokenHistogram[chosen.count, default: 0] += 1
            for a in chosen {
                l.load[a] += 1
                groupLoad[a] += 1
                for b in chosen where b != a { l.coactivation[a * e + b] += 1 }
            }
            if let top = chosen.first, t < ids.count { l.topByTokenID[ids[t], default: [:]][top, default: 0] += 1 }
            let dropped = r.dropped[t].count
            if dropped > 0 {
                if l.droppedByPosition.count <= t { l.droppedByPosition += Array(repeating: 0, count: t + 1 - l.droppedByPosition.count) }
                l.droppedByPosition[t] += dropped
            }
        }
        l.loadByGroup[group] = groupLoad
        l.tokensByGroup[group, default: 0] += r.tokenCount
        layers[layer] = l
    }

    /// Counts `n` tokens run (once per forward, not per layer).
    public func countTokens(_ n: Int) { tokens += n }

    /// Runs `model` over `windows` (token ids, each from an empty cache, labelled) with routing
    /// traces on, recording every MoE layer. Returns the seconds spent in forward passes.
    @discardableResult
    public func run(model: DecoderModel, windows: [(ids: [Int], group: String)], routing: RoutingOverride = RoutingOverride()) throws(ModelError) -> Double {
        var seconds = 0.0
        for (ids, group) in windows where !ids.isEmpty {
            let options = try routing.forwardOptions(for: model) { [self] layer, r in record(layer: layer, routing: r, ids: ids, group: group) }
            var cache = model.makeCache(capacity: ids.count)
            let t0 = DispatchTime.now().uptimeNanoseconds
            _ = try model.forward(ids, cache: &cache, lastOnly: true, options: options)
            seconds += Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9
            countTokens(ids.count)
        }
        return seconds
    }

    /// The pruning profile: each MoE layer's share of routed assignments per expert.
    public var profile: ExpertProfile {
        ExpertProfile(tokens: tokens, load: Dictionary(uniqueKeysWithValues: layers.map { layer, l in
            let total = max(1, l.load.reduce(0, +))
            return (String(layer), l.load.map { Double($0) / Double(total) })
        }))
    }
}
