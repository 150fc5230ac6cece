import MoE
import MoECore
import MoEModels

/// A dense SwiGLU FFN turned into a mixture of LoRA experts (MixLoRA, LLaVA-MoLE; ROUTING.md
/// §9): E experts share the FFN's frozen gate, up and down projections, expert e adding
/// `scale · B_{e,j} A_{e,j}` to projection j; a trainable linear router (with a bias for MoLE)
/// picks top-k of a softmax, renormalised. It runs as an MoE layer (`Tape.moe` with
/// `ExpertAdapters`), so each chosen expert computes its whole FFN; MixLoRA's own code shares the
/// base gate and up products between a token's experts, which gives the same values.
///
/// MoLE's top-1 weight is 1 after renormalisation, so the expert's output is added unweighted
/// and the language-model loss sends the router no gradient, as in LLaVA-MoLE's sparse path.
/// Its balance loss Σ_e mean(p_e) mean(onehot_e) is the Switch loss E Σ f_e P_e over E, over the
/// batch's tokens (LLaVA-MoLE averages it per sequence).
public struct LoRAMixture {
    /// The FFN's module name (`model.layers.0.mlp`).
    public let module: String
    /// The router [E, d], and its bias [E] (MoLE).
    public let router: Variable, routerBias: Variable?
    /// Per expert: its gate, up and down adapters' indices in `LoRAModules.modules` (nil: none).
    let gate: [Int?], up: [Int?], down: [Int?]
    /// The FFN's frozen projections.
    let base: TrainableDecoder.FFNParameters
    let routing: TopKSoftmaxRouter
    /// The Switch load-balance weight the MoE op applies.
    let balance: Float

    /// A fresh mixture on `ffn`: a router drawn uniformly with std `router_init_range` from
    /// `seed`, and each expert's adapters made by `make` (given the projection's weight),
    /// appended to `modules` under `<module>.lora_experts.<e>.<projection>`.
    init(config: LoRAConfig, module: String, ffn: TrainableDecoder.FFNParameters, seed: UInt64,
         modules: inout [LoRAModules.Module], make: (Variable) -> (a: Tensor, b: Tensor, scale: Float)) {
        let e = config.mixtureExperts, d = ffn.gate.shape[1]
        let bound = config.routerInitRange * Float(3).squareRoot()
        router = Variable(Tensor(randomUniform: [e, d], in: -bound...bound, seed: seed))
        routerBias = config.kind == .mole ? Variable(Tensor(zeros: [e])) : nil
        func adapters(_ projection: String, _ weight: Variable) -> [Int?] {
            guard config.expertTargetModules.contains(projection) else { return Array(repeating: nil, count: e) }
            return (0..<e).map { x in
                let (a, b, scale) = make(weight)
                modules.append(.init(name: "\(module).lora_experts.\(x).\(projection)", a: Variable(a), b: Variable(b), scale: scale))
                return modules.count - 1
            }
        }
        self.module = module
        gate = adapters("gate_proj", ffn.gate)
        up = adapters("up_proj", ffn.up)
        down = adapters("down_proj", ffn.down)
        base = ffn
        routing = TopKSoftmaxRouter(experts: e, k: config.mixtureTopK, renormalize: true)
        balance = config.kind == .mole ? config.mixtureAuxLossCoef / Float(e) : config.mixtureAuxLossCoef
    }

    /// A saved mixture (MoEKit's MIXLORA adapter) on `ffn`: its router and experts' adapters,
    /// appended to `modules`; the balance weight from `config` (`kind` mixlora or mole).
    init(saved: LoRAAdapterFolder.Mixture, config: LoRAConfig, ffn: TrainableDecoder.FFNParameters, modules: inout [LoRAModules.Module]) {
        let e = saved.router.shape[0]
        func adapters(_ list: [LoRAAdapterFolder.Module?]) -> [Int?] {
            list.map { m in
                m.map { m in
                    modules.append(.init(name: m.name, a: Variable(m.a.converted(to: .f32)), b: Variable(m.b.converted(to: .f32)), scale: m.scale))
                    return modules.count - 1
                }
            }
        }
        router = Variable(saved.router.converted(to: .f32))
        routerBias = saved.routerBias.map { Variable($0.converted(to: .f32)) }
        module = saved.module
        gate = adapters(saved.gate)
        up = adapters(saved.up)
        down = adapters(saved.down)
        base = ffn
        routing = TopKSoftmaxRouter(experts: e, k: saved.topK, renormalize: true)
        balance = config.kind == .mole ? config.mixtureAuxLossCoef / Float(e) : config.mixtureAuxLossCoef
    }

    private init(copying m: LoRAMixture, router: Variable, routerBias: Variable?, base: TrainableDecoder.FFNParameters) {
        (module, gate, up, down, routing, balance) = (m.module, m.gate, m.up, m.down, m.routing, m.balance)
        self.router = router
        self.routerBias = routerBias
        self.base = base
    }

    /// The router's tensors under their names (`base_model.model.<module>.lora_router.weight`, `.bias`).
    var namedVariables: [(name: String, variable: Variable)] {
        [("base_model.model.\(module).lora_router.weight", router)]
            + (routerBias.map { [("base_model.model.\(module).lora_router.bias", $0)] } ?? [])
    }

    /// The same mixture with router variables of its own and the replica's base projections.
    func replica(rebase: [ObjectIdentifier: Variable]) -> LoRAMixture {
        func v(_ x: Variable) -> Variable { rebase[ObjectIdentifier(x)] ?? x }
        return LoRAMixture(copying: self, router: Variable(router.value), routerBias: routerBias.map { Variable($0.value) },
                           base: .init(gate: v(base.gate), up: v(base.up), down: v(base.down), outputGate: base.outputGate.map(v)))
    }

    /// The mixture on h [T, d] (normed): the MoE op over E experts sharing the base projections,
    /// each with its adapters from `lora.modules`, the balance loss scaled by `lora.auxScale`.
    func forward(_ h: Variable, lora: LoRAModules, tape: Tape) -> MoEStep {
        let e = routing.expertCount
        let logits = tape.linear(h, router, bias: routerBias)
        var params = MoEParameters(router: router, gate: Array(repeating: base.gate, count: e),
                                   up: Array(repeating: base.up, count: e), down: Array(repeating: base.down, count: e))
        params.routerBias = routerBias
        func adapters(_ indices: [Int?]) -> [ExpertAdapters.Adapter?] {
            indices.map { $0.map { (lora.modules[$0].a, lora.modules[$0].b, lora.modules[$0].scale) } }
        }
        return tape.moe(h, logits: logits, params, router: routing, aux: AuxLossCoefficients(loadBalance: balance * lora.auxScale),
                        adapters: ExpertAdapters(gate: adapters(gate), up: adapters(up), down: adapters(down),
                                                 dropout: lora.expertDropout(salt: (gate + up + down).compactMap { $0 }.first ?? 0)))
    }
}
