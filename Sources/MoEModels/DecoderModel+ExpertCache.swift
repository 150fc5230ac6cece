import MoE
import MoECore

extension DecoderModel {
    /// Bytes of each routed expert's weights, over every MoE layer of the checkpoint (not the
    /// dense FFNs a MixLoRA adapter runs as mixtures: their experts share the FFN's weights).
    private var expertSizes: [Int] {
        layers.indices.flatMap { i -> [Int] in
            guard spec.moeLayers[i], case let .moe(moe) = layers[i].ffn else { return [] }
            return (0..<moe.experts.expertCount).map { moe.experts.weightBytes(expert: $0) }
        }
    }

    /// Bytes of the routed experts' weights over every MoE layer.
    public var routedExpertBytes: Int { expertSizes.reduce(0, +) }

    /// Bytes of the largest routed expert (gate, up and down).
    public var largestExpertBytes: Int { expertSizes.max() ?? 0 }

    /// Bytes of every stored tensor, routed experts included.
    public func storedBytes() throws(ModelError) -> Int {
        var total = 0
        for name in checkpoint.names { total += try checkpoint.tensor(name).byteCount }
        return total
    }

    /// Runs the routed experts out of an `ExpertCache` that, with the weights that stay resident
    /// (everything but the routed experts), keeps the model within `budget` bytes: experts are
    /// read from the file when a token chooses them and evicted by `policy`. Logits do not
    /// change. With `prefetch`, router lookahead reads ahead the experts each next layer's
    /// router would choose for the current hidden state (`prefetchExperts`). With
    /// `cacheAwareMargin` m > 0 (cache-aware routing, off by default), top-k softmax layers
    /// choose among near-tied experts the ones in the cache (`PreferringRouter`): then logits
    /// do change, by what `moe perplexity` measures. With `directIO`, reads bypass the page
    /// cache (`ExpertCache.directIO`). With `packBF16`, bf16 experts are held in the lossless
    /// packed form (`ExpertCache.packBF16`) and the resident bf16 matrices packed too
    /// (`packResidentMatrices`, before the budget is checked): more experts in the budget,
    /// fewer bytes a token, the same logits, for the cost of packing each read. Call before
    /// running the model. Throws when the budget does not cover the resident weights plus the
    /// largest expert.
    @discardableResult
    public func useExpertCache(budget: Int, policy: ExpertCache.Policy = .lru, prefetch: Bool = false,
                               cacheAwareMargin: Float = 0, directIO: Bool = false, packBF16: Bool = false) throws(ModelError) -> ExpertCache {
        guard cacheAwareMargin >= 0 && cacheAwareMargin <= 10 else {
            throw .invalidConfig(path: checkpoint.weightsPath, field: "cache-aware routing", reason: "margin \(cacheAwareMargin) is not in 0...10")
        }
        for layer in layers {
            if case let .moe(moe) = layer.ffn, moe.experts is TernaryExperts {
                throw .invalidConfig(path: checkpoint.weightsPath, field: "memory budget",
                                     reason: "QMoE-coded experts stay in memory (they are a fraction of the model's bytes); run without --memory-budget")
            }
        }
        // Packed resident matrices leave the budget more room for experts.
        let resident = try storedBytes() - routedExpertBytes - (packBF16 ? packResidentMatrices() : 0)
        // Direct reads take whole 4 KiB blocks: up to two more per tensor of an expert.
        let largest = largestExpertBytes + (directIO ? 3 * 2 * ExpertCache.directBlock : 0)
        guard budget - resident >= largest else {
            throw .invalidConfig(path: checkpoint.weightsPath, field: "memory budget",
                                 reason: "\(budget) bytes do not cover the \(resident) bytes of weights that stay resident "
                                     + "plus one expert (\(largest) bytes): give at least \(resident + largest)")
        }
        let cache = ExpertCache(capacity: budget - resident, policy: policy, directIO: directIO, packBF16: packBF16)
        var unmapped: [Tensor] = []  // the embedding's were advised at load
        for (i, layer) in layers.enumerated() {
            guard case let .moe(moe) = layer.ffn else { continue }
            guard let experts = (moe.experts as? CachedExperts)?.resident ?? moe.experts as? SwiGLUExperts else { continue }
            unmapped += experts.gate + experts.up + experts.down
            var cached = moe
            cached.experts = CachedExperts(experts, layer: i, cache: cache)
            layers[i] = Layer(inputNorm: layer.inputNorm, postNorm: layer.postNorm, attention: layer.attention, ffn: .moe(cached))
        }
        MappedFile.adviseNoHugePages(covering: unmapped)  // read with pread, never through the mapping
        expertCache = cache
        expertPrefetch = prefetch
        self.cacheAwareMargin = cacheAwareMargin
        return cache
    }

    /// Router lookahead: starts reading, in the background, the experts layer `next`'s router
    /// would choose for `input` (the hidden state the layer before is about to transform), so
    /// they arrive while that layer computes. Only when they fit in half the cache (a prefill
    /// that touches every expert would evict what it is about to use).
    func prefetchExperts(layer next: Int, input: Tensor) {
        guard let cache = expertCache, next < layers.count, case let .moe(moe) = layers[next].ffn,
              let cached = moe.experts as? CachedExperts, case .linear = moe.gate else { return }
        var state = RouterState()
        let routing = moe.router.route(moe.gate.logits(input, state: &state, pool: pool), pool: nil)
        var chosen = Set<Int>()
        for t in 0..<input.shape[0] { chosen.formUnion(routing.experts(of: t)) }
        let bytes = chosen.reduce(0) { $0 + cached.weightBytes(expert: $1) }
        // The layer about to run has not pinned its experts yet: the reads must not evict them.
        if bytes <= cache.capacity / 2 { cached.prefetch(chosen.sorted(), sparing: next - 1) }
    }

    /// Throws the expert cache's read failure, if one happened in the layer just run.
    func checkExpertCache() throws(ModelError) {
        if let failure = expertCache?.takeFailure() { throw failure }
    }
}
