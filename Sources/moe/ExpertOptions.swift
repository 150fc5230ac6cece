import ArgumentParser
import MoEGenerate
import MoEModels

/// The routing switches `generate`, `logits` and `bench` share (issue 18): another number of
/// experts per token, dynamic top-p, a weight threshold, renormalisation, and the layers they
/// apply to. Ranges that do not depend on the model are checked here (exit 64); the rest (k
/// past the model's experts, top-p on a sigmoid router) when the model is loaded (exit 1).
struct ExpertOptions: ParsableArguments {
    @Option(name: .customLong("experts-per-token"), help: "Experts per token in every MoE layer (changes a top-k checkpoint's k).")
    var expertsPerToken: Int?
    @Option(name: .customLong("expert-top-p"), help: "Dynamic top-p routing: the fewest experts whose probabilities pass p (softmax top-k checkpoints).")
    var expertTopP: Float?
    @Option(name: .customLong("min-experts"), help: "Fewest experts per token under --expert-top-p.") var minExperts: Int?
    @Option(name: .customLong("max-experts"), help: "Most experts per token under --expert-top-p.") var maxExperts: Int?
    @Option(name: .customLong("expert-threshold"), help: "Drop chosen experts whose routing weight is below this (a token keeps its strongest).")
    var expertThreshold: Float?
    @Flag(name: .customLong("renormalize"), inversion: .prefixedNo,
          help: "Renormalise the chosen experts' weights (default: as the checkpoint does).")
    var renormalize: Bool?
    @Option(name: .customLong("moe-layers"), help: "The layers these switches change: A-B or A (default: every MoE layer).")
    var moeLayers: String?
    @Option(name: .customLong("skip-experts"), help: "Remove experts at load: 1,3 (from every MoE layer) or 0:1,3;2:0 (per layer).")
    var skipExperts: String?
    @Option(name: .customLong("prune-profile"), help: "Remove each layer's least-used experts by a profile.json of moe analyze (with --keep or --keep-fraction).")
    var pruneProfile: String?
    @Option(help: "Experts to keep per MoE layer under --prune-profile.") var keep: Int?
    @Option(name: .customLong("keep-fraction"), help: "Fraction of each layer's experts to keep under --prune-profile.") var keepFraction: Double?
    @Flag(name: .customLong("per-layer"), help: "Under --prune-profile, keep exactly that many in every layer (default: one cut by share across layers, at least one each).")
    var perLayer = false

    mutating func validate() throws {
        if let k = expertsPerToken, k < 1 { throw ValidationError("--experts-per-token must be at least 1, got \(k)") }
        if let p = expertTopP, !(p > 0 && p <= 1) { throw ValidationError("--expert-top-p must be in (0, 1], got \(p)") }
        if let t = expertThreshold, !(t >= 0 && t < 1) { throw ValidationError("--expert-threshold must be in [0, 1), got \(t)") }
        if let v = minExperts, v < 1 { throw ValidationError("--min-experts must be at least 1, got \(v)") }
        if let v = maxExperts, v < 1 { throw ValidationError("--max-experts must be at least 1, got \(v)") }
        _ = try layers()
        if let skipExperts { _ = try Self.parseSkips(skipExperts) }
        if pruneProfile != nil, (keep == nil) == (keepFraction == nil) { throw ValidationError("--prune-profile needs one of --keep or --keep-fraction") }
        if pruneProfile == nil, keep != nil || keepFraction != nil || perLayer { throw ValidationError("--keep, --keep-fraction and --per-layer go with --prune-profile") }
        if pruneProfile != nil, skipExperts != nil { throw ValidationError("give --skip-experts or --prune-profile, not both") }
        if let keep, keep < 1 { throw ValidationError("--keep must be at least 1, got \(keep)") }
        if let f = keepFraction, !(f > 0 && f <= 1) { throw ValidationError("--keep-fraction must be in (0, 1], got \(f)") }
    }

    /// "1,3" (layer nil: every MoE layer) or "0:1,3;2:0" as (layer, experts) pairs.
    static func parseSkips(_ spec: String) throws -> [(layer: Int?, experts: Set<Int>)] {
        func ids(_ s: Substring) throws -> Set<Int> {
            let list = try s.split(separator: ",").map { part -> Int in
                guard let v = Int(part.trimmingCharacters(in: .whitespaces)), v >= 0 else {
                    throw ValidationError("--skip-experts: '\(part)' is not an expert id")
                }
                return v
            }
            guard !list.isEmpty else { throw ValidationError("--skip-experts: '\(spec)' names no expert") }
            return Set(list)
        }
        guard spec.contains(":") else { return [(nil, try ids(Substring(spec)))] }
        return try spec.split(separator: ";").map { group in
            let parts = group.split(separator: ":", maxSplits: 1)
            guard parts.count == 2, let layer = Int(parts[0].trimmingCharacters(in: .whitespaces)), layer >= 0 else {
                throw ValidationError("--skip-experts: '\(group)' is not LAYER:EXPERT,EXPERT")
            }
            return (layer, try ids(parts[1]))
        }
    }

    /// `--moe-layers` as a range.
    func layers() throws -> ClosedRange<Int>? {
        guard let moeLayers else { return nil }
        let parts = moeLayers.split(separator: "-", omittingEmptySubsequences: false).map { Int($0) }
        guard (1...2).contains(parts.count), parts.allSatisfy({ $0 != nil && $0! >= 0 }), parts.first!! <= parts.last!! else {
            throw ValidationError("--moe-layers: '\(moeLayers)' is not A-B or A (layer indices from 0, A <= B)")
        }
        return parts.first!!...parts.last!!
    }

    /// The library's override for these switches on `model`.
    func override(for model: DecoderModel) throws -> RoutingOverride {
        var o = RoutingOverride()
        o.expertsPerToken = expertsPerToken
        o.topP = expertTopP
        o.minExperts = minExperts
        o.maxExperts = maxExperts
        o.threshold = expertThreshold
        o.renormalize = renormalize
        o.layers = try layers()
        let moe = model.moeRouters
        if let skipExperts {
            for (layer, experts) in try Self.parseSkips(skipExperts) {
                for l in layer.map({ [$0] }) ?? moe.keys.sorted() { o.skippedExperts[l, default: []].formUnion(experts) }
            }
        }
        if let pruneProfile {
            let profile = try ExpertProfile.load(path: pruneProfile, for: model)
            let experts = moe.values.map(\.expertCount).max() ?? 1
            let kept = keep ?? max(1, Int((keepFraction ?? 1) * Double(experts) + 0.5))
            o.skippedExperts = profile.skipped(keep: min(kept, experts), perLayer: perLayer, minimum: 1, groups: perLayer ? max(1, model.spec.groups) : 1)
        }
        return o
    }
}

/// The decoding switches `generate` and `perplexity --synthetic` share: SCMoE self-contrast
/// decoding and its parameters (ROUTING.md §5; defaults the reference code's).
struct DecodingOptions: ParsableArguments {
    @Option(help: "standard, or scmoe (self-contrast against a weak pass routed to one lower-ranked expert).")
    var decoding = "standard"
    @Option(name: .customLong("scmoe-rank"), help: "SCMoE: the weak pass's expert rank, from 0 (default 2, the third-ranked).")
    var scmoeRank = 2
    @Option(name: .customLong("scmoe-alpha"), help: "SCMoE: plausibility, tokens below alpha x the strong pass's best are excluded.")
    var scmoeAlpha: Float = 0.1
    @Option(name: .customLong("scmoe-beta"), help: "SCMoE: how strongly the weak pass is subtracted.")
    var scmoeBeta: Float = 0.5

    mutating func validate() throws {
        guard ["standard", "scmoe"].contains(decoding) else { throw ValidationError("--decoding: '\(decoding)' is not standard or scmoe") }
        if scmoeRank < 0 { throw ValidationError("--scmoe-rank must not be negative, got \(scmoeRank)") }
        if !(scmoeAlpha > 0 && scmoeAlpha <= 1) { throw ValidationError("--scmoe-alpha must be in (0, 1], got \(scmoeAlpha)") }
        if !(scmoeBeta >= 0 && scmoeBeta.isFinite) { throw ValidationError("--scmoe-beta must be finite and not negative, got \(scmoeBeta)") }
    }

    /// The library's setting (nil: standard decoding).
    var selfContrast: SelfContrast? {
        decoding == "scmoe" ? SelfContrast(weakRank: scmoeRank, alpha: scmoeAlpha, beta: scmoeBeta) : nil
    }
}
