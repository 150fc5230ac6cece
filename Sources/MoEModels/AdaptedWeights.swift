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
    let pool: ThreadPool
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
        ropeInterleaved = spec.ropeInterleaved
        heads = spec.heads
        kvHeads = spec.kvHeads
        self.pool = pool
    }

    public var configPath: String { base.configPath }
    public var names: [String] { base.names }
    public func has(_ name: String) -> Bool { base.has(name) }

    public func tensor(_ name: String, shape: [Int]?) throws(ModelError) -> Tensor {
        var w = try base.tensor(name, shape: shape)
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
