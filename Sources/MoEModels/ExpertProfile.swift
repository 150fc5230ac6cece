import Foundation

/// How much each MoE layer uses each expert (`moe analyze` writes it as profile.json; expert
/// pruning and `--skip-experts` read it).
public struct ExpertProfile: Codable, Sendable, Equatable {
    /// Tokens the profile was measured on.
    public var tokens: Int
    /// Per MoE layer (its index as a string): each expert's share of the routed assignments.
    public var load: [String: [Double]]

    public init(tokens: Int, load: [String: [Double]]) {
        self.tokens = tokens
        self.load = load
    }

    /// Reads profile.json, its fields checked against `model` (layers, expert counts).
    public static func load(path: String, for model: DecoderModel) throws(ModelError) -> ExpertProfile {
        guard let data = FileManager.default.contents(atPath: path) else { throw .io(path: path, reason: "cannot read") }
        let profile: ExpertProfile
        do { profile = try JSONDecoder().decode(ExpertProfile.self, from: data) } catch {
            throw .invalidFile(path: path, field: "(json)", reason: "not a profile written by moe analyze: \(error)")
        }
        let routers = model.moeRouters
        for (key, shares) in profile.load {
            guard let layer = Int(key), let router = routers[layer] else {
                throw .invalidFile(path: path, field: "load.\(key)", reason: "the model has no MoE layer \(key)")
            }
            guard shares.count == router.expertCount, shares.allSatisfy({ $0.isFinite && $0 >= 0 }) else {
                throw .invalidFile(path: path, field: "load.\(key)", reason: "needs \(router.expertCount) non-negative shares, one per expert")
            }
        }
        guard Set(profile.load.keys) == Set(routers.keys.map(String.init)) else {
            throw .invalidFile(path: path, field: "load", reason: "covers layers \(profile.load.keys.sorted()); the model's MoE layers are \(routers.keys.sorted())")
        }
        return profile
    }

    /// Per MoE layer, the experts to skip so that `keep` remain (the least used go first; with
    /// `perLayer` false, one global cut by share across all layers, keeping at least
    /// `minimum` per layer). With `groups` > 1 (per layer only), each of the layer's contiguous
    /// expert groups keeps `keep / groups` of its own, so the groups stay equal.
    public func skipped(keep: Int, perLayer: Bool, minimum: Int, groups: Int = 1) -> [Int: Set<Int>] {
        var out: [Int: Set<Int>] = [:]
        if perLayer {
            for (key, shares) in load {
                let size = shares.count / max(1, groups), keepPerGroup = keep / max(1, groups)
                var skip = Set<Int>()
                for g in 0..<max(1, groups) {
                    let members = Array((g * size)..<((g + 1) * size))
                    let order = members.sorted { shares[$0] < shares[$1] || (shares[$0] == shares[$1] && $0 > $1) }
                    skip.formUnion(order.prefix(max(0, size - keepPerGroup)))
                }
                out[Int(key)!] = skip  // safe: load(path:for:) checked the keys
            }
            return out
        }
        // Global: keep the `keep x layers` largest shares overall.
        let all = load.flatMap { key, shares in shares.enumerated().map { (layer: Int(key)!, expert: $0.offset, share: $0.element) } }
        let ranked = all.sorted { $0.share > $1.share || ($0.share == $1.share && ($0.layer, $0.expert) < ($1.layer, $1.expert)) }
        let budget = keep * load.count
        var kept: [Int: Set<Int>] = [:]
        for item in ranked.prefix(budget) { kept[item.layer, default: []].insert(item.expert) }
        for (key, shares) in load {
            let layer = Int(key)!
            var keepSet = kept[layer] ?? []
            for e in shares.indices.sorted(by: { shares[$0] > shares[$1] }) where keepSet.count < minimum { keepSet.insert(e) }
            out[layer] = Set(shares.indices).subtracting(keepSet)
        }
        return out
    }
}
