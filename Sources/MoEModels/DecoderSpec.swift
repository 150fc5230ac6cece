import Foundation
import MoE
import MoECore

/// The one description of a decoder-only transformer, dense or MoE, that every architecture
/// file produces from its config.json and that the inference model, `init-random` and the
/// training checkpoint writer build from: embedding; per layer a norm, an attention kind and an
/// FFN kind (dense, MoE, MoE plus shared experts); a final norm; the LM head. The tensor names
/// come with it (`names`), so no other file spells them.
public struct DecoderSpec: Sendable, Equatable {
    /// config.json's `model_type` (`mixtral`, `qwen2_moe`, `gpt_oss`, `llama`, ...).
    public var modelType: String
    public var vocabSize: Int, hiddenSize: Int, layers: Int
    public var heads: Int, kvHeads: Int, headDim: Int
    public var rmsNormEps: Float
    public var rope: RopeConfig
    /// Dimensions of each head that rotate (GLM's `partial_rotary_factor`); the head dim when nil.
    public var rotaryDim: Int? = nil
    /// RoPE on interleaved pairs instead of rotate-half: llama.cpp's "normal" RoPE, for which its
    /// converter permutes the q and k rows of Llama-family weights (GGUF files of `llama`).
    public var ropeInterleaved = false
    public var tieWordEmbeddings: Bool
    /// The family's tensor names.
    public var names: TensorNames = TensorNames()

    // MARK: - Attention

    /// Attention variants.
    public enum QKNorm: Sendable, Equatable {
        case none
        /// RMSNorm over each head's D values (Qwen3, GLM-4.5).
        case perHead
        /// RMSNorm over the whole projected q and k before the head split (OLMoE).
        case full
    }
    /// Biases on q, k and v (Qwen2, GLM, GPT-OSS, Llama's `attention_bias`).
    public var qkvBias: Bool
    /// A bias on the output projection (GPT-OSS, Llama's `attention_bias`).
    public var outputBias: Bool
    public var qkNorm: QKNorm
    /// Clamp q, k and v to [-c, c] (OLMoE's `clip_qkv`).
    public var clipQKV: Float?
    /// Per layer: the sliding window (a query sees itself and the window - 1 positions before
    /// it), or nil for full causal attention (Mistral, Qwen2's `use_sliding_window`, GPT-OSS's
    /// `layer_types`).
    public var slidingWindows: [Int?] = []
    /// GPT-OSS's attention sinks: one learned logit per head that joins every softmax and
    /// takes its share of the mass, then is dropped.
    public var attentionSinks = false

    /// Multi-head latent attention (DeepSeek-V2/V3) instead of grouped-query attention.
    public struct Latent: Sendable, Equatable {
        public var qLoraRank: Int?
        public var kvLoraRank: Int, nopeDim: Int, ropeDim: Int, valueDim: Int
        /// RoPE on interleaved pairs (DeepSeek) rather than rotate-half.
        public var interleave: Bool
    }
    public var latent: Latent? = nil

    // MARK: - Feed-forward

    /// Per layer: true for an MoE FFN, false for a dense one (every layer of a dense model).
    public var moeLayers: [Bool]
    public var experts: Int, topK: Int
    /// Routed experts' intermediate size, and the dense layers'.
    public var expertIntermediate: Int, denseIntermediate: Int
    /// Top-k weights renormalised to sum to 1.
    public var normTopKProb: Bool
    /// Qwen2-MoE's shared expert (its intermediate size) and whether a sigmoid gate scales it.
    public var sharedExpertIntermediate: Int?
    public var sharedExpertGate: Bool
    /// DeepSeek's and GLM's shared experts: one SwiGLU of `sharedExperts * expertIntermediate`, no gate.
    public var sharedExperts = 0
    /// The routed experts' activation: SwiGLU, or GPT-OSS's clamped form.
    public var expertActivation: ExpertActivation = .swiglu
    /// Biases on the experts' projections and on the router (GPT-OSS).
    public var expertBias = false, routerBias = false

    /// Which router the MoE layers use.
    public enum RouterKind: Sendable, Equatable {
        /// Softmax then top-k, renormalised when `normTopKProb` (Mixtral, Qwen, OLMoE; GPT-OSS's
        /// top-k then softmax over the chosen is the same).
        case softmaxTopK
        /// DeepSeek-V3 and GLM-4.5: sigmoid, correction bias, groups by sum of top-2, `routedScaling`.
        case deepseekV3
        /// DeepSeek-V2: softmax, groups by max (group-limited greedy) or none, `routedScaling`.
        case deepseekV2
    }
    public var routerKind: RouterKind = .softmaxTopK
    public var groups = 1, topkGroup = 1
    public var routedScaling: Float = 1
    /// A router other than the architecture's own, from config.json's `moekit_router` (models
    /// trained by MoEKit with, say, top-p routing).
    public var routerOverride: RouterConfig? = nil

    public var bosTokenID: Int?
    public var eosTokenIDs: [Int]

    /// Whether any layer is MoE.
    public var isMoE: Bool { moeLayers.contains(true) }

    /// The rotary embedding of the attention layers (of the rope part, under latent attention).
    public var rotaryEmbedding: RotaryEmbedding { rotary }

    var rotary: RotaryEmbedding {
        if let l = latent { return rope.rotary(headDim: l.ropeDim, layout: l.interleave ? .interleaved : .rotateHalf) }
        return rope.rotary(headDim: headDim, rotaryDim: rotaryDim, layout: ropeInterleaved ? .interleaved : .rotateHalf)
    }
}
