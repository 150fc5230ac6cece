/// How a family names its checkpoint tensors. Each architecture file sets the parts that
/// differ from the Llama-style defaults; the loader, `init-random` and the training checkpoint
/// writer all ask here, so each name is spelled once.
public struct TensorNames: Sendable, Equatable {
    /// The FFN block of layer i: `mlp` (most), `block_sparse_moe` (Mixtral's MoE layers).
    public var moeBlock = "mlp"
    /// The router inside the MoE block: `gate` (most), `router` (GPT-OSS).
    public var router = "gate"
    /// A routed expert's projections: `gate_proj`/`up_proj`/`down_proj`, or Mixtral's `w1`/`w3`/`w2`.
    public var expertGate = "gate_proj", expertUp = "up_proj", expertDown = "down_proj"
    /// The shared expert block: `shared_expert` (Qwen2-MoE) or `shared_experts` (DeepSeek, GLM).
    public var sharedExpert = "shared_experts"

    /// How stacked experts lay out their projections.
    public enum StackedLayout: Sendable, Equatable {
        /// transformers 5 in memory: `gate_up_proj` [E, 2I, d] (gate rows first), `down_proj` [E, d, I].
        case gateThenUpRows
        /// GPT-OSS on disk: `gate_up_proj` [E, d, 2I] (gate and up columns interleaved), `down_proj` [E, I, d].
        case interleavedInputMajor
    }
    public var stackedLayout = StackedLayout.gateThenUpRows

    public init() {}

    public let embedding = "model.embed_tokens.weight"
    public let finalNorm = "model.norm.weight"
    public let lmHead = "lm_head.weight"

    /// Layer i's prefix.
    public func layer(_ i: Int) -> String { "model.layers.\(i)" }
    /// Layer i's attention prefix.
    public func attention(_ i: Int) -> String { "model.layers.\(i).self_attn" }
    /// Layer i's norms before attention and before the FFN.
    public func inputNorm(_ i: Int) -> String { "model.layers.\(i).input_layernorm.weight" }
    public func postAttentionNorm(_ i: Int) -> String { "model.layers.\(i).post_attention_layernorm.weight" }
    /// Layer i's dense FFN prefix (its `gate_proj`, `up_proj`, `down_proj`).
    public func denseFFN(_ i: Int) -> String { "model.layers.\(i).mlp" }
    /// Layer i's MoE block prefix.
    public func moe(_ i: Int) -> String { "model.layers.\(i).\(moeBlock)" }
    /// Layer i's router weight, its bias (GPT-OSS) and DeepSeek-V3's selection bias.
    public func routerWeight(_ i: Int) -> String { "\(moe(i)).\(router).weight" }
    public func routerBias(_ i: Int) -> String { "\(moe(i)).\(router).bias" }
    public func correctionBias(_ i: Int) -> String { "\(moe(i)).\(router).e_score_correction_bias" }
    /// Expert e's gate, up and down weights in the per-expert layout.
    public func expert(_ i: Int, _ e: Int) -> (gate: String, up: String, down: String) {
        let p = "\(moe(i)).experts.\(e)"
        return ("\(p).\(expertGate).weight", "\(p).\(expertUp).weight", "\(p).\(expertDown).weight")
    }
    /// The stacked layout (transformers 5 in memory, GPT-OSS on disk): `gate_up_proj`,
    /// `down_proj` and, when biased, `gate_up_proj_bias`, `down_proj_bias`.
    public func stackedExperts(_ i: Int) -> (gateUp: String, down: String, gateUpBias: String, downBias: String) {
        let p = "\(moe(i)).experts"
        return ("\(p).gate_up_proj", "\(p).down_proj", "\(p).gate_up_proj_bias", "\(p).down_proj_bias")
    }
    /// Layer i's shared expert prefix, and Qwen2-MoE's sigmoid gate on it.
    public func sharedExpert(_ i: Int) -> String { "\(moe(i)).\(sharedExpert)" }
    public func sharedExpertGate(_ i: Int) -> String { "\(moe(i)).shared_expert_gate.weight" }
    /// GPT-OSS's attention sinks of layer i ([H]).
    public func sinks(_ i: Int) -> String { "\(attention(i)).sinks" }
}
