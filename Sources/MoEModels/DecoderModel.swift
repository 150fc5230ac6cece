import Foundation
import MoE
import MoECore

// Dimension legend: T tokens, d hidden size, V vocabulary.

/// A decoder-only MoE language model loaded from a Hugging Face checkpoint folder:
/// embedding -> layers (RMSNorm, attention, residual, RMSNorm, MoE or dense FFN, residual) ->
/// RMSNorm -> LM head. Weights stay in their stored dtype, viewed zero-copy from the files.
///
/// ```swift
/// let model = try DecoderModel(directory: "Mixtral-8x7B")
/// var cache = model.makeCache()
/// let logits = try model.forward([1, 415, 2936], cache: &cache)   // [3, V]
/// ```
public final class DecoderModel: @unchecked Sendable {
    public let spec: DecoderSpec
    /// Where the weights come from: a checkpoint folder or a GGUF file.
    public let checkpoint: any WeightSource
    let embed: Tensor, finalNorm: Tensor, lmHead: Tensor
    /// An untied embedding mapped from a file, read a row a token with `pread` rather than
    /// through the mapping (`MappedRows`: its rows' neighbours would otherwise count as
    /// resident); nil when tied or in memory.
    let embedRows: MappedRows?
    var layers: [Layer]
    let rope: RotaryEmbedding
    /// The pool every kernel of this model runs on.
    public var pool: ThreadPool
    /// The cache the routed experts run from, when `useExpertCache` set one.
    public internal(set) var expertCache: ExpertCache?
    /// Whether router lookahead prefetches experts into `expertCache`.
    public internal(set) var expertPrefetch = false
    /// Cache-aware routing: near-tied experts already in `expertCache` win selection by this
    /// factor (`PreferringRouter`); 0: off.
    public internal(set) var cacheAwareMargin: Float = 0
    /// Tokens a prompt's forward pass takes at a time (`forward(_:cache:lastOnly:options:)`,
    /// as llama.cpp's micro-batch): a longer prompt runs in pieces, each continuing the cache,
    /// so the activations it holds at once (an MoE layer's expert rows: tokens x top-k x the
    /// expert width) stay bounded whatever the prompt's length. 1024 by default: at a
    /// 2000-token prompt peak RSS fell by 15-23% and prefill moved -7% to +2% (medians); 512
    /// saved a third and cost up to 8% (fewer rows per expert in each piece). Only where every router picks a
    /// token's experts from that token alone (top-k, no capacity) and any routing trace takes
    /// pieces (`ForwardOptions.traceTakesPieces`); otherwise, or with 0, the whole prompt goes
    /// in one pass. Logits are the whole pass's up to the summation order of the products.
    public var prefillChunk = 1024
    /// Most bytes the KV caches of one forward call may take together (this machine's physical
    /// memory by default): a prompt that needs more is a `ModelError.invalidConfig` (field
    /// "context") before anything is allocated, and `makeCache` allocates no more up front.
    public var kvCacheLimitBytes = Int(clamping: ProcessInfo.processInfo.physicalMemory)

    /// The element type of the KV caches `makeCache` makes: `.f32` (exact, the default) or
    /// `.f16` (half the memory and the bytes a decoded token reads at long contexts, keys and
    /// values rounded to f16, as llama.cpp's default cache). Set it before making caches.
    public var kvCacheType: DType = .f32 {
        willSet { precondition(newValue == .f32 || newValue == .f16, "kvCacheType: \(newValue) is not f32 or f16") }
    }

    /// One decoder layer.
    struct Layer: Sendable {
        let inputNorm: Tensor, postNorm: Tensor
        let attention: any AttentionBlock
        let ffn: FFN
    }

    /// A layer's feed-forward block.
    enum FFN: Sendable {
        case moe(MoELayer)
        case dense(gate: Tensor, up: Tensor, down: Tensor)
    }

    /// Loads the checkpoint in `directory` (config.json and safetensors).
    public convenience init(directory: String, pool: ThreadPool = .shared) throws(ModelError) {
        let checkpoint = try Checkpoint(directory: directory)
        try self.init(weights: checkpoint, spec: try Architectures.spec(configAt: checkpoint.configPath), pool: pool)
    }

    /// Loads `path`: a GGUF file (by its `.gguf` name or its magic), or a checkpoint folder.
    /// DESIGN.md: `--model` takes a GGUF file as well as a folder, everywhere.
    public convenience init(path: String, pool: ThreadPool = .shared) throws(ModelError) {
        let (weights, spec) = try Self.weightSource(path: path)
        try self.init(weights: weights, spec: spec, pool: pool)
    }

    /// The weights at `path` (a GGUF file or a checkpoint folder) and the decoder they describe.
    public static func weightSource(path: String) throws(ModelError) -> (any WeightSource, DecoderSpec) {
        if GGUFFile.isGGUF(path: path) {
            let g = try GGUFWeights(path: path)
            return (g, g.spec)
        }
        let ck = try Checkpoint(directory: path)
        return (ck, try Architectures.spec(configAt: ck.configPath))
    }

    /// Loads `path` (as `init(path:)`) with the PEFT LoRA adapter folders `adapters` folded
    /// into its weights, in order (`AdaptedWeights`).
    public convenience init(path: String, adapters: [String], pool: ThreadPool = .shared) throws(ModelError) {
        let (base, spec) = try Self.weightSource(path: path)
        guard !adapters.isEmpty else { try self.init(weights: base, spec: spec, pool: pool); return }
        var folders: [LoRAAdapterFolder] = []
        for a in adapters { folders.append(try LoRAAdapterFolder(path: a)) }
        let weights = try AdaptedWeights(base: base, spec: spec, adapters: folders, pool: pool)
        try self.init(weights: weights, spec: spec, pool: pool)
        try weights.checkAllApplied()
        for folder in folders { try installMixtures(of: folder) }
    }

    /// The model `spec` describes, its weights from `weights` (by their Hugging Face names).
    public init(weights: any WeightSource, spec: DecoderSpec, pool: ThreadPool = .shared) throws(ModelError) {
        checkpoint = weights
        self.spec = spec
        self.pool = pool
        let s = spec, d = s.hiddenSize, n = s.names
        let ck = checkpoint
        embed = try ck.tensor(n.embedding, shape: [s.vocabSize, d])
        finalNorm = try ck.tensor(n.finalNorm, shape: [d])
        if s.tieWordEmbeddings && !ck.has(n.lmHead) {
            lmHead = embed
            embedRows = nil  // the LM head reads all of it every token
        } else {
            lmHead = try ck.tensor(n.lmHead, shape: [s.vocabSize, d])
            embedRows = MappedRows(embed)
            MappedFile.adviseNoHugePages(covering: [embed])  // where it is read through the mapping: only its rows count
        }
        rope = s.rotary
        let cell = try Self.loadRecurrentCell(ck, s)
        var layers: [Layer] = []
        for i in 0..<s.layers {
            let attention: any AttentionBlock
            if let l = s.latent {
                attention = try Self.loadLatent(ck, s, l, layer: i)
            } else {
                attention = try Self.loadAttention(ck, s, layer: i, rope: rope)
            }
            let ffn: FFN
            if s.moeLayers[i] {
                ffn = .moe(try Self.loadMoE(ck, s, layer: i, recurrentCell: cell))
            } else {
                let m = n.denseFFN(i)
                ffn = .dense(gate: try ck.tensor("\(m).gate_proj.weight", shape: [s.denseIntermediate, d]),
                             up: try ck.tensor("\(m).up_proj.weight", shape: [s.denseIntermediate, d]),
                             down: try ck.tensor("\(m).down_proj.weight", shape: [d, s.denseIntermediate]))
            }
            layers.append(Layer(inputNorm: try ck.tensor(n.inputNorm(i), shape: [d]),
                                postNorm: try ck.tensor(n.postAttentionNorm(i), shape: [d]),
                                attention: attention, ffn: ffn))
        }
        self.layers = layers
    }

    /// Bytes of weights one decoded token reads: its embedding row, every layer's attention,
    /// norms, router, k average-sized experts (and shared or dense FFN), the final norm and the
    /// LM head. The decode bandwidth ceiling is memory bandwidth over this (DESIGN.md, Numbers).
    public var decodeWeightBytes: Double { decodeWeightBytes { _ in Double(spec.topK) } }

    /// `decodeWeightBytes` with `expertsPerToken(layer)` experts read in each MoE layer (what a
    /// routing override, or a router with a varying count, actually reads).
    public func decodeWeightBytes(expertsPerToken: (Int) -> Double) -> Double {
        var bytes = Double(embed.byteCount / spec.vocabSize + finalNorm.byteCount + lmHead.byteCount)
        for (i, layer) in layers.enumerated() {
            bytes += Double(layer.attention.weightBytes + layer.inputNorm.byteCount + layer.postNorm.byteCount)
            switch layer.ffn {
            case let .moe(moe): bytes += moe.decodeBytes(activeExperts: expertsPerToken(i))
            case let .dense(g, u, d): bytes += Double(g.byteCount + u.byteCount + d.byteCount)
            }
        }
        return bytes
    }

    /// Multiply-adds times two per token of prefill, counting the weights a token goes
    /// through (attention, router, k experts, shared or dense FFN); the LM head is left out
    /// (prefill computes it for the last position only).
    public var prefillFlopsPerToken: Double { prefillFlopsPerToken { _ in Double(spec.topK) } }

    /// `prefillFlopsPerToken` with `expertsPerToken(layer)` experts per token in each MoE layer.
    public func prefillFlopsPerToken(expertsPerToken: (Int) -> Double) -> Double {
        var params = 0.0
        for (i, layer) in layers.enumerated() {
            params += Double(layer.attention.weightCount)
            switch layer.ffn {
            case let .moe(moe):
                params += Double(spec.experts * spec.hiddenSize) + expertsPerToken(i) * 3 * Double(spec.hiddenSize * spec.expertIntermediate)
                if let sh = moe.shared { params += Double(sh.gate.count + sh.up.count + sh.down.count) }
            case let .dense(g, u, d): params += Double(g.count + u.count + d.count)
            }
        }
        return 2 * params
    }

    /// An empty KV cache for this model.
    public func makeCache(capacity: Int = 256) -> KVCache {
        let (kvHeads, keyDim, valueDim) = cacheHeads
        // The capacity is a hint, often from outside (a prompt's length): no more is allocated
        // up front than `kvCacheLimitBytes` allows; `forward` refuses positions past it.
        let perPosition = max(1, spec.layers * cacheRowBytes)
        return KVCache(layers: spec.layers, kvHeads: kvHeads, keyDim: keyDim, valueDim: valueDim,
                       capacity: min(capacity, max(1, kvCacheLimitBytes / perPosition)), dtype: kvCacheType)
    }

    /// The KV cache's heads and widths: the key/value heads, or with latent attention every
    /// head's decompressed keys (nope and rope dims) and values.
    private var cacheHeads: (kvHeads: Int, keyDim: Int, valueDim: Int) {
        if let l = spec.latent { return (spec.heads, l.nopeDim + l.ropeDim, l.valueDim) }
        return (spec.kvHeads, spec.headDim, spec.headDim)
    }

    /// Bytes one position's keys and values take in one layer's cache.
    private var cacheRowBytes: Int {
        let (kvHeads, keyDim, valueDim) = cacheHeads
        return kvHeads * (keyDim + valueDim) * kvCacheType.byteSize
    }

    /// Bytes of cached keys and values one decode step reads when it attends to `context`
    /// positions (its own included): each layer's key and value rows of the positions it sees
    /// (a sliding window's last `window` only), in the cache's element type. With
    /// `decodeWeightBytes`, what a decoded token reads from memory.
    public func decodeCacheBytes(context: Int) -> Double {
        let row = cacheRowBytes
        var bytes = 0.0
        for l in 0..<spec.layers {
            let window = l < spec.slidingWindows.count ? spec.slidingWindows[l] : nil
            bytes += Double(min(context, window ?? context) * row)
        }
        return bytes
    }

    /// Logits [T, V] for `tokens` appended to what `cache` holds (positions continue from it).
    /// `lastOnly` computes the LM head for the final position only ([1, V]), as decoding needs.
    public func forward(_ tokens: [Int], cache: inout KVCache, lastOnly: Bool = false,
                        trace: ((Int, Routing) -> Void)? = nil) throws(ModelError) -> Tensor {
        try forward(tokens, cache: &cache, lastOnly: lastOnly, options: ForwardOptions(trace: trace))
    }

    /// `forward(_:cache:lastOnly:trace:)` with per-call `options`: a router override for any MoE
    /// layer and a routing trace.
    /// A prompt longer than `prefillChunk` runs in pieces of that many tokens (see there).
    public func forward(_ tokens: [Int], cache: inout KVCache, lastOnly: Bool = false,
                        options: ForwardOptions) throws(ModelError) -> Tensor {
        var caches = [cache]
        cache = .placeholder
        defer { cache = caches[0] }
        let chunk = prefillChunk
        guard chunk > 0 && tokens.count > chunk && (options.trace == nil || options.traceTakesPieces) && routesTokensAlone(options) else {
            return try forward(batch: [tokens], caches: &caches, lastOnly: lastOnly, options: options)  // which checks the cache's room
        }
        _ = try cacheRoom(caches, adding: [tokens.count])  // the whole prompt, before its first piece
        let v = spec.vocabSize
        let out = lastOnly ? nil : Tensor(uninitialized: [tokens.count, v])
        var last = Tensor(zeros: [0, v])
        for start in stride(from: 0, to: tokens.count, by: chunk) {
            let end = min(tokens.count, start + chunk), finalPiece = end == tokens.count
            // With lastOnly, every piece computes only its last row's logits (one LM head row,
            // where the rows of a whole piece would cost more than the piece's layers).
            let logits = try forward(batch: [Array(tokens[start..<end])], caches: &caches, lastOnly: lastOnly, options: options)
            if let out {
                (out.mutableRawPointer + start * v * 4).copyMemory(from: logits.rawPointer, byteCount: (end - start) * v * 4)
            } else if finalPiece {
                last = logits
            }
        }
        return out ?? last
    }

    /// The bytes each cache takes once it holds `counts[i]` more positions (at least its present
    /// capacity), or a `ModelError.invalidConfig` (field "context") when together they pass
    /// `kvCacheLimitBytes`. The positions come from outside (a prompt's length): the caches'
    /// growth is bounded before it is allocated, a typed error instead of the process killed
    /// for memory.
    func cacheRoom(_ caches: [KVCache], adding counts: [Int]) throws(ModelError) -> [Int] {
        let own = zip(caches, counts).map { $0.bytes(capacity: max($0.capacity, $0.length + $1)) }
        let needed = own.reduce(0, +)
        if needed > kvCacheLimitBytes {
            let positions = zip(caches, counts).map { $0.length + $1 }.max() ?? 0
            let halve = caches.contains { $0.dtype == .f32 } ? ", or an f16 cache (--kv-cache f16)" : ""
            throw .invalidConfig(path: checkpoint.configPath, field: "context",
                                 reason: "\(positions) positions need \(needed >> 20) MiB of KV cache, more than the \(kvCacheLimitBytes >> 20) MiB allowed (DecoderModel.kvCacheLimitBytes: this machine's memory by default); use a shorter prompt\(halve)")
        }
        return own
    }

    /// Whether every MoE layer (under `options`' router override) picks each token's experts
    /// from that token alone: causal top-k routing with no capacity, so a prompt's pieces route
    /// as the whole prompt would.
    func routesTokensAlone(_ options: ForwardOptions) -> Bool {
        moeRouters.allSatisfy { layer, own in
            let router = options.router?(layer, own) ?? own
            return router.isCausal && router.topK != nil
        }
    }

    /// One forward pass over several sequences at once (continuous batching): `batch[i]`'s
    /// tokens continue `caches[i]`. Every projection and every MoE layer runs once over all the
    /// rows together, so each expert's weights are read once per pass, not once per sequence;
    /// attention reads each row's own cache. Logits [T, V] for all rows in order, or with
    /// `lastOnly` [B, V]: each sequence's last row (an empty sequence is refused).
    /// `sequenceOptions`, when given, routes each sequence's rows by its own options' router
    /// (requests with different expert settings, SCMoE's strong and weak passes) while the
    /// experts still run once over all rows; `options` then gives only the trace.
    public func forward(batch: [[Int]], caches: inout [KVCache], lastOnly: Bool = false,
                        options: ForwardOptions = ForwardOptions(),
                        sequenceOptions: [ForwardOptions]? = nil) throws(ModelError) -> Tensor {
        let s = spec, d = s.hiddenSize
        precondition(batch.count == caches.count, "one cache per sequence")
        precondition(sequenceOptions.map { $0.count == batch.count } ?? true, "one set of options per sequence")
        let tokens = Array(batch.joined()), t = tokens.count
        for id in tokens where id < 0 || id >= s.vocabSize { throw .tokenOutOfRange(id: id, vocabularySize: s.vocabSize) }
        if t == 0 { return Tensor(zeros: [0, s.vocabSize]) }
        var ranges: [Range<Int>] = [], start = 0
        for (i, seq) in batch.enumerated() {
            if lastOnly && seq.isEmpty {
                throw .invalidConfig(path: checkpoint.configPath, field: "batch", reason: "sequence \(i) has no tokens")
            }
            ranges.append(start..<(start + seq.count))
            start += seq.count
        }
        let own = try cacheRoom(caches, adding: batch.map(\.count))
        let needed = own.reduce(0, +)
        // Each cache doubles as it grows, but not past what the others leave of the limit.
        for (i, seq) in batch.enumerated() { caches[i].reserve(seq.count, limit: kvCacheLimitBytes - (needed - own[i])) }
        let segments = Segments(ranges)
        // Embedding rows, widened to f32 (each row is written).
        var x = Tensor(uninitialized: [t, d])
        let xp = x.mutableFloats
        for (row, id) in tokens.enumerated() {
            if let embedRows, let base = xp.baseAddress {
                do { try embedRows.widenRow(id, into: base + row * d) } catch {
                    guard case let .io(path, reason) = error else { throw .io(path: checkpoint.weightsPath, reason: "\(error)") }
                    throw .io(path: path, reason: "\(s.names.embedding) \(reason)")
                }
            } else {
                let values = embed[id].toFloats()
                for j in 0..<d { xp[row * d + j] = values[j] }
            }
        }
        // Non-finite values are caught where they first appear (NaN or Inf weights would
        // otherwise flow on to NaN logits, or to finite garbage after a router's comparisons).
        if !Kernels.sumOfSquares(x, pool: pool).isFinite {
            throw .invalidFile(path: checkpoint.weightsPath, field: s.names.embedding,
                               reason: "the rows of tokens \(tokens) hold NaN or Inf")
        }
        var state = RouterState()
        for (i, layer) in layers.enumerated() {
            // Decode: the norm read after attention lands while its passes run (the streamed
            // weights have evicted it since the last token).
            if t == 1 { Kernels.prefetch(layer.postNorm.rawPointer, bytes: layer.postNorm.byteCount) }
            let h = Kernels.rmsNorm(x, weight: layer.inputNorm, eps: s.rmsNormEps, pool: pool)
            let a = layer.attention.forward(h, layer: i, segments: segments, caches: &caches, pool: pool)
            add(a, into: x)
            let h2 = Kernels.rmsNorm(x, weight: layer.postNorm, eps: s.rmsNormEps, pool: pool)
            let f: Tensor
            switch layer.ffn {
            case var .moe(moe):
                var layerOptions = MoELayer.Options()
                if let sequenceOptions {
                    for (k, r) in ranges.enumerated() {
                        let router = try checked(sequenceOptions[k].router.map { $0(i, moe.router) } ?? moe.router, layer: i, own: moe.router)
                        layerOptions.rowRouters.append((rows: r, router: router))
                    }
                } else if let choose = options.router {
                    moe.router = try checked(choose(i, moe.router), layer: i, own: moe.router)
                }
                if cacheAwareMargin > 0, let cache = expertCache {
                    let held = cache.held(layer: i, experts: moe.router.expertCount)
                    func prefer(_ r: any Router) -> any Router {
                        (r as? TopKSoftmaxRouter).map { PreferringRouter(base: $0, margin: cacheAwareMargin, preferred: held) } ?? r
                    }
                    moe.router = prefer(moe.router)
                    layerOptions.rowRouters = layerOptions.rowRouters.map { ($0.rows, prefer($0.router)) }
                }
                if expertPrefetch { prefetchExperts(layer: i + 1, input: h2) }
                let out = moe.forward(h2, state: &state, options: layerOptions, pool: pool)
                try checkExpertCache()
                options.trace?(i, out.routing)
                f = out.output
            case let .dense(gate, up, down):
                let g = Tensor(zeros: [t, gate.shape[0]]), u = Tensor(zeros: [t, up.shape[0]])
                Kernels.linearBatch([LinearJob(input: h2, weight: gate, output: g), LinearJob(input: h2, weight: up, output: u)], pool: pool)
                Kernels.siluMul(gate: g, up: u, pool: pool)
                f = Kernels.matmul(g, down, pool: pool)
            }
            add(f, into: x)
            if !Kernels.sumOfSquares(x, pool: pool).isFinite {
                throw .invalidFile(path: checkpoint.weightsPath, field: "layer \(i)",
                                   reason: "its output holds NaN or Inf: a weight of this layer is not finite, or the values overflow")
            }
        }
        for (i, seq) in batch.enumerated() { caches[i].advance(seq.count) }
        if lastOnly {
            let last = Tensor(zeros: [batch.count, d])
            let lp = last.mutableFloats, xf = x.floats
            for (i, r) in ranges.enumerated() {
                for j in 0..<d { lp[i * d + j] = xf[(r.upperBound - 1) * d + j] }
            }
            x = last
        }
        let normed = Kernels.rmsNorm(x, weight: finalNorm, eps: s.rmsNormEps, pool: pool)
        return Kernels.matmul(normed, lmHead, pool: pool)
    }

    /// `router` if it can stand in for layer `layer`'s own: the same logits and experts.
    private func checked(_ router: any Router, layer i: Int, own: any Router) throws(ModelError) -> any Router {
        guard router.logitCount == own.logitCount, router.expertCount == own.expertCount else {
            throw .invalidConfig(path: checkpoint.configPath, field: "router",
                                 reason: "layer \(i)'s override reads \(router.logitCount) logits for \(router.expertCount) experts; the layer has \(own.logitCount) for \(own.expertCount)")
        }
        return router
    }

    func add(_ y: Tensor, into x: Tensor) {
        let xp = x.mutableFloats, yp = y.floats
        for i in 0..<xp.count { xp[i] += yp[i] }
    }
}
