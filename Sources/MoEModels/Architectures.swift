import Foundation
import MoE
import MoECore

/// The architectures MoEKit runs, by config.json `model_type`: each reads its own fields and
/// names its tensors. All routing goes through the `MoE` module's routers; an architecture only
/// says which router and which parameters.
enum Architectures {
    /// The spec for config.json at `path`.
    static func spec(configAt path: String) throws(ModelError) -> DecoderSpec {
        guard let data = FileManager.default.contents(atPath: path) else { throw .io(path: path, reason: "cannot read config.json") }
        let common = try decodeConfig(CommonConfig.self, data, path: path)
        let type = common.modelType ?? ""
        var spec = try common.base(path: path)
        switch type {
        case "mixtral":
            let x = try decodeConfig(MixtralFields.self, data, path: path)
            spec.experts = x.numLocalExperts ?? 8
            spec.topK = x.numExpertsPerTok ?? 2
            spec.expertIntermediate = x.intermediateSize
            spec.normTopKProb = true
        case "qwen2_moe", "qwen3_moe":
            let x = try decodeConfig(QwenMoEFields.self, data, path: path)
            guard let experts = x.numExperts ?? x.numLocalExperts else { throw .invalidConfig(path: path, field: "num_experts", reason: "missing") }
            spec.experts = experts
            spec.topK = x.numExpertsPerTok ?? 4
            spec.expertIntermediate = x.moeIntermediateSize
            spec.denseIntermediate = x.intermediateSize
            spec.normTopKProb = x.normTopKProb ?? false
            let step = max(1, x.decoderSparseStep ?? 1)
            let dense = Set(x.mlpOnlyLayers ?? [])
            spec.moeLayers = (0..<spec.layers).map { !dense.contains($0) && experts > 0 && ($0 + 1) % step == 0 }
            if type == "qwen2_moe" {
                spec.qkvBias = x.qkvBias ?? true
                spec.sharedExpertIntermediate = x.sharedExpertIntermediateSize
                spec.sharedExpertGate = true
            } else {
                spec.qkvBias = x.attentionBias ?? false
                spec.outputBias = x.attentionBias ?? false
                spec.qkNorm = .perHead
            }
        case "olmoe":
            let x = try decodeConfig(OlmoeFields.self, data, path: path)
            spec.experts = x.numExperts ?? 64
            spec.topK = x.numExpertsPerTok ?? 8
            spec.expertIntermediate = x.intermediateSize
            spec.normTopKProb = x.normTopKProb ?? false
            spec.qkvBias = x.attentionBias ?? false
            spec.outputBias = x.attentionBias ?? false
            spec.qkNorm = .full
            spec.clipQKV = x.clipQkv
        case "deepseek_v3", "deepseek_v2":
            let x = try decodeConfig(DeepSeekFields.self, data, path: path)
            guard let experts = x.nRoutedExperts ?? x.numLocalExperts else { throw .invalidConfig(path: path, field: "n_routed_experts", reason: "missing") }
            spec.experts = experts
            spec.topK = x.numExpertsPerTok ?? 8
            spec.expertIntermediate = x.moeIntermediateSize
            spec.denseIntermediate = x.intermediateSize
            let first = x.firstKDenseReplace ?? 0, freq = max(1, x.moeLayerFreq ?? 1)
            spec.moeLayers = (0..<spec.layers).map { $0 >= first && $0 % freq == 0 }
            spec.sharedExperts = x.nSharedExperts ?? 0
            spec.groups = x.nGroup ?? 1
            spec.topkGroup = x.topkGroup ?? spec.groups
            spec.routedScaling = x.routedScalingFactor ?? 1
            guard spec.groups >= 1, experts % spec.groups == 0, spec.topkGroup >= 1, spec.topkGroup <= spec.groups else {
                throw .invalidConfig(path: path, field: "n_group", reason: "\(experts) experts do not split into \(spec.groups) groups keeping \(spec.topkGroup)")
            }
            if type == "deepseek_v3" {
                spec.routerKind = .deepseekV3
                spec.normTopKProb = x.normTopKProb ?? true
                if let f = x.scoringFunc, f != "sigmoid" { throw .invalidConfig(path: path, field: "scoring_func", reason: "'\(f)' is not supported for deepseek_v3") }
            } else {
                spec.routerKind = .deepseekV2
                spec.normTopKProb = false  // transformers' DeepSeek-V2 never renormalises
                if (x.topkMethod ?? "greedy") == "greedy" { spec.groups = 1; spec.topkGroup = 1 }
            }
            guard x.kvLoraRank > 0, x.qkNopeHeadDim >= 0, x.qkRopeHeadDim > 0, x.qkRopeHeadDim % 2 == 0, x.vHeadDim > 0 else {
                throw .invalidConfig(path: path, field: "kv_lora_rank/qk_rope_head_dim/v_head_dim", reason: "must be positive (rope dims even)")
            }
            spec.latent = DecoderSpec.Latent(qLoraRank: x.qLoraRank, kvLoraRank: x.kvLoraRank, nopeDim: x.qkNopeHeadDim,
                                             ropeDim: x.qkRopeHeadDim, valueDim: x.vHeadDim,
                                             interleave: type == "deepseek_v2" || (x.ropeInterleave ?? true))
            spec.kvHeads = spec.heads
            spec.outputBias = x.attentionBias ?? false
        default:
            throw .unknownArchitecture(path: path, name: common.architectures?.first ?? type)
        }
        if let extra = try? decodeConfig(MoEKitFields.self, data, path: path), let r = extra.moekitRouter {
            _ = try routerOrThrow(r, experts: spec.experts, path: path)
            spec.routerOverride = r
        }
        guard spec.experts > 0, spec.topK >= 1, spec.topK <= spec.experts else {
            throw .invalidConfig(path: path, field: "num_experts_per_tok", reason: "need 1 <= k <= \(spec.experts) experts, got \(spec.topK)")
        }
        return spec
    }

    /// Tensor names for layer i's FFN in `spec`'s architecture.
    static func moePrefix(_ spec: DecoderSpec, layer i: Int) -> String {
        spec.modelType == "mixtral" ? "model.layers.\(i).block_sparse_moe" : "model.layers.\(i).mlp"
    }

    /// Expert e's gate, up and down tensor names.
    static func expertNames(_ spec: DecoderSpec, layer i: Int, expert e: Int) -> (gate: String, up: String, down: String) {
        let p = "\(moePrefix(spec, layer: i)).experts.\(e)"
        return spec.modelType == "mixtral" ? ("\(p).w1.weight", "\(p).w3.weight", "\(p).w2.weight")
                                           : ("\(p).gate_proj.weight", "\(p).up_proj.weight", "\(p).down_proj.weight")
    }
}

/// MoEKit's own config.json keys.
struct MoEKitFields: Decodable {
    var moekitRouter: RouterConfig?
    enum CodingKeys: String, CodingKey { case moekitRouter = "moekit_router" }
}

/// Checks a router config against the model, as a `ModelError` naming the field.
func routerOrThrow(_ r: RouterConfig, experts: Int, path: String) throws(ModelError) -> any Router {
    do {
        return try r.makeRouter(experts: experts, path: path)
    } catch {
        throw .invalidConfig(path: path, field: "moekit_router", reason: error.description)
    }
}

struct MixtralFields: Decodable {
    var numLocalExperts: Int?
    var numExpertsPerTok: Int?
    var intermediateSize: Int
    enum CodingKeys: String, CodingKey {
        case numLocalExperts = "num_local_experts", numExpertsPerTok = "num_experts_per_tok", intermediateSize = "intermediate_size"
    }
}

struct QwenMoEFields: Decodable {
    var numExperts: Int?
    var numLocalExperts: Int?
    var numExpertsPerTok: Int?
    var moeIntermediateSize: Int
    var intermediateSize: Int
    var sharedExpertIntermediateSize: Int?
    var normTopKProb: Bool?
    var decoderSparseStep: Int?
    var mlpOnlyLayers: [Int]?
    var qkvBias: Bool?
    var attentionBias: Bool?
    enum CodingKeys: String, CodingKey {
        case numExperts = "num_experts", numLocalExperts = "num_local_experts", numExpertsPerTok = "num_experts_per_tok"
        case moeIntermediateSize = "moe_intermediate_size", intermediateSize = "intermediate_size"
        case sharedExpertIntermediateSize = "shared_expert_intermediate_size", normTopKProb = "norm_topk_prob"
        case decoderSparseStep = "decoder_sparse_step", mlpOnlyLayers = "mlp_only_layers", qkvBias = "qkv_bias"
        case attentionBias = "attention_bias"
    }
}

struct DeepSeekFields: Decodable {
    var nRoutedExperts: Int?
    var numLocalExperts: Int?
    var numExpertsPerTok: Int?
    var moeIntermediateSize: Int
    var intermediateSize: Int
    var nSharedExperts: Int?
    var firstKDenseReplace: Int?
    var moeLayerFreq: Int?
    var nGroup: Int?
    var topkGroup: Int?
    var routedScalingFactor: Float?
    var normTopKProb: Bool?
    var scoringFunc: String?
    var topkMethod: String?
    var qLoraRank: Int?
    var kvLoraRank: Int
    var qkNopeHeadDim: Int
    var qkRopeHeadDim: Int
    var vHeadDim: Int
    var ropeInterleave: Bool?
    var attentionBias: Bool?
    enum CodingKeys: String, CodingKey {
        case nRoutedExperts = "n_routed_experts", numLocalExperts = "num_local_experts", numExpertsPerTok = "num_experts_per_tok"
        case moeIntermediateSize = "moe_intermediate_size", intermediateSize = "intermediate_size"
        case nSharedExperts = "n_shared_experts", firstKDenseReplace = "first_k_dense_replace", moeLayerFreq = "moe_layer_freq"
        case nGroup = "n_group", topkGroup = "topk_group", routedScalingFactor = "routed_scaling_factor"
        case normTopKProb = "norm_topk_prob", scoringFunc = "scoring_func", topkMethod = "topk_method"
        case qLoraRank = "q_lora_rank", kvLoraRank = "kv_lora_rank", qkNopeHeadDim = "qk_nope_head_dim"
        case qkRopeHeadDim = "qk_rope_head_dim", vHeadDim = "v_head_dim", ropeInterleave = "rope_interleave"
        case attentionBias = "attention_bias"
    }
}

struct OlmoeFields: Decodable {
    var numExperts: Int?
    var numExpertsPerTok: Int?
    var intermediateSize: Int
    var normTopKProb: Bool?
    var attentionBias: Bool?
    var clipQkv: Float?
    enum CodingKeys: String, CodingKey {
        case numExperts = "num_experts", numExpertsPerTok = "num_experts_per_tok", intermediateSize = "intermediate_size"
        case normTopKProb = "norm_topk_prob", attentionBias = "attention_bias", clipQkv = "clip_qkv"
    }
}
