/// The checkpoint tensors a spec's model has, by name and shape, in the family's stored layout:
/// what `init-random` writes, and the list a checkpoint is checked against.
extension DecoderSpec {
    /// One stored tensor.
    public struct Weight: Sendable, Equatable {
        /// What a fresh model puts in it.
        public enum Kind: Sendable, Equatable {
            /// A projection or embedding (random at init).
            case matrix
            /// A bias, or GPT-OSS's sinks (random at init).
            case bias
            /// An RMSNorm weight (ones at init).
            case norm
            /// DeepSeek-V3's and GLM's routing correction bias (f32, not a parameter).
            case selectionBias
        }
        public var name: String
        public var shape: [Int]
        public var kind: Kind
    }

    /// Every tensor, in model order: embedding, final norm, LM head (unless tied), then each
    /// layer's norms, attention and FFN.
    public var weights: [Weight] {
        let d = hiddenSize, hd = headDim, n = names
        var out = [Weight(name: n.embedding, shape: [vocabSize, d], kind: .matrix),
                   Weight(name: n.finalNorm, shape: [d], kind: .norm)]
        if !tieWordEmbeddings { out.append(Weight(name: n.lmHead, shape: [vocabSize, d], kind: .matrix)) }
        func m(_ name: String, _ shape: [Int]) { out.append(Weight(name: name, shape: shape, kind: .matrix)) }
        func b(_ name: String, _ shape: [Int]) { out.append(Weight(name: name, shape: shape, kind: .bias)) }
        func norm(_ name: String, _ size: Int) { out.append(Weight(name: name, shape: [size], kind: .norm)) }
        func swiglu(_ prefix: String, _ width: Int) {
            m("\(prefix).gate_proj.weight", [width, d])
            m("\(prefix).up_proj.weight", [width, d])
            m("\(prefix).down_proj.weight", [d, width])
        }
        for i in 0..<layers {
            let a = n.attention(i)
            norm(n.inputNorm(i), d)
            norm(n.postAttentionNorm(i), d)
            if let l = latent {
                let kd = l.nopeDim + l.ropeDim
                if let rq = l.qLoraRank {
                    m("\(a).q_a_proj.weight", [rq, d])
                    norm("\(a).q_a_layernorm.weight", rq)
                    m("\(a).q_b_proj.weight", [heads * kd, rq])
                } else {
                    m("\(a).q_proj.weight", [heads * kd, d])
                }
                m("\(a).kv_a_proj_with_mqa.weight", [l.kvLoraRank + l.ropeDim, d])
                norm("\(a).kv_a_layernorm.weight", l.kvLoraRank)
                m("\(a).kv_b_proj.weight", [heads * (l.nopeDim + l.valueDim), l.kvLoraRank])
                m("\(a).o_proj.weight", [d, heads * l.valueDim])
            } else {
                m("\(a).q_proj.weight", [heads * hd, d])
                m("\(a).k_proj.weight", [kvHeads * hd, d])
                m("\(a).v_proj.weight", [kvHeads * hd, d])
                m("\(a).o_proj.weight", [d, heads * hd])
                if qkvBias {
                    b("\(a).q_proj.bias", [heads * hd])
                    b("\(a).k_proj.bias", [kvHeads * hd])
                    b("\(a).v_proj.bias", [kvHeads * hd])
                }
                if outputBias { b("\(a).o_proj.bias", [d]) }
                switch qkNorm {
                case .perHead: norm("\(a).q_norm.weight", hd); norm("\(a).k_norm.weight", hd)
                case .full: norm("\(a).q_norm.weight", heads * hd); norm("\(a).k_norm.weight", kvHeads * hd)
                case .none: break
                }
                if attentionSinks { b(n.sinks(i), [heads]) }
            }
            guard moeLayers[i] else {
                swiglu(n.denseFFN(i), denseIntermediate)
                continue
            }
            let inner = expertIntermediate
            m(n.routerWeight(i), [experts, d])
            if routerBias { b(n.routerBias(i), [experts]) }
            if routerKind == .deepseekV3 { out.append(Weight(name: n.correctionBias(i), shape: [experts], kind: .selectionBias)) }
            if sharedExperts > 0 { swiglu(n.sharedExpert(i), sharedExperts * inner) }
            if n.stackedLayout == .interleavedInputMajor {
                let st = n.stackedExperts(i)
                m(st.gateUp, [experts, d, 2 * inner])
                m(st.down, [experts, inner, d])
                if expertBias {
                    b(st.gateUpBias, [experts, 2 * inner])
                    b(st.downBias, [experts, d])
                }
            } else {
                for e in 0..<experts {
                    let x = n.expert(i, e)
                    m(x.gate, [inner, d])
                    m(x.up, [inner, d])
                    m(x.down, [d, inner])
                }
            }
            if let shared = sharedExpertIntermediate, shared > 0 {
                swiglu(n.sharedExpert(i), shared)
                if sharedExpertGate { m(n.sharedExpertGate(i), [1, d]) }
            }
        }
        return out
    }
}
