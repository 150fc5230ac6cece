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
            out += [(n.inputNorm(i), l.inputNorm), (n.postAttentionNorm(i), l.postNorm),
                    ("\(a).q_proj.weight", l.wq), ("\(a).k_proj.weight", l.wk), ("\(a).v_proj.weight", l.wv),
                    ("\(a).o_proj.weight", l.wo)]
            for (name, v) in [("q_proj.bias", l.bq), ("k_proj.bias", l.bk), ("v_proj.bias", l.bv), ("o_proj.bias", l.bo),
                              ("q_norm.weight", l.qNorm), ("k_norm.weight", l.kNorm)] {
                if let v { out.append(("\(a).\(name)", v)) }
            }
            if let d = l.dense { out += ffn(n.denseFFN(i), d) }
            guard let moe = l.moe else { continue }
            switch moe.router {
            case let .linear(w): out.append((n.routerWeight(i), w))
            // RMoE's names (qiuzh20/RMoE), which MoEModels' RecurrentRouterWeights reads.
            case let .recurrent(input, output):
                out += [(RecurrentRouterWeights.inputProjection(n.moe(i)), input),
                        (RecurrentRouterWeights.outputProjection(n.moe(i)), output)]
            }
            for e in moe.gate.indices {
                let x = n.expert(i, e)
                out += [(x.gate, moe.gate[e]), (x.up, moe.up[e]), (x.down, moe.down[e])]
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

    /// Every parameter under its checkpoint name, then each layer's DeepSeek-V3 selection bias
    /// (`...gate.e_score_correction_bias`), when the router has one.
    public var namedTensors: [(name: String, tensor: Tensor)] {
        orderedVariables.map { ($0.name, $0.variable.value) } + namedBiases.map { ($0.name, Tensor(shape: [$0.bias.count], values: $0.bias)) }
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
    public func load(_ tensor: (String) throws -> Tensor) throws {
        for (name, variable) in namedVariables {
            let t = try tensor(name)
            guard t.shape == variable.shape else {
                throw MoECoreError.invalidValue(path: nil, field: name, reason: "shape \(t.shape), expected \(variable.shape)")
            }
            variable.value = t.dtype == .f32 ? t.copied() : t.converted(to: .f32)
            variable.grad = nil
        }
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
