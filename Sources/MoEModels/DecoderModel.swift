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
    public let checkpoint: Checkpoint
    let embed: Tensor, finalNorm: Tensor, lmHead: Tensor
    let layers: [Layer]
    let rope: RotaryEmbedding
    /// The pool every kernel of this model runs on.
    public var pool: ThreadPool

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
    public init(directory: String, pool: ThreadPool = .shared) throws(ModelError) {
        checkpoint = try Checkpoint(directory: directory)
        spec = try Architectures.spec(configAt: checkpoint.configPath)
        self.pool = pool
        let s = spec, d = s.hiddenSize, hd = s.headDim
        let ck = checkpoint
        embed = try ck.tensor("model.embed_tokens.weight", shape: [s.vocabSize, d])
        finalNorm = try ck.tensor("model.norm.weight", shape: [d])
        if s.tieWordEmbeddings && !ck.has("lm_head.weight") {
            lmHead = embed
        } else {
            lmHead = try ck.tensor("lm_head.weight", shape: [s.vocabSize, d])
        }
        rope = s.latent.map { s.rope.rotary(headDim: $0.ropeDim, layout: $0.interleave ? .interleaved : .rotateHalf) }
            ?? s.rope.rotary(headDim: hd, layout: .rotateHalf)
        let cell = try Self.loadRecurrentCell(ck, s)
        var layers: [Layer] = []
        for i in 0..<s.layers {
            let p = "model.layers.\(i)"
            let a = "\(p).self_attn"
            let attention: any AttentionBlock
            if let l = s.latent {
                attention = try Self.loadLatent(ck, s, l, prefix: a)
            } else {
                attention = try Self.loadAttention(ck, s, prefix: a, rope: rope)
            }
            let ffn: FFN
            if s.moeLayers[i] {
                ffn = .moe(try Self.loadMoE(ck, s, layer: i, recurrentCell: cell))
            } else {
                let m = "\(p).mlp"
                ffn = .dense(gate: try ck.tensor("\(m).gate_proj.weight", shape: [s.denseIntermediate, d]),
                             up: try ck.tensor("\(m).up_proj.weight", shape: [s.denseIntermediate, d]),
                             down: try ck.tensor("\(m).down_proj.weight", shape: [d, s.denseIntermediate]))
            }
            layers.append(Layer(inputNorm: try ck.tensor("\(p).input_layernorm.weight", shape: [d]),
                                postNorm: try ck.tensor("\(p).post_attention_layernorm.weight", shape: [d]),
                                attention: attention, ffn: ffn))
        }
        self.layers = layers
    }

    static func loadAttention(_ ck: Checkpoint, _ s: DecoderSpec, prefix a: String, rope: RotaryEmbedding) throws(ModelError) -> Attention {
        let d = s.hiddenSize, hd = s.headDim
        let qNormShape = s.qkNorm == .full ? [s.heads * hd] : [hd]
        let kNormShape = s.qkNorm == .full ? [s.kvHeads * hd] : [hd]
        return Attention(
            wq: try ck.tensor("\(a).q_proj.weight", shape: [s.heads * hd, d]),
            wk: try ck.tensor("\(a).k_proj.weight", shape: [s.kvHeads * hd, d]),
            wv: try ck.tensor("\(a).v_proj.weight", shape: [s.kvHeads * hd, d]),
            wo: try ck.tensor("\(a).o_proj.weight", shape: [d, s.heads * hd]),
            bq: s.qkvBias ? try ck.tensor("\(a).q_proj.bias", shape: [s.heads * hd]) : nil,
            bk: s.qkvBias ? try ck.tensor("\(a).k_proj.bias", shape: [s.kvHeads * hd]) : nil,
            bv: s.qkvBias ? try ck.tensor("\(a).v_proj.bias", shape: [s.kvHeads * hd]) : nil,
            bo: s.outputBias ? try ck.tensor("\(a).o_proj.bias", shape: [d]) : nil,
            qNorm: s.qkNorm == .none ? nil : try ck.tensor("\(a).q_norm.weight", shape: qNormShape),
            kNorm: s.qkNorm == .none ? nil : try ck.tensor("\(a).k_norm.weight", shape: kNormShape),
            spec: s, rope: rope)
    }

    static func loadLatent(_ ck: Checkpoint, _ s: DecoderSpec, _ l: DecoderSpec.Latent, prefix a: String) throws(ModelError) -> LatentAttention {
        let d = s.hiddenSize, h = s.heads, kd = l.nopeDim + l.ropeDim
        let query: LatentAttention.QueryProjection
        if let rq = l.qLoraRank {
            query = .lowRank(a: try ck.tensor("\(a).q_a_proj.weight", shape: [rq, d]),
                             norm: try ck.tensor("\(a).q_a_layernorm.weight", shape: [rq]),
                             b: try ck.tensor("\(a).q_b_proj.weight", shape: [h * kd, rq]))
        } else {
            query = .full(try ck.tensor("\(a).q_proj.weight", shape: [h * kd, d]))
        }
        return LatentAttention(query: query,
                               kvA: try ck.tensor("\(a).kv_a_proj_with_mqa.weight", shape: [l.kvLoraRank + l.ropeDim, d]),
                               kvANorm: try ck.tensor("\(a).kv_a_layernorm.weight", shape: [l.kvLoraRank]),
                               kvB: try ck.tensor("\(a).kv_b_proj.weight", shape: [h * (l.nopeDim + l.valueDim), l.kvLoraRank]),
                               o: try ck.tensor("\(a).o_proj.weight", shape: [d, h * l.valueDim]),
                               heads: h, nope: l.nopeDim, ropeDim: l.ropeDim, valueDim: l.valueDim, kvRank: l.kvLoraRank,
                               eps: s.rmsNormEps, scale: Float(s.rope.deepseekSoftmaxScale / Double(kd).squareRoot()),
                               rope: s.rope.rotary(headDim: l.ropeDim, layout: l.interleave ? .interleaved : .rotateHalf))
    }

    /// RMoE's GRU cell, shared by every layer, when config.json's `moekit_router` is `recurrent`.
    static func loadRecurrentCell(_ ck: Checkpoint, _ s: DecoderSpec) throws(ModelError) -> GRUCell? {
        guard let override = s.routerOverride,
              let r = try routerOrThrow(override, experts: s.experts, path: ck.configPath) as? RecurrentRouter else { return nil }
        return try RecurrentRouterWeights.loadCell(ck, stateSize: r.stateSize)
    }

    static func loadMoE(_ ck: Checkpoint, _ s: DecoderSpec, layer i: Int, recurrentCell: GRUCell?) throws(ModelError) -> MoELayer {
        let d = s.hiddenSize, inner = s.expertIntermediate
        let prefix = Architectures.moePrefix(s, layer: i)
        var gate: [Tensor] = [], up: [Tensor] = [], down: [Tensor] = []
        for e in 0..<s.experts {
            let n = Architectures.expertNames(s, layer: i, expert: e)
            gate.append(try ck.tensor(n.gate, shape: [inner, d]))
            up.append(try ck.tensor(n.up, shape: [inner, d]))
            down.append(try ck.tensor(n.down, shape: [d, inner]))
        }
        var shared: SharedExpert?
        if s.sharedExperts > 0 {
            let si = s.sharedExperts * inner, m = "\(prefix).shared_experts"
            shared = SharedExpert(gate: try ck.tensor("\(m).gate_proj.weight", shape: [si, d]),
                                  up: try ck.tensor("\(m).up_proj.weight", shape: [si, d]),
                                  down: try ck.tensor("\(m).down_proj.weight", shape: [d, si]))
        } else if let si = s.sharedExpertIntermediate, si > 0 {
            let m = "\(prefix).shared_expert"
            shared = SharedExpert(gate: try ck.tensor("\(m).gate_proj.weight", shape: [si, d]),
                                  up: try ck.tensor("\(m).up_proj.weight", shape: [si, d]),
                                  down: try ck.tensor("\(m).down_proj.weight", shape: [d, si]),
                                  outputGate: s.sharedExpertGate ? try ck.tensor("\(prefix).shared_expert_gate.weight", shape: [1, d]) : nil)
        }
        var router: any Router
        if let override = s.routerOverride {
            router = try routerOrThrow(override, experts: s.experts, path: ck.configPath)
            // A trained DeepSeek-V3-style router keeps one selection bias per layer.
            if let sigmoid = router as? TopKSigmoidRouter, sigmoid.scoring == .sigmoid,
               let bias = try ck.optionalTensor("\(prefix).gate.e_score_correction_bias", shape: [s.experts]) {
                router = sigmoid.withBias(bias.toFloats())
            }
        } else {
            switch s.routerKind {
        case .softmaxTopK:
            router = TopKSoftmaxRouter(experts: s.experts, k: s.topK, renormalize: s.normTopKProb)
        case .deepseekV3:
            let bias = try ck.optionalTensor("\(prefix).gate.e_score_correction_bias", shape: [s.experts])?.toFloats()
            router = TopKSigmoidRouter(experts: s.experts, k: s.topK, scoring: .sigmoid, bias: bias, groups: s.groups,
                                       topkGroup: s.topkGroup, groupScore: .sumTop2, renormalize: s.normTopKProb,
                                       routedScaling: s.routedScaling)
        case .deepseekV2:
            router = TopKSigmoidRouter(experts: s.experts, k: s.topK, scoring: .softmax, groups: s.groups,
                                       topkGroup: s.topkGroup, groupScore: .max, renormalize: false,
                                       routedScaling: s.routedScaling)
        }
        }
        let gateWeights: RouterGate
        if let cell = recurrentCell {
            let h = cell.hiddenSize
            gateWeights = .recurrent(RecurrentGate(
                inputProjection: try ck.tensor(RecurrentRouterWeights.inputProjection(prefix), shape: [h, d]),
                outputProjection: try ck.tensor(RecurrentRouterWeights.outputProjection(prefix), shape: [router.logitCount, h]),
                cell: cell))
        } else {
            gateWeights = .linear(weight: try ck.tensor("\(prefix).gate.weight", shape: [router.logitCount, d]))
        }
        return MoELayer(gate: gateWeights, router: router, experts: SwiGLUExperts(gate: gate, up: up, down: down), shared: shared)
    }

    /// Bytes of weights one decoded token reads: its embedding row, every layer's attention,
    /// norms, router, k average-sized experts (and shared or dense FFN), the final norm and the
    /// LM head. The decode bandwidth ceiling is memory bandwidth over this (DESIGN.md, Numbers).
    public var decodeWeightBytes: Double {
        var bytes = Double(embed.byteCount / spec.vocabSize + finalNorm.byteCount + lmHead.byteCount)
        for layer in layers {
            bytes += Double(layer.attention.weightBytes + layer.inputNorm.byteCount + layer.postNorm.byteCount)
            switch layer.ffn {
            case let .moe(moe): bytes += moe.decodeBytes(activeExperts: Double(spec.topK))
            case let .dense(g, u, d): bytes += Double(g.byteCount + u.byteCount + d.byteCount)
            }
        }
        return bytes
    }

    /// Multiply-adds times two per token of prefill, counting the weights a token goes
    /// through (attention, router, k experts, shared or dense FFN); the LM head is left out
    /// (prefill computes it for the last position only).
    public var prefillFlopsPerToken: Double {
        var params = 0.0
        for layer in layers {
            params += Double(layer.attention.weightCount)
            switch layer.ffn {
            case let .moe(moe):
                params += Double(spec.experts * spec.hiddenSize) + Double(spec.topK * 3 * spec.hiddenSize * spec.expertIntermediate)
                if let sh = moe.shared { params += Double(sh.gate.count + sh.up.count + sh.down.count) }
            case let .dense(g, u, d): params += Double(g.count + u.count + d.count)
            }
        }
        return 2 * params
    }

    /// An empty KV cache for this model.
    public func makeCache(capacity: Int = 256) -> KVCache {
        if let l = spec.latent {
            return KVCache(layers: spec.layers, kvHeads: spec.heads, keyDim: l.nopeDim + l.ropeDim, valueDim: l.valueDim, capacity: capacity)
        }
        return KVCache(layers: spec.layers, kvHeads: spec.kvHeads, keyDim: spec.headDim, valueDim: spec.headDim, capacity: capacity)
    }

    /// Logits [T, V] for `tokens` appended to what `cache` holds (positions continue from it).
    /// `lastOnly` computes the LM head for the final position only ([1, V]), as decoding needs.
    public func forward(_ tokens: [Int], cache: inout KVCache, lastOnly: Bool = false,
                        trace: ((Int, Routing) -> Void)? = nil) throws(ModelError) -> Tensor {
        let s = spec, d = s.hiddenSize, t = tokens.count
        for id in tokens where id < 0 || id >= s.vocabSize { throw .tokenOutOfRange(id: id, vocabularySize: s.vocabSize) }
        if t == 0 { return Tensor(zeros: [0, s.vocabSize]) }
        cache.reserve(t)
        // Embedding rows, widened to f32.
        var x = Tensor(zeros: [t, d])
        let xp = x.mutableFloats
        for (row, id) in tokens.enumerated() {
            let values = embed[id].toFloats()
            for j in 0..<d { xp[row * d + j] = values[j] }
        }
        var state = RouterState()
        for (i, layer) in layers.enumerated() {
            let h = Kernels.rmsNorm(x, weight: layer.inputNorm, eps: s.rmsNormEps, pool: pool)
            let a = layer.attention.forward(h, layer: i, cache: &cache, pool: pool)
            add(a, into: x)
            let h2 = Kernels.rmsNorm(x, weight: layer.postNorm, eps: s.rmsNormEps, pool: pool)
            let f: Tensor
            switch layer.ffn {
            case let .moe(moe):
                let out = moe.forward(h2, state: &state, pool: pool)
                trace?(i, out.routing)
                f = out.output
            case let .dense(gate, up, down):
                let g = Tensor(zeros: [t, gate.shape[0]]), u = Tensor(zeros: [t, up.shape[0]])
                Kernels.linearBatch([LinearJob(input: h2, weight: gate, output: g), LinearJob(input: h2, weight: up, output: u)], pool: pool)
                Kernels.siluMul(gate: g, up: u, pool: pool)
                f = Kernels.matmul(g, down, pool: pool)
            }
            add(f, into: x)
        }
        cache.advance(t)
        if lastOnly { x = x.rows((t - 1)..<t).copied() }
        let normed = Kernels.rmsNorm(x, weight: finalNorm, eps: s.rmsNormEps, pool: pool)
        return Kernels.matmul(normed, lmHead, pool: pool)
    }

    func add(_ y: Tensor, into x: Tensor) {
        let xp = x.mutableFloats, yp = y.floats
        for i in 0..<xp.count { xp[i] += yp[i] }
    }
}
