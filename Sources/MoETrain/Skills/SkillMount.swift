import Foundation
import MoECore
import MoEModels

extension SkillSelection {
    /// How `mount` trains its routers.
    public struct MountOptions: Sendable {
        /// Skills each token's FFN mixes (nil: all of them, a soft mixture).
        public var topK: Int?
        /// Full passes over the shots, and the routers' AdamW learning rate.
        public var steps = 60, lr: Float = 0.01
        /// The Switch balance loss weight, and the routers' initial uniform std.
        public var balance: Float = 0.01, routerStd: Float = 0.02
        public var seed: UInt64 = 1
        public init() {}
    }

    /// Mounts skills as LoRA experts behind routers trained on the K shots, in MixLoRA's layout
    /// (ROUTING.md §9): on each dense FFN, skill i's gate, up and down adapters become expert i
    /// of a mixture whose new router (top-k of a softmax, renormalised) is the only thing
    /// trained; the skills' other modules (attention, ...) are composed in parameter space with
    /// `weights`, as `compose` does. The base and every skill stay frozen. Writes MoEKit's
    /// MIXLORA adapter to `out` (a folder; `--adapter` runs it) and returns the shots' answer-token
    /// loss (each shot's mean, averaged over the shots) before and after the routers train.
    public static func mount(_ adapters: [LoRAAdapterFolder], weights: [Double], base: String, shots: [InstructionCorpus.Example],
                             options: MountOptions = MountOptions(), to out: String, pool: ThreadPool = .shared)
        throws -> (before: Double, after: Double) {
        let n = adapters.count
        let (_, spec) = try DecoderModel.weightSource(path: base)
        let ffns = (0..<spec.layers).filter { !spec.moeLayers[$0] }.map { spec.names.denseFFN($0) }
        let projections = ["gate_proj", "up_proj", "down_proj"]
        func ffn(of module: String) -> String? {
            ffns.first { f in projections.contains { module == "\(f).\($0)" } }
        }
        let used = ffns.filter { f in adapters.contains { a in projections.contains { a.modules["\(f).\($0)"] != nil } } }
        guard !used.isEmpty else {
            throw ModelError.invalidFile(path: adapters.first?.path ?? out, field: "target_modules",
                                         reason: "no skill adapts a dense FFN's gate_proj, up_proj or down_proj of \(base): nothing to mount as experts")
        }
        let topK = options.topK ?? n
        guard (1...n).contains(topK), (2...256).contains(n) else {
            throw ModelError.invalidConfig(path: out, field: "top_k", reason: "must be in 1...\(n) with 2...256 skills, got \(topK) of \(n)")
        }
        var (tensors, patterns) = try composition(adapters, weights: weights) { ffn(of: $0) == nil }
        var alphas = patterns.mapValues(Double.init)
        let bound = options.routerStd * Float(3).squareRoot()
        for (l, f) in used.enumerated() {
            for (i, adapter) in adapters.enumerated() {
                for p in projections {
                    guard let m = adapter.modules["\(f).\(p)"] else { continue }
                    let name = "\(f).lora_experts.\(i).\(p)"
                    tensors += [("base_model.model.\(name).lora_A.weight", m.a.converted(to: .f32)),
                                ("base_model.model.\(name).lora_B.weight", m.b.converted(to: .f32))]
                    patterns[name] = m.a.shape[0]
                    alphas[name] = Double(m.scale) * Double(m.a.shape[0])
                }
            }
            tensors.append(("base_model.model.\(f).lora_router.weight",
                            Tensor(randomUniform: [n, spec.hiddenSize], in: -bound...bound, seed: options.seed &+ UInt64(l) &* 7919)))
        }
        let config: [String: Any] = [
            "peft_type": "MIXLORA", "routing_strategy": "mixlora", "num_experts": n, "top_k": topK,
            "router_aux_loss_coef": LoRAModules.decimal(options.balance), "expert_target_modules": projections, "mixture_modules": used,
            "r": patterns.values.max() ?? 1, "lora_alpha": alphas.values.max() ?? 1, "rank_pattern": patterns, "alpha_pattern": alphas,
            "target_modules": patterns.keys.filter { !$0.contains(".lora_experts.") }.sorted(),
        ]
        try LoRAModules.writePEFTFolder(out, config: config, base: base, tensors: tensors)

        var loraConfig = LoRAConfig()
        (loraConfig.kind, loraConfig.experts, loraConfig.topK, loraConfig.routerAuxLossCoef) = (.mixlora, n, topK, options.balance)
        let model = try TrainableDecoder(path: base, frozenProjections: true)
        try model.attachLoRA(LoRAAdapterFolder(path: out), config: loraConfig)
        guard let lora = model.lora else { preconditionFailure("attachLoRA installs the adapter") }  // safe: attachLoRA just set it
        let routers = lora.mixtures.values.map(\.router)
        for p in lora.parameters where !routers.contains(where: { $0 === p.variable }) { p.variable.requiresGrad = false }
        let examples = shots.filter { e in e.ids.count > 1 && e.answer.dropFirst().contains(true) }
        guard !examples.isEmpty else { throw ModelError.invalidConfig(path: out, field: "shots", reason: "no shot has an answer token to learn from") }
        let optimizer = AdamW(weightDecay: 0)
        func pass(train: Bool) -> Double {
            for r in routers { r.grad = nil }
            var total = 0.0
            for e in examples {
                let tape = Tape(pool: pool)
                let targets = (1..<e.ids.count).map { e.answer[$0] ? e.ids[$0] : -1 }
                let o = model.forward([Array(e.ids.dropLast())], targets: [targets], tape: tape, aux: AuxLossCoefficients())
                total += Double(o.loss.value.floats[0])  // the answer tokens' loss; the balance loss adds its gradient
                if train { tape.backward(from: o.loss, seed: 1 / Float(examples.count)) }
            }
            return total / Double(examples.count)
        }
        let before = pass(train: false)
        lora.auxScale = 1 / Float(examples.count)
        for _ in 0..<options.steps {
            _ = pass(train: true)
            optimizer.update(routers.map { ($0, false) }, lr: options.lr, pool: pool)
        }
        lora.auxScale = 1
        let after = pass(train: false)
        let trained = Dictionary(uniqueKeysWithValues: lora.mixtures.values.map { ("base_model.model.\($0.module).lora_router.weight", $0.router.value) })
        try LoRAModules.writePEFTFolder(out, config: config, base: base, tensors: tensors.map { ($0.name, trained[$0.name] ?? $0.tensor) })
        return (before, after)
    }
}
