import Foundation
import MoE
import MoECore

/// Hugging Face names and config for a `TrainableDecoder` (Mixtral's layout), so a library
/// user, or `moe train`, can save it with MoEModels' safetensors writer and load it with
/// `DecoderModel` or transformers. (MoETrain does no file IO: DESIGN.md lets it import only
/// MoE and MoECore.)
extension TrainableDecoder {
    /// Every parameter's variable under its checkpoint name, in model order (the one place the
    /// names are spelled).
    var orderedVariables: [(name: String, variable: Variable)] {
        var out: [(String, Variable)] = [("model.embed_tokens.weight", embed), ("model.norm.weight", finalNorm), ("lm_head.weight", lmHead)]
        for (i, l) in layers.enumerated() {
            let p = "model.layers.\(i)", a = "\(p).self_attn", m = "\(p).block_sparse_moe"
            out += [("\(p).input_layernorm.weight", l.inputNorm), ("\(p).post_attention_layernorm.weight", l.postNorm),
                    ("\(a).q_proj.weight", l.wq), ("\(a).k_proj.weight", l.wk), ("\(a).v_proj.weight", l.wv),
                    ("\(a).o_proj.weight", l.wo)]
            switch l.moe.router {
            case let .linear(w): out.append(("\(m).gate.weight", w))
            // RMoE's names (qiuzh20/RMoE), which MoEModels' RecurrentRouterWeights reads.
            case let .recurrent(input, output): out += [("\(m).weight1", input), ("\(m).weight2", output)]
            }
            for e in 0..<shape.experts {
                out += [("\(m).experts.\(e).w1.weight", l.moe.gate[e]), ("\(m).experts.\(e).w3.weight", l.moe.up[e]),
                        ("\(m).experts.\(e).w2.weight", l.moe.down[e])]
            }
        }
        if let c = routerCell {
            for (g, gate) in ["r", "z", "n"].enumerated() {
                out += [("model.rnn_router.weight_i\(gate)", c.weightI[g]), ("model.rnn_router.weight_h\(gate)", c.weightH[g]),
                        ("model.rnn_router.bias_i\(gate)", c.biasI[g]), ("model.rnn_router.bias_h\(gate)", c.biasH[g])]
            }
        }
        return out
    }

    /// Every parameter under its checkpoint name, then each layer's DeepSeek-V3 selection bias
    /// (`...gate.e_score_correction_bias`, as DeepSeek-V3 names it), when the router has one.
    public var namedTensors: [(name: String, tensor: Tensor)] {
        orderedVariables.map { ($0.name, $0.variable.value) } + namedBiases.map { ($0.name, Tensor(shape: [$0.bias.count], values: $0.bias)) }
    }

    /// Each layer's selection bias under its checkpoint name.
    var namedBiases: [(name: String, layer: Int, bias: [Float])] {
        layers.enumerated().compactMap { i, l in
            l.routerBias.map { ("model.layers.\(i).block_sparse_moe.gate.e_score_correction_bias", i, $0) }
        }
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

    /// config.json for this model: Mixtral's fields, plus the router under `moekit_router`
    /// when it is not Mixtral's own (transformers then cannot run it; MoEKit can).
    public func configJSON(routerConfig: RouterConfig? = nil) -> [String: Any] {
        let s = shape
        var c: [String: Any] = [
            "architectures": ["MixtralForCausalLM"], "model_type": "mixtral", "vocab_size": s.vocabSize,
            "hidden_size": s.hiddenSize, "num_hidden_layers": s.layers, "num_attention_heads": s.heads,
            "num_key_value_heads": s.kvHeads, "head_dim": s.headDim, "intermediate_size": s.expertSize,
            "num_local_experts": s.experts, "num_experts_per_tok": router.topK ?? 2,
            "rms_norm_eps": Double(s.rmsNormEps), "rope_theta": s.ropeTheta, "max_position_embeddings": 4096,
            "tie_word_embeddings": false, "torch_dtype": "float32", "hidden_act": "silu",
        ]
        if let routerConfig, routerConfig.name != "topk-softmax" || routerConfig.renormalize == false {
            if let data = try? JSONEncoder().encode(routerConfig), let json = try? JSONSerialization.jsonObject(with: data) {
                c["moekit_router"] = json
            }
        }
        return c
    }
}
