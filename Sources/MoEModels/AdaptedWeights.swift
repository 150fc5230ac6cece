import Foundation
import MoECore

/// A model's weights with LoRA adapters folded in as they are loaded: the tensor a module's
/// weight names is the base's plus every adapter's `scale · B A` for that module, in f32 (a
/// block-format base is dequantized first), so every family, both file kinds and every kernel
/// run adapted models unchanged. Several adapters stack in order. Weights no adapter touches
/// stay the base's zero-copy views. `checkAllApplied()` refuses an adapter naming modules the
/// model never loaded (an adapter for another model), rather than ignoring them.
public final class AdaptedWeights: WeightSource, @unchecked Sendable {
    public let base: any WeightSource
    public let adapters: [LoRAAdapterFolder]
    /// Llama-family GGUF q/k rows are in llama.cpp's interleaved-RoPE order: deltas follow.
    let ropeInterleaved: Bool, heads: Int, kvHeads: Int
    /// GPT-OSS's stacked experts: [E, in, out], gate and up columns interleaved.
    let isInputMajor: Bool
    let pool: ThreadPool
    /// Stacked-expert adapters by the tensor name they change: per-expert names (`experts.E.w1`)
    /// or the stacked tensors themselves, whichever the checkpoint stores.
    private let stackedTargets: [String: [StackedTarget]]
    private var applied = Set<String>()
    private let lock = NSLock()

    /// Refuses an adapter on embeddings that a tied LM head shares (PEFT adapts the embedding
    /// lookup alone; folded into the shared matrix, it would change the head too).
    public init(base: any WeightSource, spec: DecoderSpec, adapters: [LoRAAdapterFolder], pool: ThreadPool = .shared) throws(ModelError) {
        let embedding = String(spec.names.embedding.dropLast(".weight".count))
        if spec.tieWordEmbeddings && !base.has(spec.names.lmHead),
           let a = adapters.first(where: { $0.modules[embedding] != nil || $0.replacements[embedding] != nil }) {
            throw .invalidFile(path: a.path, field: spec.names.embedding, reason: "adapts embeddings the LM head shares (tied); not supported")
        }
        self.base = base
        self.adapters = adapters
        stackedTargets = try Self.stackedTargets(adapters, spec: spec)
        ropeInterleaved = spec.ropeInterleaved
        heads = spec.heads
        kvHeads = spec.kvHeads
        isInputMajor = spec.names.stackedLayout == .interleavedInputMajor
        self.pool = pool
    }

    public var configPath: String { base.configPath }
    public var names: [String] { base.names }
    public func has(_ name: String) -> Bool { base.has(name) }

    public func tensor(_ name: String, shape: [Int]?) throws(ModelError) -> Tensor {
        var w = try base.tensor(name, shape: shape)
        if let targets = stackedTargets[name] { return try applyStacked(targets, to: w, name: name) }
        guard name.hasSuffix(".weight") else { return w }
        let module = String(name.dropLast(".weight".count))
        for a in adapters {
            guard let r = a.replacements[module] else { continue }
            guard r.shape == w.shape else {
                throw .invalidFile(path: a.path, field: "\(module).base_layer.weight", reason: "is \(r.shape); the model's \(name) is \(w.shape)")
            }
            w = isRotated(module) ? RopeRows.interleaved(r, heads: module.hasSuffix("q_proj") ? heads : kvHeads) : r
        }
        let found = adapters.compactMap { a in a.modules[module].map { (a, $0) } }
        guard !found.isEmpty else {
            if adapters.contains(where: { $0.replacements[module] != nil }) { lock.withLock { _ = applied.insert(module) } }
            return w
        }
        guard w.rank == 2 else { throw .invalidFile(path: found[0].0.path, field: module, reason: "adapts \(name), which is not a matrix") }
        var merged = w.toFloats()
        for (adapter, m) in found {
            // Checked before B A is made: its size comes from the adapter file.
            let shape = m.isEmbedding ? [m.a.shape[1], m.b.shape[0]] : [m.b.shape[0], m.a.shape[1]]
            guard shape == w.shape else {
                throw .invalidFile(path: adapter.path, field: module, reason: "B A is \(shape); the model's \(name) is \(w.shape)")
            }
            let delta = adapter.delta(m, pool: pool)
            let d = isRotated(module) ? RopeRows.interleaved(delta, heads: module.hasSuffix("q_proj") ? heads : kvHeads) : delta
            let dp = d.floats
            for i in merged.indices { merged[i] += dp[i] }
        }
        lock.withLock { _ = applied.insert(module) }
        return Tensor(shape: w.shape, values: merged)
    }

    /// Whether `module`'s rows are stored in llama.cpp's interleaved-RoPE order.
    private func isRotated(_ module: String) -> Bool {
        ropeInterleaved && (module.hasSuffix("self_attn.q_proj") || module.hasSuffix("self_attn.k_proj"))
    }

    /// Throws when an adapter names a module the model has not loaded.
    public func checkAllApplied() throws(ModelError) {
        let done = lock.withLock { applied }
        try Self.check(adapters) { done.contains($0) }
        for adapter in adapters {
            for s in adapter.stacked where !done.contains(Self.key(s)) {
                throw .invalidFile(path: adapter.path, field: Self.key(s), reason: "adapts experts this model does not have (layer \(s.layer) is not an MoE layer?)")
            }
        }
    }

    // MARK: - Stacked expert adapters (PEFT `target_parameters`)

    /// One stacked-expert adapter's share of a tensor: expert `expert`'s part of it, or every
    /// expert's (a stacked tensor, `expert` nil).
    struct StackedTarget {
        enum Part { case gate, up, down, gateUp }
        let adapter: LoRAAdapterFolder, lora: StackedExpertLoRA, part: Part, expert: Int?
    }

    /// `model.layers.N.mlp.experts.gate_up_proj`: the adapter's target as PEFT names it.
    static func key(_ s: StackedExpertLoRA) -> String { "\(StackedExpertLoRA.module(layer: s.layer)).\(s.parameter.rawValue)" }

    /// Every stacked-expert adapter's targets, by the tensor names `spec` loads experts from; its
    /// experts and A, B shapes checked against the model's.
    static func stackedTargets(_ adapters: [LoRAAdapterFolder], spec: DecoderSpec) throws(ModelError) -> [String: [StackedTarget]] {
        var out: [String: [StackedTarget]] = [:]
        let d = spec.hiddenSize, inner = spec.expertIntermediate, n = spec.names
        for adapter in adapters {
            for s in adapter.stacked {
                let (inputs, outputs) = s.parameter == .gateUp ? (d, 2 * inner) : (inner, d)
                guard s.a.count == spec.experts, zip(s.a, s.b).allSatisfy({ $0.shape[1] == inputs && $1.shape[0] == outputs }) else {
                    throw .invalidFile(path: adapter.path, field: key(s),
                                       reason: "holds \(s.a.count) experts of A \(s.a.first?.shape ?? []), B \(s.b.first?.shape ?? []); the model has \(spec.experts) of [r, \(inputs)], [\(outputs), r]")
                }
                guard s.layer < spec.layers else { continue }  // never loaded: checkAllApplied names it
                let stacked = n.stackedExperts(s.layer)
                switch s.parameter {
                case .gateUp:
                    out[stacked.gateUp, default: []].append(StackedTarget(adapter: adapter, lora: s, part: .gateUp, expert: nil))
                    for e in 0..<spec.experts {
                        out[n.expert(s.layer, e).gate, default: []].append(StackedTarget(adapter: adapter, lora: s, part: .gate, expert: e))
                        out[n.expert(s.layer, e).up, default: []].append(StackedTarget(adapter: adapter, lora: s, part: .up, expert: e))
                    }
                case .down:
                    out[stacked.down, default: []].append(StackedTarget(adapter: adapter, lora: s, part: .down, expert: nil))
                    for e in 0..<spec.experts {
                        out[n.expert(s.layer, e).down, default: []].append(StackedTarget(adapter: adapter, lora: s, part: .down, expert: e))
                    }
                }
            }
        }
        return out
    }

    /// `w` (one expert's projection, or a stacked tensor of every expert's) plus each target's
    /// delta: a stacked tensor input-major (GPT-OSS, [E, in, out]) takes the deltas transposed,
    /// and gate/up rows interleaved there.
    private func applyStacked(_ targets: [StackedTarget], to w: Tensor, name: String) throws(ModelError) -> Tensor {
        var merged = w.toFloats()
        let interleaved = isInputMajor
        for t in targets {
            let experts = t.expert.map { [$0] } ?? Array(t.lora.a.indices)
            let block = merged.count / experts.count
            for (slot, e) in experts.enumerated() {
                let half: StackedExpertLoRA.Half? = t.part == .gate ? .gate : t.part == .up ? .up : nil
                let delta = t.lora.delta(expert: e, half: half, interleaved: interleaved, pool: pool)  // [out, in]
                let rows = delta.shape[0], cols = delta.shape[1], dp = delta.floats
                let transposed = t.expert == nil && interleaved  // stacked input-major: [in, out]
                guard rows * cols == block else {
                    throw .invalidFile(path: t.adapter.path, field: Self.key(t.lora), reason: "B A is [\(rows), \(cols)] per expert; the model's \(name) is \(w.shape)")
                }
                let base = slot * block
                for i in 0..<rows {
                    for j in 0..<cols { merged[base + (transposed ? j * rows + i : i * cols + j)] += dp[i * cols + j] }
                }
            }
            lock.withLock { _ = applied.insert(Self.key(t.lora)) }
        }
        return Tensor(shape: w.shape, values: merged)
    }

    /// Throws for the first module an adapter names that `present` says the model lacks.
    static func check(_ adapters: [LoRAAdapterFolder], present: (String) -> Bool) throws(ModelError) {
        for adapter in adapters {
            let named = Set(adapter.modules.keys).union(adapter.replacements.keys)
            if let missing = named.sorted().first(where: { !present($0) }) {
                throw .invalidFile(path: adapter.path, field: missing, reason: "adapts a module this model does not have (an adapter for another model?)")
            }
        }
    }
}
