import Foundation
import MoECore
import MoEModels

// Dimension legend: E experts, I expert size, d hidden, r the rank.

extension LoRAModules {
    /// LoRA on one of a layer's stacked expert tensors, as PEFT's `target_parameters` trains it
    /// (`StackedExpertLoRA`): per expert an A [r, in] and a B. For `gate_up_proj` the expert's
    /// gate and up projections share its A, and B is kept as the gate's rows and the up's rows
    /// ([I, r] each), so the MoE op sees a plain adapter on each projection; `down_proj` has one
    /// B [d, r]. Saved as PEFT's stacked A [r·E, in] and B [out, r·E].
    public struct StackedGroup {
        public let layer: Int
        public let parameter: StackedExpertLoRA.Parameter
        public let scale: Float
        /// Each expert's A.
        public let a: [Variable]
        /// Each expert's B: [gate rows, up rows] for gate_up_proj, [B] for down_proj.
        public let b: [[Variable]]
        /// A's, then B's: each variable once.
        var variables: [Variable] { a + b.flatMap { $0 } }
    }

    /// The PEFT names of a group's stacked A and B (nested wrappers: see `StackedExpertLoRA`).
    func peftNames(of g: StackedGroup) -> (a: String, b: String) {
        let targeted = Set(stacked.filter { $0.layer == g.layer }.map(\.parameter))
        return (StackedExpertLoRA.peftName(layer: g.layer, parameter: g.parameter, targeted: targeted, "A"),
                StackedExpertLoRA.peftName(layer: g.layer, parameter: g.parameter, targeted: targeted, "B"))
    }

    /// A group's variables under names of their own: the PEFT name with `.expert.E` (and `.gate`
    /// or `.up` for a gate_up B), for optimiser state.
    func namedVariables(of g: StackedGroup) -> [(name: String, variable: Variable)] {
        let (a, b) = peftNames(of: g)
        return g.a.enumerated().map { ("\(a).expert.\($0)", $1) }
            + g.b.enumerated().flatMap { e, bs in
                bs.count == 1 ? [("\(b).expert.\(e)", bs[0])] : [("\(b).expert.\(e).gate", bs[0]), ("\(b).expert.\(e).up", bs[1])]
            }
    }

    /// Each group's PEFT tensors, stacked from `value` of each variable (zeros where it is nil:
    /// the gradient of an expert no token reached).
    func stackedPEFTTensors(_ value: (Variable) -> Tensor?) -> [(name: String, tensor: Tensor)] {
        stacked.flatMap { g -> [(name: String, tensor: Tensor)] in
            func of(_ v: Variable) -> Tensor { value(v) ?? Tensor(zeros: v.shape) }
            let bs = g.b.map { $0.count == 1 ? of($0[0]) : StackedExpertLoRA.joinGateAndUp(of($0[0]), of($0[1]), interleaved: interleavedGateUp) }
            let (a, b) = StackedExpertLoRA.stack(a: g.a.map(of), b: bs)
            let names = peftNames(of: g)
            return [(names.a, a), (names.b, b)]
        }
    }

    /// Loads a group from PEFT's stacked tensors by `tensor(name)`, split per expert (shapes
    /// checked: `MoECoreError.invalidValue` names the tensor).
    func load(_ g: StackedGroup, _ tensor: (String) throws -> Tensor) throws {
        let names = peftNames(of: g)
        let a = try tensor(names.a), b = try tensor(names.b)
        guard let split = StackedExpertLoRA.split(a: a, b: b, experts: g.a.count) else {
            throw MoECoreError.invalidValue(path: nil, field: names.b, reason: "A \(a.shape) and B \(b.shape) do not hold \(g.a.count) experts' adapters")
        }
        for e in g.a.indices {
            try g.a[e].load(split.a[e], name: names.a)
            if g.b[e].count == 2 {
                let halves = StackedExpertLoRA.gateAndUp(split.b[e], interleaved: interleavedGateUp)
                try g.b[e][0].load(halves.gate, name: names.b)
                try g.b[e][1].load(halves.up, name: names.b)
            } else {
                try g.b[e][0].load(split.b[e], name: names.b)
            }
        }
    }
}

extension TrainableDecoder {
    /// One expert's adapter on a stacked tensor: A and its B (gate_up: [gate rows, up rows]).
    typealias StackedExpertTensors = (a: Tensor, b: [Tensor], scale: Float)

    /// The stacked groups of every MoE layer and targeted tensor, each expert's tensors from
    /// `make(layer, tensor, expert)`, and the adapters by the expert weights they adapt.
    func stackedGroups(targets: (Int, StackedExpertLoRA.Parameter) -> Bool,
                       make: (Int, StackedExpertLoRA.Parameter, Int) throws(ModelError) -> StackedExpertTensors)
        throws(ModelError) -> (groups: [LoRAModules.StackedGroup], byBase: [ObjectIdentifier: ExpertAdapters.Adapter]) {
        var groups: [LoRAModules.StackedGroup] = [], byBase: [ObjectIdentifier: ExpertAdapters.Adapter] = [:]
        for (i, l) in layers.enumerated() {
            guard let moe = l.moe else { continue }
            for p in StackedExpertLoRA.Parameter.allCases where targets(i, p) {
                var a: [Variable] = [], b: [[Variable]] = [], scale: Float = 1
                for e in moe.gate.indices {
                    let t = try make(i, p, e)
                    let av = Variable(t.a), bv = t.b.map { Variable($0) }
                    scale = t.scale
                    a.append(av)
                    b.append(bv)
                    if p == .gateUp {
                        byBase[ObjectIdentifier(moe.gate[e])] = (av, bv[0], t.scale)
                        byBase[ObjectIdentifier(moe.up[e])] = (av, bv[1], t.scale)
                    } else {
                        byBase[ObjectIdentifier(moe.down[e])] = (av, bv[0], t.scale)
                    }
                }
                groups.append(.init(layer: i, parameter: p, scale: scale, a: a, b: b))
            }
        }
        return (groups, byBase)
    }

    /// Fresh stacked adapters for `config.target_parameters`, drawn as PEFT draws a
    /// `ParamWrapper`'s (A Kaiming-uniform, bound 1/√in, B zero); a typed error when nothing
    /// matches, or when `target_modules` also adapts routed experts one by one.
    func freshStackedGroups(_ config: LoRAConfig, seed: UInt64, path: String?)
        throws(ModelError) -> (groups: [LoRAModules.StackedGroup], byBase: [ObjectIdentifier: ExpertAdapters.Adapter]) {
        guard !config.targetParameters.isEmpty else { return ([], [:]) }
        let where_ = path ?? "(training config)"
        if let e = adaptableProjections.first(where: { $0.name.contains(".experts.") && config.targets($0.name, isHead: $0.isHead) }) {
            throw .invalidConfig(path: where_, field: "lora.target_parameters",
                                 reason: "target_modules already adapts routed expert \(e.name) one by one; adapt the experts one way")
        }
        let result = try stackedGroups(targets: { i, p in config.targetsParameter("\(StackedExpertLoRA.module(layer: i)).\(p.rawValue)") }) { i, p, e in
            let w = p == .gateUp ? layers[i].moe!.gate[e] : layers[i].moe!.down[e]  // safe: stackedGroups visits MoE layers only
            let fanIn = w.shape[1], bound = 1 / Float(fanIn).squareRoot()
            let a = Tensor(randomUniform: [config.rank, fanIn], in: -bound...bound,
                           seed: seed &* 0x2545_F491 &+ UInt64(1 << 20) &+ UInt64(i) &* 0x10001 &+ UInt64(e) &* 7 &+ (p == .gateUp ? 0 : 3))
            let b = (0..<(p == .gateUp ? 2 : 1)).map { _ in Tensor(zeros: [w.shape[0], config.rank]) }  // storage of its own each
            return (a, b, config.scale)
        }
        guard !result.groups.isEmpty else {
            throw .invalidConfig(path: where_, field: "lora.target_parameters",
                                 reason: "\(config.targetParameters) match no stacked expert tensor (model.layers.N.mlp.experts.gate_up_proj or .down_proj of an MoE layer)")
        }
        return result
    }

    /// The stacked groups of a PEFT adapter's `target_parameters` tensors, checked against the
    /// model's experts (a typed error names the adapter's tensor).
    func stackedGroups(of adapter: LoRAAdapterFolder)
        throws(ModelError) -> (groups: [LoRAModules.StackedGroup], byBase: [ObjectIdentifier: ExpertAdapters.Adapter]) {
        let weightsPath = (adapter.path as NSString).appendingPathComponent("adapter_model.safetensors")
        let interleaved = spec.names.stackedLayout == .interleavedInputMajor
        var byKey: [String: StackedExpertLoRA] = [:]
        for s in adapter.stacked { byKey["\(s.layer).\(s.parameter.rawValue)"] = s }
        let result = try stackedGroups(targets: { byKey["\($0).\($1.rawValue)"] != nil }) { (i, p, e) throws(ModelError) in
            let s = byKey["\(i).\(p.rawValue)"]!  // safe: targets filtered on it
            let w = p == .gateUp ? layers[i].moe!.gate[e] : layers[i].moe!.down[e]  // safe: MoE layers only
            let rows = p == .gateUp ? 2 * w.shape[0] : w.shape[0]
            guard s.a.count == layers[i].moe!.gate.count, s.a[e].shape[1] == w.shape[1], s.b[e].shape[0] == rows else {  // safe: MoE layers only
                throw .invalidFile(path: weightsPath, field: "\(StackedExpertLoRA.module(layer: i)).\(p.rawValue)",
                                   reason: "\(s.a.count) experts of A \(s.a[e].shape), B \(s.b[e].shape) do not fit the experts [\(rows), \(w.shape[1])]")
            }
            let halves = StackedExpertLoRA.gateAndUp(s.b[e], interleaved: interleaved)
            return (s.a[e], p == .gateUp ? [halves.gate, halves.up] : [s.b[e]], s.scale)
        }
        if let stray = adapter.stacked.first(where: { s in !result.groups.contains { $0.layer == s.layer && $0.parameter == s.parameter } }) {
            throw .invalidFile(path: weightsPath, field: "\(StackedExpertLoRA.module(layer: stray.layer)).\(stray.parameter.rawValue)",
                               reason: "adapts experts this model does not have")
        }
        return result
    }
}
