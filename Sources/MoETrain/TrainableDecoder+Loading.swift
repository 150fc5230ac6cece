import Foundation
import MoE
import MoECore
import MoEModels

/// Training from a checkpoint of any family: the model the inference path would run, with every
/// weight widened to an f32 parameter.
extension TrainableDecoder {
    /// Loads the Hugging Face checkpoint folder `directory` to train from its weights: every
    /// family with grouped-query attention (Mixtral, Qwen2/3-MoE, OLMoE, GLM-4.5 and the dense
    /// Llama, Mistral, Qwen2, Qwen3). `router` replaces the family's router (its expert count
    /// must match); by default the checkpoint's own routes, with each layer's selection bias.
    ///
    /// GPT-OSS trains too (sinks, biases, the clamped activation; its stacked experts become
    /// per-expert parameters, stacked again when saved), and DeepSeek-V2/V3 (multi-head latent
    /// attention).
    ///
    /// With `frozenProjections`, the projection matrices (attention, router, MLPs, experts, LM
    /// head) are loaded frozen in their stored dtype (bf16, f16, or a GGUF's block format) rather
    /// than widened: the base of a LoRA run, which never changes them.
    public convenience init(directory: String, router override: RouterConfig? = nil, frozenProjections: Bool = false) throws(ModelError) {
        let ck = try Checkpoint(directory: directory)
        let config = (try? JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: ck.configPath)))) as? [String: Any]
        try self.init(source: ck, spec: try Architectures.spec(configAt: ck.configPath), sourceConfig: config, router: override,
                      frozenProjections: frozenProjections)
    }

    /// Loads a checkpoint folder or a GGUF file (any stored type: block formats are widened to
    /// f32 parameters; Llama-family q/k rows, which llama.cpp permutes for its interleaved
    /// RoPE, are put back in transformers' order), to train from its weights.
    public convenience init(path: String, router override: RouterConfig? = nil, frozenProjections: Bool = false) throws(ModelError) {
        guard GGUFFile.isGGUF(path: path) else { try self.init(directory: path, router: override, frozenProjections: frozenProjections); return }
        let weights = try GGUFWeights(path: path)
        try self.init(source: weights, spec: weights.spec, sourceConfig: try GGUFWeights.config(weights.file), router: override,
                      frozenProjections: frozenProjections)
    }

    /// Loads the weights of `ck`, which `spec` describes; `sourceConfig` (config.json's keys) is
    /// what a saved checkpoint of this model writes again.
    convenience init(source ck: any WeightSource, spec loaded: DecoderSpec, sourceConfig source: [String: Any]?,
                     router override: RouterConfig?, frozenProjections: Bool = false) throws(ModelError) {
        let path = ck.configPath
        var spec = loaded
        if let override {
            guard spec.isMoE else { throw .invalidConfig(path: path, field: "router", reason: "the model has no MoE layer to route") }
            spec.routerOverride = override
        }
        let permuted = spec.ropeInterleaved
        spec.ropeInterleaved = false  // the training ops rotate halves, as transformers does
        // A projection matrix: frozen in its stored dtype with `frozenProjections`, else widened.
        func projection(_ t: Tensor) -> Variable { frozenProjections ? Self.frozen(t) : Self.parameter(t) }
        func f32(_ name: String, _ shape: [Int], isProjection: Bool = false) throws(ModelError) -> Variable {
            let t = try ck.tensor(name, shape: shape)
            let qk = name.hasSuffix("self_attn.q_proj.weight") || name.hasSuffix("self_attn.k_proj.weight")
                || name.hasSuffix("self_attn.q_proj.bias") || name.hasSuffix("self_attn.k_proj.bias")
            guard permuted && qk else { return isProjection ? projection(t) : Self.parameter(t) }
            return Self.parameter(GGUFConverter.halvesRope(t, heads: name.contains(".q_proj.") ? spec.heads : spec.kvHeads))
        }
        let n = spec.names, d = spec.hiddenSize, hd = spec.headDim
        let embed = try f32(n.embedding, [spec.vocabSize, d])
        let tied = spec.tieWordEmbeddings && !ck.has(n.lmHead)
        let lmHead = tied ? embed : try f32(n.lmHead, [spec.vocabSize, d], isProjection: true)
        let firstMoE = spec.moeLayers.firstIndex(of: true)
        let router = try firstMoE.map { i throws(ModelError) in try DecoderModel.router(ck, spec, layer: i) }
        let stateSize = (router as? RecurrentRouter)?.stateSize
        var layers: [Layer] = []
        for i in 0..<spec.layers {
            let a = n.attention(i)
            func optional(_ name: String, _ shape: [Int], _ present: Bool) throws(ModelError) -> Variable? {
                present ? try f32(name, shape) : nil
            }
            let normShape = spec.qkNorm == .full ? [spec.heads * hd] : [hd], kNormShape = spec.qkNorm == .full ? [spec.kvHeads * hd] : [hd]
            var layer: Layer
            if let l = spec.latent {
                let h = spec.heads, kd = l.nopeDim + l.ropeDim
                let qA = try l.qLoraRank.map { r throws(ModelError) in try f32("\(a).q_a_proj.weight", [r, d], isProjection: true) }
                let qANorm = try l.qLoraRank.map { r throws(ModelError) in try f32("\(a).q_a_layernorm.weight", [r]) }
                let wq: Variable
                if let r = l.qLoraRank {
                    wq = try f32("\(a).q_b_proj.weight", [h * kd, r], isProjection: true)
                } else {
                    wq = try f32("\(a).q_proj.weight", [h * kd, d], isProjection: true)
                }
                layer = Layer(inputNorm: try f32(n.inputNorm(i), [d]), wq: wq,
                              wk: try f32("\(a).kv_a_proj_with_mqa.weight", [l.kvLoraRank + l.ropeDim, d], isProjection: true),
                              wv: try f32("\(a).kv_b_proj.weight", [h * (l.nopeDim + l.valueDim), l.kvLoraRank], isProjection: true),
                              wo: try f32("\(a).o_proj.weight", [d, h * l.valueDim], isProjection: true), postNorm: try f32(n.postAttentionNorm(i), [d]),
                              bo: try optional("\(a).o_proj.bias", [d], spec.outputBias),
                              latent: LatentParameters(qA: qA, qANorm: qANorm, kvANorm: try f32("\(a).kv_a_layernorm.weight", [l.kvLoraRank])),
                              moe: nil)
            } else {
            layer = Layer(inputNorm: try f32(n.inputNorm(i), [d]), wq: try f32("\(a).q_proj.weight", [spec.heads * hd, d], isProjection: true),
                              wk: try f32("\(a).k_proj.weight", [spec.kvHeads * hd, d], isProjection: true),
                              wv: try f32("\(a).v_proj.weight", [spec.kvHeads * hd, d], isProjection: true),
                              wo: try f32("\(a).o_proj.weight", [d, spec.heads * hd], isProjection: true), postNorm: try f32(n.postAttentionNorm(i), [d]),
                              bq: try optional("\(a).q_proj.bias", [spec.heads * hd], spec.qkvBias),
                              bk: try optional("\(a).k_proj.bias", [spec.kvHeads * hd], spec.qkvBias),
                              bv: try optional("\(a).v_proj.bias", [spec.kvHeads * hd], spec.qkvBias),
                              bo: try optional("\(a).o_proj.bias", [d], spec.outputBias),
                              qNorm: try optional("\(a).q_norm.weight", normShape, spec.qkNorm != .none),
                              kNorm: try optional("\(a).k_norm.weight", kNormShape, spec.qkNorm != .none),
                              sinks: try optional(n.sinks(i), [spec.heads], spec.attentionSinks), moe: nil)
            }
            guard spec.moeLayers[i], let router else {
                layer.dense = try Self.ffn(ck, n.denseFFN(i), width: spec.denseIntermediate, d: d, gate: nil, frozen: frozenProjections)
                layers.append(layer)
                continue
            }
            let experts = try DecoderModel.loadExperts(ck, spec, layer: i)
            let gate: RouterParameters
            if let h = stateSize {
                gate = .recurrent(input: try f32(RecurrentRouterWeights.inputProjection(n.moe(i)), [h, d]),
                                  output: try f32(RecurrentRouterWeights.outputProjection(n.moe(i)), [router.logitCount, h]))
            } else {
                gate = .linear(try f32(n.routerWeight(i), [router.logitCount, d], isProjection: true))
            }
            var moe = MoEParameters(router: gate, gate: experts.gate.map(projection), up: experts.up.map(projection),
                                    down: experts.down.map(projection))
            moe.activation = experts.activation
            moe.routerBias = try optional(n.routerBias(i), [router.logitCount], spec.routerBias)
            if let b = experts.biases {
                func vars(_ rows: [[Float]]) -> [Variable] { rows.map { Variable(Tensor(shape: [$0.count], values: $0)) } }
                (moe.gateBias, moe.upBias, moe.downBias) = (vars(b.gate), vars(b.up), vars(b.down))
            }
            layer.moe = moe
            let sharedWidth = spec.sharedExperts > 0 ? spec.sharedExperts * spec.expertIntermediate : (spec.sharedExpertIntermediate ?? 0)
            if sharedWidth > 0 {
                layer.shared = try Self.ffn(ck, n.sharedExpert(i), width: sharedWidth, d: d,
                                            gate: spec.sharedExpertGate ? n.sharedExpertGate(i) : nil, frozen: frozenProjections)
            }
            if let sigmoid = try DecoderModel.router(ck, spec, layer: i) as? TopKSigmoidRouter, sigmoid.scoring == .sigmoid {
                layer.routerBias = sigmoid.bias ?? [Float](repeating: 0, count: spec.experts)
            }
            layers.append(layer)
        }
        var cell: GRUParameters?
        if let h = stateSize {
            func gates(_ kind: String, _ side: String, _ shape: [Int]) throws(ModelError) -> [Variable] {
                var out: [Variable] = []
                for g in RecurrentRouterWeights.gates { out.append(try f32(RecurrentRouterWeights.cellTensor(kind, side, g), shape)) }
                return out
            }
            cell = GRUParameters(weightI: try gates("weight", "i", [h, h]), weightH: try gates("weight", "h", [h, h]),
                                 biasI: try gates("bias", "i", [h]), biasH: try gates("bias", "h", [h]))
        }
        var shape = Shape(vocabSize: spec.vocabSize, hiddenSize: d, layers: spec.layers, heads: spec.heads, kvHeads: spec.kvHeads,
                          experts: spec.experts, expertSize: spec.expertIntermediate)
        shape.ropeTheta = spec.rope.theta
        shape.rmsNormEps = spec.rmsNormEps
        // A dense model has no router; the layers never call it.
        self.init(spec: spec, shape: shape, router: router ?? TopKSoftmaxRouter(experts: 1, k: 1), embed: embed,
                  finalNorm: try f32(n.finalNorm, [d]), lmHead: lmHead, layers: layers, routerCell: cell, sourceConfig: source)
    }

    /// A parameter holding `t` widened to f32 (a copy: the checkpoint's mapping stays read-only).
    static func parameter(_ t: Tensor) -> Variable { Variable(t.dtype == .f32 ? t.copied() : t.converted(to: .f32)) }

    /// A frozen weight holding `t` in its stored dtype (a copy, so that a file changed under the
    /// run cannot fault its pages in).
    static func frozen(_ t: Tensor) -> Variable { Variable(t.copied(), requiresGrad: false) }

    /// A SwiGLU FFN's projections under `prefix` (and a sigmoid gate named `gate`), `frozen` in
    /// their stored dtype or widened to f32 parameters.
    static func ffn(_ ck: any WeightSource, _ prefix: String, width: Int, d: Int, gate: String?, frozen keep: Bool = false) throws(ModelError) -> FFNParameters {
        func make(_ t: Tensor) -> Variable { keep ? frozen(t) : parameter(t) }
        return FFNParameters(gate: make(try ck.tensor("\(prefix).gate_proj.weight", shape: [width, d])),
                             up: make(try ck.tensor("\(prefix).up_proj.weight", shape: [width, d])),
                             down: make(try ck.tensor("\(prefix).down_proj.weight", shape: [d, width])),
                             outputGate: try gate.map { g throws(ModelError) in make(try ck.tensor(g, shape: [1, d])) })
    }
}
