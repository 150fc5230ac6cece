import MoE

/// A change to how a checkpoint routes at inference, for all its MoE layers or a range of them:
/// another number of experts per token, dynamic top-p on a top-k checkpoint ("Harder Tasks Need
/// More Experts", ROUTING.md §3), dropping chosen experts whose weight is below a threshold, and
/// renormalisation of the chosen weights on or off. What `--experts-per-token`, `--expert-top-p`,
/// `--min-experts`, `--max-experts`, `--expert-threshold`, `--renormalize` and `--moe-layers`
/// set on `generate`, `logits` and `bench`.
///
/// ```swift
/// var o = RoutingOverride()
/// o.expertsPerToken = 1
/// let options = try o.forwardOptions(for: model)
/// let logits = try model.forward(tokens, cache: &cache, options: options)
/// ```
public struct RoutingOverride: Sendable, Equatable {
    /// Experts per token for a top-k router (softmax or sigmoid scoring).
    public var expertsPerToken: Int?
    /// Dynamic top-p: the fewest experts whose probabilities sum past p, clamped to
    /// [minExperts, maxExperts] (on a scored group-limited router: over the normalised scores
    /// of the token's chosen groups, `ScoreTopPRouter`).
    public var topP: Float?
    public var minExperts: Int?, maxExperts: Int?
    /// Chosen experts with a weight below this are dropped (a token keeps its strongest).
    public var threshold: Float?
    /// Renormalise the chosen weights (nil: as the checkpoint does).
    public var renormalize: Bool?
    /// The layers changed (nil: every MoE layer).
    public var layers: ClosedRange<Int>?
    /// Experts removed per MoE layer (pruning at load, `MaskedRouter`), whatever `layers` says.
    public var skippedExperts: [Int: Set<Int>] = [:]

    public init() {}

    /// Whether this changes nothing.
    public var isEmpty: Bool {
        expertsPerToken == nil && topP == nil && threshold == nil && renormalize == nil && minExperts == nil && maxExperts == nil
            && skippedExperts.isEmpty
    }

    /// Whether this changes how the experts are chosen (anything but skipping).
    var changesSelection: Bool {
        expertsPerToken != nil || topP != nil || threshold != nil || renormalize != nil || minExperts != nil || maxExperts != nil
    }

    /// Per-call options routing `model`'s MoE layers as this says (and keeping `trace`). Every
    /// changed layer's router is built here, once, so a setting a router cannot take (top-p on a
    /// sigmoid router, a k past the experts) is an error now, naming the option.
    public func forwardOptions(for model: DecoderModel, trace: ((Int, Routing) -> Void)? = nil) throws(ModelError) -> ForwardOptions {
        var table: [Int: any Router] = [:]
        if !isEmpty {
            let routers = model.moeRouters
            if let layers {
                guard layers.lowerBound >= 0, layers.upperBound < model.spec.layers else {
                    throw bad("--moe-layers", "\(layers.lowerBound)-\(layers.upperBound) is outside the model's layers 0-\(model.spec.layers - 1)")
                }
                guard routers.keys.contains(where: layers.contains) else {
                    throw bad("--moe-layers", "layers \(layers.lowerBound)-\(layers.upperBound) have no MoE block")
                }
            }
            guard !routers.isEmpty else { throw bad("routing", "the model has no MoE layer to route") }
            for (layer, own) in routers {
                do throws(ModelError) {
                    var r = changesSelection && (layers?.contains(layer) ?? true) ? try router(replacing: own) : own
                    if let skip = skippedExperts[layer], !skip.isEmpty {
                        guard skip.allSatisfy({ (0..<own.expertCount).contains($0) }) else {
                            throw bad("--skip-experts", "layer \(layer) has experts 0..<\(own.expertCount); \(skip.sorted()) reaches past them")
                        }
                        guard skip.count < own.expertCount else { throw bad("--skip-experts", "would remove every expert of layer \(layer)") }
                        if let scored = r as? TopKSigmoidRouter { r = scored.excluding(skip) }
                        r = MaskedRouter(r, skipped: skip)
                    }
                    if changesSelection && (layers?.contains(layer) ?? true) || skippedExperts[layer] != nil { table[layer] = r }
                } catch let .invalidConfig(_, field, reason) {
                    throw .invalidConfig(path: model.checkpoint.weightsPath, field: field, reason: reason)
                }
            }
            for layer in skippedExperts.keys where routers[layer] == nil {
                throw .invalidConfig(path: model.checkpoint.weightsPath, field: "--skip-experts", reason: "layer \(layer) has no MoE block")
            }
        }
        let frozen = table
        return ForwardOptions(router: frozen.isEmpty ? nil : { layer, own in frozen[layer] ?? own }, trace: trace)
    }

    /// The router that replaces `own` under this override.
    public func router(replacing own: any Router) throws(ModelError) -> any Router {
        if let k = expertsPerToken, !(1...own.expertCount).contains(k) {
            throw bad("--experts-per-token", "must be in 1...\(own.expertCount) (the model's experts), got \(k)")
        }
        if let p = topP, !(p > 0 && p <= 1) { throw bad("--expert-top-p", "must be in (0, 1], got \(p)") }
        if let t = threshold, !(t >= 0 && t < 1) { throw bad("--expert-threshold", "must be in [0, 1), got \(t)") }
        for (v, name) in [(minExperts, "--min-experts"), (maxExperts, "--max-experts")] {
            if let v, !(1...own.expertCount).contains(v) { throw bad(name, "must be in 1...\(own.expertCount), got \(v)") }
        }
        if let lo = minExperts, let hi = maxExperts, lo > hi { throw bad("--min-experts", "\(lo) is above --max-experts \(hi)") }
        if topP == nil, minExperts != nil || maxExperts != nil { throw bad("--min-experts", "bounds the experts of --expert-top-p; give it too") }
        if topP != nil, expertsPerToken != nil { throw bad("--expert-top-p", "chooses its own number of experts: drop --experts-per-token") }

        var router: any Router
        switch own {
        case let r as TopKSoftmaxRouter:
            let renorm = renormalize ?? r.renormalize
            if let p = topP {
                router = TopPRouter(experts: r.expertCount, p: p, minExperts: minExperts ?? 1, maxExperts: maxExperts, renormalize: renorm)
            } else {
                router = TopKSoftmaxRouter(experts: r.expertCount, k: expertsPerToken ?? r.k, renormalize: renorm, devices: r.devices)
            }
        case let r as TopKSigmoidRouter:
            if let p = topP {
                router = ScoreTopPRouter(r, p: p, minExperts: minExperts ?? 1, maxExperts: maxExperts, renormalize: renormalize)
                break
            }
            let k = expertsPerToken ?? r.k
            guard k <= r.candidateCount else {
                throw bad("--experts-per-token", "must be at most \(r.candidateCount): the experts of the \(r.topkGroup) groups a token may use")
            }
            router = r.withK(k, renormalize: renormalize)
        default:
            guard expertsPerToken == nil, topP == nil, renormalize == nil else {
                throw bad("routing", "the '\(own.name)' router has no fixed top-k to change; only --expert-threshold applies to it")
            }
            router = own
        }
        if let t = threshold { router = ThresholdRouter(router, threshold: t, renormalize: renormalize ?? own.renormalizesChosenWeights) }
        return router
    }

    private func bad(_ option: String, _ reason: String) -> ModelError { .invalidConfig(path: "(options)", field: option, reason: reason) }
}

extension DecoderModel {
    /// Each MoE layer's own router, by layer index.
    public var moeRouters: [Int: any Router] {
        var out: [Int: any Router] = [:]
        for (i, layer) in layers.enumerated() { if case let .moe(moe) = layer.ffn { out[i] = moe.router } }
        return out
    }
}
