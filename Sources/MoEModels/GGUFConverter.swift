import Foundation
import MoE
import MoECore
import MoEQuant

/// Writes a Hugging Face checkpoint folder as a GGUF file llama.cpp runs, the way llama.cpp's
/// `convert_hf_to_gguf.py` followed by `llama-quantize` would: llama.cpp's metadata keys for
/// the architecture, its tensor names (experts stacked into `blk.N.ffn_*_exps`, Llama-family
/// q and k rows permuted for its interleaved RoPE), norms in f32, the tokenizer as
/// `tokenizer.ggml.*` (GGUFConverter+Tokenizer.swift), and every tensor in the type the
/// preset's plan chooses (`QuantizationPlan`), written atomically.
///
/// Families: Llama, Mistral, Mixtral (`llama`), Qwen2, Qwen3, Qwen2-MoE, Qwen3-MoE, OLMoE,
/// DeepSeek-V2 and V3 (`deepseek2`: `kv_b_proj` split into `attn_k_b`, transposed, and
/// `attn_v_b` for llama.cpp's absorbed attention), GLM-4.5 (`glm4moe`) and GPT-OSS (`gpt-oss`:
/// interleaved gate/up columns split into `ffn_gate_exps` and `ffn_up_exps`), their tensors and
/// metadata in GGUFConverter+Families.swift.
public enum GGUFConverter {
    /// llama.cpp's architecture for each model type this writes.
    public static let architectures = ["llama": "llama", "mistral": "llama", "mixtral": "llama", "qwen2": "qwen2",
                                       "qwen3": "qwen3", "qwen2_moe": "qwen2moe", "qwen3_moe": "qwen3moe", "olmoe": "olmoe",
                                       "deepseek_v2": "deepseek2", "deepseek_v3": "deepseek2", "glm4_moe": "glm4moe",
                                       "gpt_oss": "gpt-oss"]

    /// One tensor of the output: its llama.cpp name, row-major shape, the type it is read in,
    /// and how to make its values.
    struct Source {
        var name: String, shape: [Int], stored: DType
        var make: () throws(ModelError) -> Tensor
    }

    /// Writes checkpoint folder `directory` as `path` in `preset` (with `overrides`); with
    /// `splitMaxBytes`, as a split set of files of at most that much tensor data
    /// (`GGUFWriter.writeSplit`). Returns the files written.
    @discardableResult
    public static func convert(directory: String, preset: QuantizationPreset,
                               overrides: [(pattern: NSRegularExpression, type: DType)] = [],
                               importance: GGUFQuantizer.ImportanceInput? = nil, to path: String, splitMaxBytes: Int? = nil,
                               pool: ThreadPool = .shared, progress: GGUFQuantizer.Progress? = nil) throws(ModelError) -> [String] {
        let ck = try Checkpoint(directory: directory)
        let spec = try Architectures.spec(configAt: ck.configPath)
        guard let arch = architectures[spec.modelType] else {
            throw .unknownArchitecture(path: ck.configPath, name: "\(spec.modelType) (GGUF conversion covers \(architectures.keys.sorted().joined(separator: ", ")))")
        }
        let sources = try tensors(ck, spec, arch: arch)
        let shape = QuantizationPlan.attentionShape(architecture: arch, layers: spec.layers, heads: spec.heads, kvHeads: spec.kvHeads)
        var plan = QuantizationPlan(preset: preset, overrides: overrides, names: sources.map(\.name), layers: spec.layers,
                                    experts: spec.isMoE ? spec.experts : 0, groupedQueries: shape.groupedQueries,
                                    is70B: shape.is70B, hasImportance: importance != nil)
        let byName = Dictionary(uniqueKeysWithValues: sources.map { ($0.name, $0) })
        var records = try metadata(ck, spec, arch: arch, directory: directory)
        records.append(.value(key: "general.quantization_version", .u32(2)))
        records.append(.value(key: "general.file_type", .u32(preset.fileType)))
        if let importance { records += importance.matrix.quantizeRecords(path: importance.path) }
        let ordered = QuantizationPlan.fileOrder(sources.map(\.name)).map { byName[$0]! }
        let total = ordered.reduce(0) { $0 + $1.stored.storageBytes(elements: $1.shape.reduce(1, *)) }
        var done = 0
        let entries = try ordered.map { src throws(ModelError) -> GGUFWriter.TensorEntry in
            // Vectors (norms, biases) and routers are f32 in llama.cpp's files whatever the
            // checkpoint's type (convert_hf_to_gguf.py's rule).
            let stored: DType = src.shape.count == 1 || src.name.contains("ffn_gate_inp") ? .f32 : src.stored
            let written = plan.type(for: src.name, shape: src.shape, stored: stored)
            let weights = try importance?.importance(name: src.name, shape: src.shape, written: written)
            return GGUFWriter.TensorEntry(name: src.name, shape: src.shape, dtype: written) { (out: AtomicFile.Sink) throws(ModelError) in
                let t = try src.make()
                try GGUFQuantizer.write(t, as: written, importance: weights, name: src.name, path: directory, to: out, pool: pool)
                done += t.byteCount
                progress?(GGUFQuantizer.Choice(name: src.name, shape: src.shape, stored: src.stored, written: written), done, total)
            }
        }
        return try GGUFWriter.write(to: path, records: records, tensors: entries, splitMaxBytes: splitMaxBytes)
    }

    /// Every output tensor: the spec's weights under llama.cpp's names, experts stacked.
    static func tensors(_ ck: Checkpoint, _ spec: DecoderSpec, arch: String) throws(ModelError) -> [Source] {
        var out: [Source] = []
        var stacked = Set<String>()
        for w in spec.weights {
            if arch == "gpt-oss", let parts = try gptOssStacked(ck, spec, name: w.name) {
                out += parts
                continue
            }
            guard let mapped = GGUFWeights.ggufName(w.name) else {
                throw .invalidFile(path: ck.configPath, field: w.name, reason: "has no llama.cpp tensor name")
            }
            if mapped.expert != nil {  // per-expert weights: one stacked tensor per layer and projection
                guard !stacked.contains(mapped.name) else { continue }
                stacked.insert(mapped.name)
                let layer = Int(mapped.name.split(separator: ".")[1]) ?? 0
                let which = mapped.name.contains("ffn_gate") ? 0 : mapped.name.contains("ffn_up") ? 1 : 2
                out.append(try stackedExperts(ck, spec, layer: layer, which: which, name: mapped.name))
                continue
            }
            if arch == "deepseek2", w.name.hasSuffix(".self_attn.kv_b_proj.weight"), let latent = spec.latent {
                out += try splitKVB(ck, name: w.name, gguf: mapped.name, heads: spec.heads, latent: latent)
                continue
            }
            let source = try ck.tensor(w.name, shape: w.shape)
            let permute = arch == "llama" && (w.name.hasSuffix("self_attn.q_proj.weight") || w.name.hasSuffix("self_attn.k_proj.weight")
                                              || w.name.hasSuffix("self_attn.q_proj.bias") || w.name.hasSuffix("self_attn.k_proj.bias"))
            let heads = w.name.contains(".q_proj.") ? spec.heads : spec.kvHeads
            // GLM-4.5 and GPT-OSS call the norm before the FFN `post_attention_norm`, as llama.cpp's reader expects.
            let name = arch == "glm4moe" || arch == "gpt-oss" ? mapped.name.replacingOccurrences(of: ".ffn_norm.weight", with: ".post_attention_norm.weight") : mapped.name
            out.append(Source(name: name, shape: w.shape, stored: source.dtype) { () throws(ModelError) in
                permute ? interleavedRope(source, heads: heads) : source
            })
        }
        return out
    }

    /// Layer `layer`'s experts' gate (`which` 0), up (1) or down (2) weights stacked into one
    /// tensor [E, rows, columns] named `name`, in their stored type (loaded when written).
    static func stackedExperts(_ ck: Checkpoint, _ spec: DecoderSpec, layer: Int, which: Int, name: String) throws(ModelError) -> Source {
        let pick = { (e: SwiGLUExperts) in which == 0 ? e.gate : which == 1 ? e.up : e.down }
        let first = pick(try DecoderModel.loadExperts(ck, spec, layer: layer))[0]
        let rows = first.shape
        return Source(name: name, shape: [spec.experts] + rows, stored: first.dtype) { () throws(ModelError) in
            let experts = pick(try DecoderModel.loadExperts(ck, spec, layer: layer))
            let t = Tensor(uninitialized: [experts.count] + rows, dtype: experts[0].dtype)
            for (i, e) in experts.enumerated() {
                (t.mutableRawPointer + i * e.byteCount).copyMemory(from: e.rawPointer, byteCount: e.byteCount)
            }
            return t
        }
    }

    /// llama.cpp's q/k row order for Llama-family models (`RopeRows.interleaved`).
    static func interleavedRope(_ t: Tensor, heads: Int) -> Tensor { RopeRows.interleaved(t, heads: heads) }

    /// `interleavedRope` undone: llama.cpp's q/k row order back to transformers'.
    public static func halvesRope(_ t: Tensor, heads: Int) -> Tensor { RopeRows.halves(t, heads: heads) }

    /// llama.cpp's metadata for the architecture, from the spec and config.json.
    static func metadata(_ ck: Checkpoint, _ spec: DecoderSpec, arch: String, directory: String) throws(ModelError) -> [GGUFWriter.Record] {
        let config = (FileManager.default.contents(atPath: ck.configPath)
            .flatMap { try? JSONSerialization.jsonObject(with: $0) as? [String: Any] }) ?? [:]
        var r: [GGUFWriter.Record] = [.value(key: "general.architecture", .string(arch)),
                                      .value(key: "general.name", .string((directory as NSString).lastPathComponent))]
        func put(_ key: String, _ v: GGUFWriter.Value) { r.append(.value(key: "\(arch).\(key)", v)) }
        let moe = spec.isMoE
        put("block_count", .u32(UInt32(spec.layers)))
        put("context_length", .u32(UInt32((config["max_position_embeddings"] as? Int) ?? 4096)))
        put("embedding_length", .u32(UInt32(spec.hiddenSize)))
        let ff = arch == "llama" && moe || arch == "olmoe" || arch == "gpt-oss" ? spec.expertIntermediate : spec.denseIntermediate
        put("feed_forward_length", .u32(UInt32(ff)))
        put("attention.head_count", .u32(UInt32(spec.heads)))
        put("attention.head_count_kv", .u32(arch == "deepseek2" ? 1 : UInt32(spec.kvHeads)))  // MLA as llama.cpp's MQA
        put("rope.freq_base", .f32(Float(spec.rope.theta)))
        put("attention.layer_norm_rms_epsilon", .f32(spec.rmsNormEps))
        if arch != "deepseek2" {
            if spec.headDim != spec.hiddenSize / max(1, spec.heads) && arch != "gpt-oss" {  // gpt-oss: always, below
                put("attention.key_length", .u32(UInt32(spec.headDim)))
                put("attention.value_length", .u32(UInt32(spec.headDim)))
            }
            put("rope.dimension_count", .u32(UInt32(spec.rotaryDim ?? spec.headDim)))
        }
        put("vocab_size", .u32(UInt32(spec.vocabSize)))
        if spec.rope.kind == .linear || spec.rope.kind == .yarn {
            put("rope.scaling.type", .string(spec.rope.kind.rawValue))
            put("rope.scaling.factor", .f32(Float(spec.rope.factor)))
            put("rope.scaling.original_context_length", .u32(UInt32(spec.rope.originalMaxPositions)))
        } else if spec.rope.kind == .llama3 {
            throw .invalidConfig(path: ck.configPath, field: "rope_scaling", reason: "llama3 rope scaling is not written to GGUF yet")
        }
        let windows = Set(spec.slidingWindows.map { $0 ?? 0 })
        if arch == "gpt-oss" {  // its window pattern is the architecture's (gptOssMetadata)
        } else if windows.count > 1 || (windows.first ?? 0) > 0 && arch != "llama" && arch != "qwen2" && arch != "qwen3" {
            throw .invalidConfig(path: ck.configPath, field: "layer_types",
                                 reason: "sliding windows on some layers only have no GGUF form llama.cpp reads for \(arch)")
        }
        if arch != "gpt-oss", let window = windows.first, window > 0 { put("attention.sliding_window", .u32(UInt32(window))) }
        if let clip = spec.clipQKV { put("attention.clamp_kqv", .f32(clip)) }
        if arch == "deepseek2" {
            try deepseekMetadata(config, spec, path: ck.configPath, put: put)
        } else if arch == "glm4moe" {
            try glmMetadata(config, spec, path: ck.configPath, put: put)
        } else if arch == "gpt-oss" {
            try gptOssMetadata(spec, path: ck.configPath, put: put)
        } else if moe && spec.moeLayers.contains(false) {
            throw .invalidConfig(path: ck.configPath, field: "mlp_only_layers",
                                 reason: "dense layers in a \(spec.modelType) model have no GGUF form llama.cpp reads")
        }
        if moe {  // the families' own keys are in GGUFConverter+Families.swift
            put("expert_count", .u32(UInt32(spec.experts)))
            put("expert_used_count", .u32(UInt32(spec.topK)))
            if arch != "llama" { put("expert_feed_forward_length", .u32(UInt32(spec.expertIntermediate))) }
            if let shared = spec.sharedExpertIntermediate { put("expert_shared_feed_forward_length", .u32(UInt32(shared))) }
            if arch == "olmoe" || arch == "qwen2moe" || arch == "qwen3moe" { put("expert_weights_norm", .bool(spec.normTopKProb)) }
        }
        r += try tokenizerRecords(directory: directory, spec: spec)
        return r
    }
}
