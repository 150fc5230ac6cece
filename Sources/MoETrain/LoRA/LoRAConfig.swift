import Foundation
import MoE

/// The `lora` section of a training config: plain LoRA on a frozen checkpoint, with PEFT's
/// meaning for every key, so the adapter saved is the one PEFT would train.
///
/// ```json
/// "lora": {"rank": 8, "alpha": 16, "dropout": 0.05, "target_modules": ["q_proj", "v_proj"]}
/// ```
/// `target_modules` is a list of module names, each matching a module whose dotted name is it
/// or ends in `.name` (PEFT's rule); a single string is a regular expression the whole module
/// name must match; `"all-linear"` is every linear projection but the LM head.
///
/// `target_parameters` (PEFT's key) adapts transformers 5's stacked expert tensors of every MoE
/// layer: `mlp.experts.gate_up_proj` (one A per expert shared by its gate and up rows) and
/// `mlp.experts.down_proj`, matched as PEFT matches them (the whole name, or a dotted suffix of
/// `model.layers.N.mlp.experts.<tensor>`). PEFT refuses dropout there, and so does this.
///
/// `kind` `mixlora` (MixLoRA) or `mole` (LLaVA-MoLE) turns every dense FFN into a mixture of
/// `experts` LoRA experts that share its frozen projections (ROUTING.md §9): expert e's
/// projection j is `W_j + scale · B_{e,j} A_{e,j}` for j in `expert_target_modules`, behind a
/// trainable linear router (std `router_init_range`). MixLoRA routes top-`top_k` of a softmax,
/// renormalised, with the Switch load-balance loss weighted `router_aux_loss_coef`; MoLE routes
/// top-1 with a router bias, its balance loss Σ_e mean(p_e) mean(onehot_e) weighted
/// `router_aux_loss_coef`. `target_modules` then adapts the other projections with plain LoRA.
public struct LoRAConfig: Codable, Sendable, Equatable {
    /// Which modules get an adapter.
    public enum Targets: Sendable, Equatable {
        case names([String]), regex(String), allLinear
    }

    public var rank = 8
    public var alpha: Float = 16
    /// Dropout on each adapter's input (PEFT's `lora_dropout`).
    public var dropout: Float = 0
    public var targetModules = Targets.names(["q_proj", "k_proj", "v_proj", "o_proj"])
    /// rsLoRA: scale alpha / √rank instead of alpha / rank.
    public var useRSLoRA = false
    /// Stacked expert tensors to adapt (PEFT's `target_parameters`).
    public var targetParameters: [String] = []

    /// The dtype the frozen projections are held in: `bf16`, `f16` or `f32` (the base widened as
    /// it loads, then narrowed); nil: the dtype they are stored in, any block format included
    /// (`Trainer` loads them so, `TrainableDecoder(path:frozenProjections:)`).
    public var baseDType: String?

    /// Plain LoRA, or a mixture of LoRA experts on each dense FFN.
    public enum Kind: String, Codable, Sendable, CaseIterable { case lora, mixlora, mole }
    public var kind = Kind.lora
    /// LoRA experts per FFN (MixLoRA's default 8, MoLE's 3) and experts per token (MoLE: 1).
    public var experts: Int?, topK: Int?
    /// The balance loss weight (MixLoRA 0.01, MoLE 0.05).
    public var routerAuxLossCoef: Float?
    public var routerInitRange: Float = 0.02
    /// The FFN projections each LoRA expert adapts.
    public var expertTargetModules = ["gate_proj", "up_proj", "down_proj"]

    /// Experts per FFN, top-k and balance weight, with each kind's defaults.
    public var mixtureExperts: Int { experts ?? (kind == .mole ? 3 : 8) }
    public var mixtureTopK: Int { kind == .mole ? 1 : topK ?? 2 }
    public var mixtureAuxLossCoef: Float { routerAuxLossCoef ?? (kind == .mole ? 0.05 : 0.01) }

    enum CodingKeys: String, CodingKey, CaseIterable {
        case rank, alpha, dropout, targetModules = "target_modules", useRSLoRA = "use_rslora"
        case kind, experts, topK = "top_k", routerAuxLossCoef = "router_aux_loss_coef", routerInitRange = "router_init_range"
        case expertTargetModules = "expert_target_modules", baseDType = "base_dtype", targetParameters = "target_parameters"
    }

    public init() {}

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = LoRAConfig()
        rank = try c.decodeIfPresent(Int.self, forKey: .rank) ?? d.rank
        alpha = try c.decodeIfPresent(Float.self, forKey: .alpha) ?? d.alpha
        dropout = try c.decodeIfPresent(Float.self, forKey: .dropout) ?? d.dropout
        useRSLoRA = try c.decodeIfPresent(Bool.self, forKey: .useRSLoRA) ?? d.useRSLoRA
        if let name = try c.decodeIfPresent(String.self, forKey: .kind) {
            guard let k = Kind(rawValue: name) else {
                throw DecodingError.dataCorruptedError(forKey: .kind, in: c, debugDescription: "'\(name)' is not one of lora, mixlora, mole")
            }
            kind = k
        }
        experts = try c.decodeIfPresent(Int.self, forKey: .experts)
        topK = try c.decodeIfPresent(Int.self, forKey: .topK)
        routerAuxLossCoef = try c.decodeIfPresent(Float.self, forKey: .routerAuxLossCoef)
        routerInitRange = try c.decodeIfPresent(Float.self, forKey: .routerInitRange) ?? d.routerInitRange
        expertTargetModules = try c.decodeIfPresent([String].self, forKey: .expertTargetModules) ?? d.expertTargetModules
        baseDType = try c.decodeIfPresent(String.self, forKey: .baseDType)
        targetParameters = try c.decodeIfPresent([String].self, forKey: .targetParameters) ?? []
        if let list = try? c.decodeIfPresent([String].self, forKey: .targetModules) {
            targetModules = .names(list)
        } else if let one = try c.decodeIfPresent(String.self, forKey: .targetModules) {
            targetModules = one == "all-linear" ? .allLinear : .regex(one)
        }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.container(keyedBy: CodingKeys.self)
        try c.encode(rank, forKey: .rank)
        try c.encode(alpha, forKey: .alpha)
        try c.encode(dropout, forKey: .dropout)
        try c.encode(useRSLoRA, forKey: .useRSLoRA)
        try c.encode(kind, forKey: .kind)
        try c.encodeIfPresent(experts, forKey: .experts)
        try c.encodeIfPresent(topK, forKey: .topK)
        try c.encodeIfPresent(routerAuxLossCoef, forKey: .routerAuxLossCoef)
        try c.encode(routerInitRange, forKey: .routerInitRange)
        try c.encode(expertTargetModules, forKey: .expertTargetModules)
        try c.encodeIfPresent(baseDType, forKey: .baseDType)
        if !targetParameters.isEmpty { try c.encode(targetParameters, forKey: .targetParameters) }
        switch targetModules {
        case let .names(list): try c.encode(list, forKey: .targetModules)
        case let .regex(pattern): try c.encode(pattern, forKey: .targetModules)
        case .allLinear: try c.encode("all-linear", forKey: .targetModules)
        }
    }

    /// The factor on `B A`: alpha / rank, or alpha / √rank with rsLoRA.
    public var scale: Float { useRSLoRA ? alpha / Float(rank).squareRoot() : alpha / Float(rank) }

    /// Checks ranges; throws naming the field (`lora.<key>`) and `path`.
    public func validate(path: String?) throws(MoEError) {
        func bad(_ f: String, _ r: String) -> MoEError { .invalidConfig(path: path, field: "lora.\(f)", reason: r) }
        guard (1...4096).contains(rank) else { throw bad("rank", "must be in 1...4096, got \(rank)") }
        guard alpha.isFinite && alpha > 0 else { throw bad("alpha", "must be positive and finite, got \(alpha)") }
        guard dropout >= 0 && dropout < 1 else { throw bad("dropout", "must be in [0, 1), got \(dropout)") }
        switch targetModules {
        case let .names(list):
            guard !list.isEmpty || !targetParameters.isEmpty, list.allSatisfy({ !$0.isEmpty }) else {
                throw bad("target_modules", "must name at least one module (or give target_parameters)")
            }
        case let .regex(pattern):
            guard (try? NSRegularExpression(pattern: pattern)) != nil else {
                throw bad("target_modules", "'\(pattern)' is not a regular expression")
            }
        case .allLinear: break
        }
        let stacked = ["gate_up_proj", "down_proj"]
        if let t = targetParameters.first(where: { t in !stacked.contains { t == $0 || t.hasSuffix("." + $0) } }) {
            throw bad("target_parameters", "'\(t)' is not a stacked expert tensor (mlp.experts.gate_up_proj, mlp.experts.down_proj)")
        }
        if !targetParameters.isEmpty && dropout > 0 {
            throw bad("dropout", "must be 0 with target_parameters (PEFT's ParamWrapper has no dropout), got \(dropout)")
        }
        if let b = baseDType, !["f32", "bf16", "f16"].contains(b) { throw bad("base_dtype", "must be f32, bf16 or f16, got '\(b)'") }
        guard kind != .lora else { return }
        let e = mixtureExperts
        guard (2...256).contains(e) else { throw bad("experts", "must be in 2...256, got \(e)") }
        if kind == .mole, let k = topK, k != 1 { throw bad("top_k", "MoLE routes each token to 1 expert, got \(k)") }
        guard (1...e).contains(mixtureTopK) else { throw bad("top_k", "must be in 1...\(e) (the experts), got \(mixtureTopK)") }
        let coef = mixtureAuxLossCoef
        guard coef.isFinite && coef >= 0 else { throw bad("router_aux_loss_coef", "must be finite and not negative, got \(coef)") }
        guard routerInitRange.isFinite && routerInitRange > 0 else { throw bad("router_init_range", "must be positive, got \(routerInitRange)") }
        let known: Set = ["gate_proj", "up_proj", "down_proj"]
        guard !expertTargetModules.isEmpty, let stray = Optional(expertTargetModules.filter { !known.contains($0) }), stray.isEmpty else {
            throw bad("expert_target_modules", "must be some of gate_proj, up_proj, down_proj, got \(expertTargetModules)")
        }
    }

    /// Whether the stacked expert tensor `name` (`model.layers.N.mlp.experts.gate_up_proj`) is
    /// one of `target_parameters`, by PEFT's rule: the whole name or a dotted suffix of it.
    public func targetsParameter(_ name: String) -> Bool {
        targetParameters.contains { name == $0 || name.hasSuffix("." + $0) }
    }

    /// Whether module `name` (dotted, as transformers names it) is a target, by PEFT's rules;
    /// `isHead` marks the LM head, which `all-linear` leaves out.
    public func targets(_ name: String, isHead: Bool) -> Bool {
        switch targetModules {
        case let .names(list):
            return list.contains { name == $0 || name.hasSuffix("." + $0) }
        case let .regex(pattern):
            guard let re = try? NSRegularExpression(pattern: "^(?:\(pattern))$") else { return false }
            return re.firstMatch(in: name, range: NSRange(name.startIndex..., in: name)) != nil
        case .allLinear:
            return !isHead
        }
    }
}
