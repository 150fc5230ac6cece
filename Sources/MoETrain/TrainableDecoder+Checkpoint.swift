import Foundation
import MoE
import MoECore
import MoEModels

/// Checkpoint names and config.json for a `TrainableDecoder`, from its spec's `TensorNames`
/// (the one place the names are spelled), so `moe train` saves a folder that `DecoderModel`
/// and transformers load.
extension TrainableDecoder {
    /// The Mixtral spec of a fresh model of `shape` with `topK` experts per token, read through
    /// the Mixtral family's own config reading (so its sizes are bounded as any config's are).
    public static func spec(for shape: Shape, topK: Int) throws(ModelError) -> DecoderSpec {
        let config = mixtralConfig(shape, topK: topK)
        let data = (try? JSONSerialization.data(withJSONObject: config)) ?? Data()
        return try Architectures.spec(configData: data, path: "model")
    }

    static func mixtralConfig(_ s: Shape, topK: Int) -> [String: Any] {
        ["architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "vocab_size": s.vocabSize,
         "hidden_size": s.hiddenSize, "num_hidden_layers": s.layers, "num_attention_heads": s.heads,
         "num_key_value_heads": s.kvHeads, "head_dim": s.headDim, "intermediate_size": s.expertSize,
         "num_local_experts": s.experts, "num_experts_per_tok": topK,
         "rms_norm_eps": Double(s.rmsNormEps), "rope_theta": s.ropeTheta, "max_position_embeddings": 4096,
         "tie_word_embeddings": false, "torch_dtype": "float32", "hidden_act": "silu"]
    }

    /// `spec(for:topK:)` for a shape already validated (`TrainingConfig.validate` checks it).
    static func mixtralSpec(_ s: Shape, topK: Int) -> DecoderSpec {
        do {
            return try spec(for: s, topK: topK)
        } catch {
            preconditionFailure("TrainableDecoder: \(error) (validate the shape first: TrainableDecoder.spec(for:topK:))")
        }
    }

    /// Every parameter's variable under its checkpoint name, in model order.
    var orderedVariables: [(name: String, variable: Variable)] {
        let n = spec.names
        var out: [(String, Variable)] = [(n.embedding, embed), (n.finalNorm, finalNorm)]
        if lmHead !== embed { out.append((n.lmHead, lmHead)) }
        for (i, l) in layers.enumerated() {
            let a = n.attention(i)
            out += [(n.inputNorm(i), l.inputNorm), (n.postAttentionNorm(i), l.postNorm)]
            if let lat = l.latent {  // DeepSeek's names (see `Layer`)
                if let qA = lat.qA, let qANorm = lat.qANorm {
                    out += [("\(a).q_a_proj.weight", qA), ("\(a).q_a_layernorm.weight", qANorm), ("\(a).q_b_proj.weight", l.wq)]
                } else {
                    out.append(("\(a).q_proj.weight", l.wq))
                }
                out += [("\(a).kv_a_proj_with_mqa.weight", l.wk), ("\(a).kv_a_layernorm.weight", lat.kvANorm),
                        ("\(a).kv_b_proj.weight", l.wv), ("\(a).o_proj.weight", l.wo)]
            } else {
                out += [("\(a).q_proj.weight", l.wq), ("\(a).k_proj.weight", l.wk), ("\(a).v_proj.weight", l.wv),
                        ("\(a).o_proj.weight", l.wo)]
            }
            for (name, v) in [("q_proj.bias", l.bq), ("k_proj.bias", l.bk), ("v_proj.bias", l.bv), ("o_proj.bias", l.bo),
                              ("q_norm.weight", l.qNorm), ("k_norm.weight", l.kNorm)] {
                if let v { out.append(("\(a).\(name)", v)) }
            }
            if let sinks = l.sinks { out.append((n.sinks(i), sinks)) }
            if let d = l.dense { out += ffn(n.denseFFN(i), d) }
            guard let moe = l.moe else { continue }
            switch moe.router {
            case let .linear(w): out.append((n.routerWeight(i), w))
            // RMoE's names (qiuzh20/RMoE), which MoEModels' RecurrentRouterWeights reads.
            case let .recurrent(input, output):
                out += [(RecurrentRouterWeights.inputProjection(n.moe(i)), input),
                        (RecurrentRouterWeights.outputProjection(n.moe(i)), output)]
            }
            if let b = moe.routerBias { out.append((n.routerBias(i), b)) }
            for e in moe.gate.indices {
                let x = n.expert(i, e)
                out += [(x.gate, moe.gate[e]), (x.up, moe.up[e]), (x.down, moe.down[e])]
                for (name, biases) in [(x.gate, moe.gateBias), (x.up, moe.upBias), (x.down, moe.downBias)] {
                    if let biases { out.append((Self.biasName(name), biases[e])) }
                }
            }
            if let sh = l.shared {
                out += ffn(n.sharedExpert(i), sh)
                if let g = sh.outputGate { out.append((n.sharedExpertGate(i), g)) }
            }
        }
        if let c = routerCell {
            for (g, gate) in RecurrentRouterWeights.gates.enumerated() {
                out += [(RecurrentRouterWeights.cellTensor("weight", "i", gate), c.weightI[g]),
                        (RecurrentRouterWeights.cellTensor("weight", "h", gate), c.weightH[g]),
                        (RecurrentRouterWeights.cellTensor("bias", "i", gate), c.biasI[g]),
                        (RecurrentRouterWeights.cellTensor("bias", "h", gate), c.biasH[g])]
            }
        }
        return out
    }

    /// A SwiGLU FFN's three projections under `prefix`.
    private func ffn(_ prefix: String, _ f: FFNParameters) -> [(String, Variable)] {
        [("\(prefix).gate_proj.weight", f.gate), ("\(prefix).up_proj.weight", f.up), ("\(prefix).down_proj.weight", f.down)]
    }

    /// A per-expert bias's name, beside its weight's (`...experts.3.gate_proj.bias`).
    static func biasName(_ weightName: String) -> String { String(weightName.dropLast("weight".count)) + "bias" }

    /// Every parameter under its checkpoint name, then each layer's DeepSeek-V3 selection bias
    /// (`...gate.e_score_correction_bias`), when the router has one. A family that stores its
    /// experts stacked (GPT-OSS) gets them stacked again, in its layout.
    public var namedTensors: [(name: String, tensor: Tensor)] {
        var out = orderedVariables.map { ($0.name, $0.variable.value) }
        if spec.names.stackedLayout == .interleavedInputMajor {
            let perExpert = Set(layers.indices.flatMap { i in (layers[i].moe?.gate.indices ?? 0..<0).flatMap { e -> [String] in
                let x = spec.names.expert(i, e)
                return [x.gate, x.up, x.down, Self.biasName(x.gate), Self.biasName(x.up), Self.biasName(x.down)]
            } })
            out = out.filter { !perExpert.contains($0.0) }
            for (i, l) in layers.enumerated() { if let moe = l.moe { out += Self.stacked(moe, names: spec.names.stackedExperts(i)) } }
        }
        return out + namedBiases.map { ($0.name, Tensor(shape: [$0.bias.count], values: $0.bias)) }
    }

    /// GPT-OSS's stacked experts from per-expert parameters: `gate_up_proj` [E, d, 2I] with gate
    /// and up columns interleaved, `down_proj` [E, I, d], and the biases [E, 2I] and [E, d].
    static func stacked(_ moe: MoEParameters, names: (gateUp: String, down: String, gateUpBias: String, downBias: String))
        -> [(String, Tensor)] {
        let e = moe.gate.count, inner = moe.gate[0].shape[0], d = moe.gate[0].shape[1]
        var gu = [Float](repeating: 0, count: e * d * 2 * inner), dn = [Float](repeating: 0, count: e * inner * d)
        for x in 0..<e {
            let g = moe.gate[x].value.floats, u = moe.up[x].value.floats, w = moe.down[x].value.floats  // [I, d], [I, d], [d, I]
            for c in 0..<inner {
                for j in 0..<d {
                    gu[(x * d + j) * 2 * inner + 2 * c] = g[c * d + j]
                    gu[(x * d + j) * 2 * inner + 2 * c + 1] = u[c * d + j]
                    dn[(x * inner + c) * d + j] = w[j * inner + c]
                }
            }
        }
        var out: [(String, Tensor)] = [(names.gateUp, Tensor(shape: [e, d, 2 * inner], values: gu)),
                                       (names.down, Tensor(shape: [e, inner, d], values: dn))]
        if let gb = moe.gateBias, let ub = moe.upBias, let db = moe.downBias {
            var b = [Float](repeating: 0, count: e * 2 * inner)
            for x in 0..<e {
                let g = gb[x].value.floats, u = ub[x].value.floats
                for c in 0..<inner { b[x * 2 * inner + 2 * c] = g[c]; b[x * 2 * inner + 2 * c + 1] = u[c] }
            }
            out += [(names.gateUpBias, Tensor(shape: [e, 2 * inner], values: b)),
                    (names.downBias, Tensor(shape: [e, d], values: db.flatMap { $0.value.toFloats() }))]
        }
        return out
    }

    /// `tensor` for the per-expert names of a stacked family (GPT-OSS): each is cut from its
    /// layer's stacked tensors (read once per layer).
    func unstacking(_ tensor: @escaping (String) throws -> Tensor) -> (String) throws -> Tensor {
        guard spec.names.stackedLayout == .interleavedInputMajor else { return tensor }
        var perExpert: [String: (layer: Int, expert: Int, part: Int)] = [:]
        for (i, l) in layers.enumerated() {
            for e in l.moe?.gate.indices ?? 0..<0 {
                let x = spec.names.expert(i, e)
                for (part, name) in [x.gate, x.up, x.down, Self.biasName(x.gate), Self.biasName(x.up), Self.biasName(x.down)].enumerated() {
                    perExpert[name] = (i, e, part)
                }
            }
        }
        var cache: [Int: [Float]] = [:]  // layer * 4 + stacked tensor: its values
        let names = spec.names, inner = spec.expertIntermediate, d = spec.hiddenSize
        return { name in
            guard let (i, e, part) = perExpert[name] else { return try tensor(name) }
            let st = names.stackedExperts(i)
            let which = [0, 0, 1, 2, 2, 3][part]
            let key = i * 4 + which
            if cache[key] == nil { cache[key] = try tensor([st.gateUp, st.down, st.gateUpBias, st.downBias][which]).toFloats() }
            let v = cache[key] ?? []
            switch part {
            case 0, 1:  // gate or up [I, d] from [E, d, 2I]
                var out = [Float](repeating: 0, count: inner * d)
                for c in 0..<inner { for j in 0..<d { out[c * d + j] = v[(e * d + j) * 2 * inner + 2 * c + part] } }
                return Tensor(shape: [inner, d], values: out)
            case 2:  // down [d, I] from [E, I, d]
                var out = [Float](repeating: 0, count: d * inner)
                for c in 0..<inner { for j in 0..<d { out[j * inner + c] = v[(e * inner + c) * d + j] } }
                return Tensor(shape: [d, inner], values: out)
            case 3, 4:  // gate or up bias [I] from [E, 2I]
                return Tensor(shape: [inner], values: (0..<inner).map { v[e * 2 * inner + 2 * $0 + part - 3] })
            default:  // down bias [d] from [E, d]
                return Tensor(shape: [d], values: Array(v[(e * d)..<((e + 1) * d)]))
            }
        }
    }

    /// Each layer's selection bias under its checkpoint name.
    var namedBiases: [(name: String, layer: Int, bias: [Float])] {
        layers.enumerated().compactMap { i, l in l.routerBias.map { (spec.names.correctionBias(i), i, $0) } }
    }

    /// Each parameter's variable under its checkpoint name (for gradients and optimiser state).
    public var namedVariables: [String: Variable] {
        Dictionary(uniqueKeysWithValues: orderedVariables.map { ($0.name, $0.variable) })
    }

    /// Replaces every parameter with the tensor `tensor(name)` gives (widened to f32), checking
    /// shapes; throws what `tensor` throws, or `MoECoreError.invalidValue` for a wrong shape.
    public func load(_ tensor: @escaping (String) throws -> Tensor) throws {
        let tensor = unstacking(tensor)
        for (name, variable) in namedVariables { try variable.load(tensor(name), name: name) }
        for (name, i, bias) in namedBiases {
            let t = try tensor(name)
            guard t.shape == [bias.count] else {
                throw MoECoreError.invalidValue(path: nil, field: name, reason: "shape \(t.shape), expected [\(bias.count)]")
            }
            layers[i].routerBias = t.toFloats()
        }
    }

    /// config.json for this model: the source checkpoint's (weights now f32), or Mixtral's
    /// fields for a fresh model; plus the router under `moekit_router` when it is not the
    /// family's own (transformers then cannot run it; MoEKit can).
    public func configJSON(routerConfig: RouterConfig? = nil) -> [String: Any] {
        var c = sourceConfig ?? Self.mixtralConfig(shape, topK: router.topK ?? 2)
        c["torch_dtype"] = "float32"
        if let routerConfig, routerConfig.name != "topk-softmax" || routerConfig.renormalize == false {
            if let data = try? JSONEncoder().encode(routerConfig), let json = try? JSONSerialization.jsonObject(with: data) {
                c["moekit_router"] = json
            }
        }
        return c
    }
}
