import Foundation
import MoECore
import MoEModels

/// Trainable LoRA adapters on a frozen `TrainableDecoder` (PEFT's plain LoRA): each targeted
/// projection W_0 [out, in] gains A [r, in] and B [out, r], and computes
/// `x W_0ᵀ + scale · (dropout(x) Aᵀ) Bᵀ`. Only A and B get gradients and optimiser state.
///
/// Saved as PEFT saves an adapter (`adapter_config.json`, `adapter_model.safetensors` with
/// `base_model.model.<module>.lora_A.weight`), so PEFT, `moe generate --adapter` and
/// `moe merge` read it.
public final class LoRAModules: @unchecked Sendable {
    /// One adapted projection.
    public struct Module {
        /// The projection's Hugging Face module name (`model.layers.0.self_attn.q_proj`).
        public let name: String
        public let a: Variable, b: Variable
        public let scale: Float
    }

    public let config: LoRAConfig
    /// Every adapter, in model order.
    public let modules: [Module]
    /// Module index by the base weight's variable.
    let byBase: [ObjectIdentifier: Int]
    /// The seed of the next forward's dropout masks (each module mixes in its index); nil runs
    /// without dropout (evaluation, generation).
    public var dropoutSeed: UInt64?

    /// The dense FFNs turned into mixtures of LoRA experts (MixLoRA, MoLE), by layer.
    public let mixtures: [Int: LoRAMixture]
    /// The factor on the mixtures' balance losses: a micro-batch's share of an accumulated step.
    public var auxScale: Float = 1

    /// The adapters on stacked expert tensors (PEFT `target_parameters`), per layer and tensor.
    public let stacked: [StackedGroup]
    /// Whether the family's stacked `gate_up_proj` interleaves gate and up rows (GPT-OSS).
    let interleavedGateUp: Bool
    /// The stacked groups' adapters by the expert projection weight they adapt.
    let stackedByBase: [ObjectIdentifier: ExpertAdapters.Adapter]

    init(config: LoRAConfig, modules: [Module], byBase: [ObjectIdentifier: Int], mixtures: [Int: LoRAMixture] = [:],
         stacked: [StackedGroup] = [], interleavedGateUp: Bool = false, stackedByBase: [ObjectIdentifier: ExpertAdapters.Adapter] = [:]) {
        self.config = config
        self.modules = modules
        self.byBase = byBase
        self.mixtures = mixtures
        self.stacked = stacked
        self.interleavedGateUp = interleavedGateUp
        self.stackedByBase = stackedByBase
    }

    /// The adapter on the projection whose weight is `weight`, with its index.
    func module(for weight: Variable) -> (index: Int, module: Module)? {
        byBase[ObjectIdentifier(weight)].map { ($0, modules[$0]) }
    }

    /// The adapters on a MoE layer's routed experts, or nil when none has one.
    func experts(of moe: MoEParameters) -> ExpertAdapters? {
        func find(_ ws: [Variable]) -> [ExpertAdapters.Adapter?] {
            ws.map { w in module(for: w).map { ($0.module.a, $0.module.b, $0.module.scale) } ?? stackedByBase[ObjectIdentifier(w)] }
        }
        let adapters = ExpertAdapters(gate: find(moe.gate), up: find(moe.up), down: find(moe.down),
                                      dropout: expertDropout(salt: (moe.gate.first.flatMap { module(for: $0)?.index }) ?? 0))
        return adapters.isEmpty ? nil : adapters
    }

    /// The dropout of a layer's expert adapters in this forward (nil: none), `salt` telling
    /// layers apart.
    func expertDropout(salt: Int) -> (p: Float, seed: UInt64)? {
        guard let seed = dropoutSeed, config.dropout > 0 else { return nil }
        return (config.dropout, seed &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(salt) &* 0x1000_0000_01B3 &+ 0x5EED)
    }

    /// The adapters' variables (every one decayed, as PEFT's trainer decays them).
    var parameters: [(variable: Variable, decay: Bool)] {
        modules.flatMap { [($0.a, true), ($0.b, true)] } + stacked.flatMap { $0.variables.map { ($0, true) } }
            + mixtures.keys.sorted().flatMap { l in mixtures[l].map { m in [(m.router, true)] + (m.routerBias.map { [($0, false)] } ?? []) } ?? [] }
    }

    /// Each adapter tensor's variable under its PEFT name (a stacked group's per expert: the
    /// PEFT name with `.expert.E`, and `.gate`/`.up` for the two halves of a gate_up B).
    public var namedVariables: [(name: String, variable: Variable)] {
        modules.flatMap { [(Self.peftName($0.name, "A"), $0.a), (Self.peftName($0.name, "B"), $0.b)] }
            + stacked.flatMap { namedVariables(of: $0) }
            + mixtures.keys.sorted().flatMap { l in mixtures[l].map { $0.namedVariables } ?? [] }
    }

    /// `base_model.model.<module>.lora_A.weight` (or `lora_B`).
    static func peftName(_ module: String, _ which: String) -> String { "base_model.model.\(module).lora_\(which).weight" }

    /// The same adapters behind new variables over the same values (gradients of their own),
    /// keyed by `rebase`'s variables for the replica's base weights.
    func replica(rebase: [ObjectIdentifier: Variable]) -> LoRAModules {
        let copies = modules.map { Module(name: $0.name, a: Variable($0.a.value), b: Variable($0.b.value), scale: $0.scale) }
        var keys: [ObjectIdentifier: Int] = [:]
        for (base, index) in byBase { if let v = rebase[base] { keys[ObjectIdentifier(v)] = index } }
        var fresh: [ObjectIdentifier: Variable] = [:]  // one copy of each stacked variable (gate and up share A)
        func copy(_ v: Variable) -> Variable {
            if let c = fresh[ObjectIdentifier(v)] { return c }
            let c = Variable(v.value)
            fresh[ObjectIdentifier(v)] = c
            return c
        }
        let groups = stacked.map { StackedGroup(layer: $0.layer, parameter: $0.parameter, scale: $0.scale, a: $0.a.map(copy), b: $0.b.map { $0.map(copy) }) }
        var stackedKeys: [ObjectIdentifier: ExpertAdapters.Adapter] = [:]
        for (base, adapter) in stackedByBase {
            if let v = rebase[base] { stackedKeys[ObjectIdentifier(v)] = (copy(adapter.a), copy(adapter.b), adapter.scale) }
        }
        let r = LoRAModules(config: config, modules: copies, byBase: keys,
                            mixtures: mixtures.mapValues { $0.replica(rebase: rebase) },
                            stacked: groups, interleavedGateUp: interleavedGateUp, stackedByBase: stackedKeys)
        r.dropoutSeed = dropoutSeed
        r.auxScale = auxScale
        return r
    }

    /// Replaces every adapter tensor with `tensor(peftName)` (widened to f32), checking shapes
    /// (`MoECoreError.invalidValue` names the tensor).
    public func load(_ tensor: (String) throws -> Tensor) throws {
        for (name, v) in plainNamedVariables { try v.load(tensor(name), name: name) }
        for g in stacked { try load(g, tensor) }
    }

    /// The adapter's tensors as PEFT saves them, from `value` of each variable (its value, or its
    /// gradient: nil counts as zeros): stacked groups stacked, every other variable as it is.
    public func peftTensors(_ value: (Variable) -> Tensor?) -> [(name: String, tensor: Tensor)] {
        plainNamedVariables.map { ($0.name, value($0.variable) ?? Tensor(zeros: $0.variable.shape)) } + stackedPEFTTensors(value)
    }

    /// `namedVariables` but the stacked groups': the tensors stored under their own names.
    private var plainNamedVariables: [(name: String, variable: Variable)] {
        let inGroups = Set(stacked.flatMap { $0.variables.map(ObjectIdentifier.init) })
        return namedVariables.filter { !inGroups.contains(ObjectIdentifier($0.variable)) }
    }

    /// `f` as the decimal it prints as (0.01, not 0.009999999776 as Double(f) would give).
    static func decimal(_ f: Float) -> Double { Double("\(f)") ?? Double(f) }

    /// Writes the adapter as PEFT does into folder `dir` (created if absent): adapter_config.json
    /// (`base` as `base_model_name_or_path`, the adapted modules by full name as
    /// `target_modules`) and adapter_model.safetensors.
    public func save(to dir: String, base: String?) throws {
        var config: [String: Any] = [
            "r": self.config.rank, "lora_alpha": Self.decimal(self.config.alpha), "lora_dropout": Self.decimal(self.config.dropout),
            "use_rslora": self.config.useRSLoRA, "target_modules": modules.map(\.name).filter { !$0.contains(".lora_experts.") },
        ]
        if !stacked.isEmpty { config["target_parameters"] = Array(Set(self.config.targetParameters)).sorted() }
        if self.config.kind != .lora {  // MoEKit's mixture format (README, "LoRA fine-tuning")
            config["peft_type"] = "MIXLORA"
            config["routing_strategy"] = self.config.kind.rawValue
            config["num_experts"] = self.config.mixtureExperts
            config["top_k"] = self.config.mixtureTopK
            config["router_aux_loss_coef"] = Self.decimal(self.config.mixtureAuxLossCoef)
            config["expert_target_modules"] = self.config.expertTargetModules
            config["mixture_modules"] = mixtures.keys.sorted().compactMap { mixtures[$0]?.module }
        }
        try Self.writePEFTFolder(dir, config: config, base: base, tensors: peftTensors { $0.value })
    }

    /// Writes a PEFT adapter folder: adapter_config.json (PEFT's fixed fields for a plain LoRA
    /// adapter with `config`'s on top, `base` as `base_model_name_or_path`) and
    /// adapter_model.safetensors holding `tensors`. Creates `dir` if absent.
    static func writePEFTFolder(_ dir: String, config: [String: Any], base: String?, tensors: [(name: String, tensor: Tensor)]) throws(ModelError) {
        var json: [String: Any] = [
            "peft_type": "LORA", "task_type": "CAUSAL_LM", "bias": "none", "fan_in_fan_out": false, "inference_mode": true,
            "init_lora_weights": true, "use_dora": false, "use_rslora": false, "lora_dropout": 0.0,
            "rank_pattern": [String: Any](), "alpha_pattern": [String: Any](), "modules_to_save": NSNull(),
            "base_model_name_or_path": base ?? NSNull(), "peft_version": "0.21.2",
        ]
        json.merge(config) { $1 }
        guard let data = try? JSONSerialization.data(withJSONObject: json, options: [.prettyPrinted, .sortedKeys]) else {
            throw .io(path: dir, reason: "cannot encode adapter_config.json")
        }
        do { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) } catch {
            throw .io(path: dir, reason: "cannot create: \(systemReason(error))")
        }
        try AtomicFile.write(data, to: (dir as NSString).appendingPathComponent("adapter_config.json"))
        try SafetensorsWriter.write(tensors, metadata: ["format": "pt"], to: (dir as NSString).appendingPathComponent("adapter_model.safetensors"))
    }
}

extension TrainableDecoder {
    /// Every projection an adapter may train on, under its Hugging Face module name: attention
    /// (and multi-head latent attention's), the router, dense FFNs, shared experts and their
    /// gates, each routed expert, and the LM head (last).
    var adaptableProjections: [(name: String, weight: Variable, isHead: Bool)] {
        var linear = Set<ObjectIdentifier>()
        func add(_ v: Variable?) { if let v { linear.insert(ObjectIdentifier(v)) } }
        for l in layers {
            [l.wq, l.wk, l.wv, l.wo, l.latent?.qA].forEach(add)
            if let moe = l.moe {
                if case let .linear(w) = moe.router { add(w) }
                (moe.gate + moe.up + moe.down).forEach(add)
            }
            for f in [l.dense, l.shared].compactMap({ $0 }) { [f.gate, f.up, f.down, f.outputGate].forEach(add) }
        }
        let head = lmHead === embed ? nil : ObjectIdentifier(lmHead)
        if let head { linear.insert(head) }
        return orderedVariables.compactMap { name, v in
            guard linear.contains(ObjectIdentifier(v)), name.hasSuffix(".weight") else { return nil }
            return (String(name.dropLast(".weight".count)), v, ObjectIdentifier(v) == head)
        }
    }

    /// Freezes every weight of the model and puts fresh adapters on the projections `config`
    /// targets: A drawn as PEFT draws it (Kaiming-uniform, bound 1/√in) from `seed`, B zero, so
    /// the adapted model starts equal to the base. Throws naming `path`'s `lora.target_modules`
    /// when nothing matches, or a stacked family's routed experts.
    public func attachLoRA(_ config: LoRAConfig, seed: UInt64, path: String? = nil) throws(ModelError) {
        let mixed = config.kind == .lora ? [] : try mixtureLayers(path: path)
        let ffns = Set(mixed.map { spec.names.denseFFN($0) + "." })
        let targets = adaptableProjections.filter { p in
            config.targets(p.name, isHead: p.isHead) && !ffns.contains { p.name.hasPrefix($0) }  // the FFN's are the experts'
        }
        func fresh(_ i: Int, _ weight: Variable) -> (a: Tensor, b: Tensor, scale: Float) {
            let fanIn = weight.shape[1], bound = 1 / Float(fanIn).squareRoot()
            let a = Tensor(randomUniform: [config.rank, fanIn], in: -bound...bound, seed: seed &* 0x2545_F491 &+ UInt64(i))
            return (a, Tensor(zeros: [weight.shape[0], config.rank]), config.scale)
        }
        try attach(config: config, targets: targets, allowEmpty: !mixed.isEmpty || !config.targetParameters.isEmpty, path: path) { i, _, weight in
            fresh(i, weight)
        }
        let stacked = try freshStackedGroups(config, seed: seed, path: path)
        narrowFrozenProjections(to: frozenDType(config))
        guard !mixed.isEmpty || !stacked.groups.isEmpty, let plain = lora else { return }
        var modules = plain.modules, mixtures: [Int: LoRAMixture] = [:], drawn = modules.count
        for layer in mixed {
            guard let dense = layers[layer].dense else { continue }
            mixtures[layer] = LoRAMixture(config: config, module: spec.names.denseFFN(layer), ffn: dense, seed: seed &+ UInt64(layer) &* 7919,
                                          modules: &modules) { weight in
                drawn += 1
                return fresh(drawn, weight)
            }
        }
        lora = LoRAModules(config: config, modules: modules, byBase: plain.byBase, mixtures: mixtures, stacked: stacked.groups,
                           interleavedGateUp: spec.names.stackedLayout == .interleavedInputMajor, stackedByBase: stacked.byBase)
    }

    /// The dtype `config` holds the frozen projections in: its `base_dtype`, else the stored
    /// dtype config.json names (`torch_dtype` or `dtype`: bfloat16 or float16), else f32.
    func frozenDType(_ config: LoRAConfig) -> DType {
        let stored = (sourceConfig?["torch_dtype"] ?? sourceConfig?["dtype"]) as? String
        switch config.baseDType ?? ["bfloat16": "bf16", "float16": "f16"][stored ?? ""] ?? "f32" {
        case "bf16": return .bf16
        case "f16": return .f16
        default: return .f32
        }
    }

    /// Holds every frozen projection (not the embedding, norms or biases) in `dtype`: the
    /// forward reads it as it is, the backward widens each for its product, so a bf16 base
    /// takes half the memory of an f32 one.
    func narrowFrozenProjections(to dtype: DType) {
        guard dtype != .f32 else { return }
        for p in adaptableProjections where !p.weight.requiresGrad && p.weight.value.dtype == .f32 {
            p.weight.value = p.weight.value.converted(to: dtype)
        }
    }

    /// The layers whose dense FFN a `mixlora` or `mole` config turns into a mixture: every dense
    /// FFN layer; a typed error naming `lora.kind` for a model with none (an MoE of routed
    /// experts only).
    func mixtureLayers(path: String?) throws(ModelError) -> [Int] {
        let dense = layers.indices.filter { layers[$0].dense != nil }
        guard !dense.isEmpty else {
            throw .invalidConfig(path: path ?? "(training config)", field: "lora.kind",
                                 reason: "MixLoRA and MoLE put their LoRA experts on dense FFNs, and this \(spec.modelType) has none (every layer is an MoE)")
        }
        return dense
    }

    /// Freezes the model and attaches the adapter PEFT saved in `adapter` as trainable
    /// adapters (to train it further, or to check its gradients): each of its modules must be
    /// an adaptable projection of this model, with A and B of matching shapes; a MIXLORA
    /// adapter's mixtures go on the dense FFNs they name (`config` gives their balance weight).
    public func attachLoRA(_ adapter: LoRAAdapterFolder, config: LoRAConfig = LoRAConfig()) throws(ModelError) {
        let weightsPath = (adapter.path as NSString).appendingPathComponent("adapter_model.safetensors")
        let all = adaptableProjections
        let known = Set(all.map(\.name))
        if let stray = adapter.modules.keys.sorted().first(where: { !known.contains($0) }) {
            throw .invalidFile(path: weightsPath, field: stray, reason: "is not a projection of this model that LoRA training adapts")
        }
        try attach(config: config, targets: all.filter { adapter.modules[$0.name] != nil }, allowEmpty: !adapter.stacked.isEmpty || !adapter.mixtures.isEmpty,
                   path: adapter.path) { (_, name, weight) throws(ModelError) in
            guard let m = adapter.modules[name], !m.isEmbedding else { preconditionFailure("filtered above") }
            guard m.a.shape[1] == weight.shape[1], m.b.shape[0] == weight.shape[0] else {
                throw .invalidFile(path: weightsPath, field: LoRAModules.peftName(name, "B"),
                                   reason: "A \(m.a.shape) and B \(m.b.shape) do not fit the weight \(weight.shape)")
            }
            return (m.a.converted(to: .f32), m.b.converted(to: .f32), m.scale)
        }
        guard !adapter.stacked.isEmpty || !adapter.mixtures.isEmpty, let plain = lora else { return }
        let stacked = try stackedGroups(of: adapter)
        var modules = plain.modules, mixtures: [Int: LoRAMixture] = [:]
        for (i, l) in layers.enumerated() {
            guard let dense = l.dense, let saved = adapter.mixtures[spec.names.denseFFN(i)] else { continue }
            for (list, weight) in [(saved.gate, dense.gate), (saved.up, dense.up), (saved.down, dense.down)] {
                if let m = list.compactMap({ $0 }).first(where: { $0.a.shape[1] != weight.shape[1] || $0.b.shape[0] != weight.shape[0] }) {
                    throw .invalidFile(path: adapter.path, field: m.name, reason: "A \(m.a.shape) and B \(m.b.shape) do not fit the weight \(weight.shape)")
                }
            }
            mixtures[i] = LoRAMixture(saved: saved, config: config, ffn: dense, modules: &modules)
        }
        if let stray = adapter.mixtures.keys.sorted().first(where: { m in !mixtures.values.contains { $0.module == m } }) {
            throw .invalidFile(path: adapter.path, field: stray, reason: "is a mixture on a module that is not a dense FFN of this model")
        }
        lora = LoRAModules(config: config, modules: modules, byBase: plain.byBase, mixtures: mixtures, stacked: stacked.groups,
                           interleavedGateUp: spec.names.stackedLayout == .interleavedInputMajor, stackedByBase: stacked.byBase)
    }

    private func attach(config: LoRAConfig, targets: [(name: String, weight: Variable, isHead: Bool)], allowEmpty: Bool = false,
                        path: String?, make: (Int, String, Variable) throws(ModelError) -> (a: Tensor, b: Tensor, scale: Float)) throws(ModelError) {
        guard !targets.isEmpty || allowEmpty else {
            let some = adaptableProjections.prefix(8).map(\.name).joined(separator: ", ")
            throw .invalidConfig(path: path ?? "(training config)", field: "lora.target_modules", reason: "matches no projection of the model (some it has: \(some))")
        }
        if spec.names.stackedLayout == .interleavedInputMajor, let e = targets.first(where: { $0.name.contains(".experts.") }) {
            throw .invalidConfig(path: path ?? "(training config)", field: "lora.target_modules", reason: "\(e.name): this family stores its experts stacked, and PEFT has no per-expert module for them")
        }
        for p in parameters { p.variable.requiresGrad = false; p.variable.grad = nil }
        var modules: [LoRAModules.Module] = [], byBase: [ObjectIdentifier: Int] = [:]
        for (i, t) in targets.enumerated() {
            let (a, b, scale) = try make(i, t.name, t.weight)
            byBase[ObjectIdentifier(t.weight)] = modules.count
            modules.append(.init(name: t.name, a: Variable(a), b: Variable(b), scale: scale))
        }
        lora = LoRAModules(config: config, modules: modules, byBase: byBase)
    }

    /// `x Wᵀ (+ b)`, plus W's adapter when it has one.
    func project(_ x: Variable, _ w: Variable, bias: Variable? = nil, tape: Tape) -> Variable {
        adapted(tape.linear(x, w, bias: bias), input: x, weight: w, tape: tape)
    }

    /// `x W_iᵀ` for each W_i (one batch), each plus its adapter when it has one.
    func projections(_ x: Variable, _ ws: [Variable], tape: Tape) -> [Variable] {
        zip(tape.linears(x, ws), ws).map { adapted($0, input: x, weight: $1, tape: tape) }
    }

    /// `y` plus the adapter on `weight` applied to `input`, or `y` when it has none.
    private func adapted(_ y: Variable, input x: Variable, weight: Variable, tape: Tape) -> Variable {
        guard let lora, let (index, m) = lora.module(for: weight) else { return y }
        var input = x
        if let seed = lora.dropoutSeed, lora.config.dropout > 0 {
            input = tape.dropout(x, p: lora.config.dropout, seed: seed &* 0x9E37_79B9_7F4A_7C15 &+ UInt64(index))
        }
        return tape.lora(y, input: input, a: m.a, b: m.b, scale: m.scale)
    }
}
