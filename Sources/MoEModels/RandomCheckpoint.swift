import Foundation
import MoECore

/// Writes random-weight checkpoints of any supported architecture and shape: a Hugging Face
/// folder (config.json, model.safetensors in bf16, tokenizer.json) that MoEKit and transformers
/// both load. For speed work and tests; `moe init-random` is its command.
public enum RandomCheckpoint {
    /// The shape of the model to write.
    public struct Shape: Sendable {
        public var vocabSize = 512
        public var hiddenSize = 256
        public var layers = 2
        public var heads = 4
        public var kvHeads = 4
        public var headDim: Int? = nil
        public var experts = 8
        public var topK = 2
        public var expertSize = 512
        /// Dense FFN size (Qwen's non-MoE layers) and shared expert size (Qwen2-MoE).
        public var denseSize = 1024
        public var sharedSize = 512
        public var ropeTheta = 10_000.0
        /// DeepSeek: multi-head latent attention sizes (qLoraRank nil: a plain q_proj),
        /// shared experts, expert groups and the leading dense layers.
        public var qLoraRank: Int? = 64
        public var kvLoraRank = 64
        public var nopeDim = 32, ropeDim = 16, valueDim = 32
        public var sharedExperts = 1
        public var groups = 1, topkGroup = 1
        public var denseLayers = 0
        /// The sliding window of the families that have one (GPT-OSS, Mistral); nil: the family's default.
        public var slidingWindow: Int? = nil
        public init() {}
    }

    /// How the matrices and biases are drawn.
    public enum Initialization: Sendable, Equatable {
        /// Uniform in ±1/sqrt(fan-in), as PyTorch's `nn.Linear` draws them.
        case uniform
        /// Normal with mean 0 and this standard deviation, as transformers' `_init_weights`
        /// draws matrices (`initializer_range`, 0.02 in most configs; biases are drawn the same
        /// way here, where transformers zeroes them): bell-shaped rows, as trained weights are,
        /// which matters to formats whose grid follows each row's extremes (QMoE).
        case normal(std: Float)
    }

    /// The architectures it can write: every family in the registry.
    public static var architectures: [String] { Architectures.modelTypes }

    /// Writes a checkpoint of `arch` with `shape` into `directory` (created if needed), weights
    /// drawn as `initialization` says from `seed`, norms 1, stored as `dtype`. The config
    /// comes from the family's file and the tensors from the spec it describes, by its names.
    public static func write(arch: String, shape s: Shape, to directory: String, seed: UInt64 = 0,
                             dtype: DType = .bf16, initialization: Initialization = .uniform) throws(ModelError) {
        guard let family = Architectures.family(arch) else { throw .unknownArchitecture(path: directory, name: arch) }
        guard s.vocabSize >= 257 else { throw .invalidConfig(path: directory, field: "vocab_size", reason: "need at least 257 (bytes and end of text)") }
        let eos = 256
        var config: [String: Any] = [
            "model_type": arch, "architectures": [family.className(arch)], "vocab_size": s.vocabSize,
            "hidden_size": s.hiddenSize, "num_hidden_layers": s.layers,
            "num_attention_heads": s.heads, "num_key_value_heads": s.kvHeads, "head_dim": s.headDim ?? s.hiddenSize / max(1, s.heads),
            "rms_norm_eps": 1e-6, "rope_theta": s.ropeTheta, "max_position_embeddings": 4096, "tie_word_embeddings": false,
            "bos_token_id": eos, "eos_token_id": eos, "hidden_act": "silu",
            "torch_dtype": dtype == .bf16 ? "bfloat16" : dtype == .f16 ? "float16" : "float32",
        ]
        config.merge(family.randomConfig(s, modelType: arch)) { _, new in new }
        let configPath = (directory as NSString).appendingPathComponent("config.json")
        guard let configData = try? JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys]) else {
            throw .invalidFile(path: configPath, field: "(json)", reason: "cannot encode")
        }
        // The shape is checked through the family's own reading before anything is written.
        let spec = try Architectures.spec(configData: configData, path: configPath)
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw .io(path: directory, reason: "cannot create: \(systemReason(error))")
        }
        try AtomicFile.write(configData, to: configPath)

        // Each tensor is made when the writer reaches it, so a checkpoint larger than memory
        // can be written. The k-th random matrix or bias has seed k, a selection bias its index.
        var entries: [SafetensorsWriter.Entry] = []
        var randoms: UInt64 = 0
        for (i, w) in spec.weights.enumerated() {
            let shape = w.shape
            switch w.kind {
            case .matrix, .bias:
                randoms += 1
                let counter = randoms
                entries.append(.init(name: w.name, shape: shape, dtype: dtype) {
                    let tensorSeed = seed &* 1_000_003 &+ counter
                    if case let .normal(std) = initialization { return Tensor(randomNormal: shape, std: std, seed: tensorSeed, dtype: dtype) }
                    let bound = Float(1 / Double(shape.last ?? 1).squareRoot())
                    return Tensor(randomUniform: shape, in: -bound...bound, seed: tensorSeed, dtype: dtype)
                })
            case .norm:
                entries.append(.init(name: w.name, shape: shape, dtype: dtype) {
                    Tensor(shape: [shape[0]], values: [Float](repeating: 1, count: shape[0]), dtype: dtype)
                })
            case .selectionBias:
                entries.append(.init(name: w.name, shape: shape, dtype: .f32) {  // f32, as shipped
                    var rng = SplitMix64(seed: seed &+ UInt64(i))
                    return Tensor(shape: shape, values: (0..<shape[0]).map { _ in 0.2 * (rng.nextUnitFloat() - 0.5) })
                })
            }
        }
        try SafetensorsWriter.write(entries: entries, metadata: ["format": "pt"],
                                    to: (directory as NSString).appendingPathComponent("model.safetensors"))
        try AtomicFile.write(byteLevelTokenizerJSON(), to: (directory as NSString).appendingPathComponent("tokenizer.json"))
    }

    /// A byte-level BPE tokenizer.json with the 256 bytes as ids 0...255 and `specials` as ids
    /// 256, 257, ...; when `bos` names one of them, encoding adds it in front.
    public static func byteLevelTokenizerJSON(specials: [String] = ["<|endoftext|>"], bos: String? = nil) -> Data {
        var vocab: [String: Int] = [:]
        for (b, scalar) in ByteLevelAlphabet.byteToScalar.enumerated() { vocab[String(scalar)] = b }
        let added: [[String: Any]] = specials.enumerated().map { i, content in
            ["id": 256 + i, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
             "normalized": false, "special": true]
        }
        let post: [String: Any]
        if let bos, let i = specials.firstIndex(of: bos) {
            post = ["type": "TemplateProcessing",
                    "single": [["SpecialToken": ["id": bos, "type_id": 0]], ["Sequence": ["id": "A", "type_id": 0]]],
                    "pair": [["Sequence": ["id": "A", "type_id": 0]], ["Sequence": ["id": "B", "type_id": 1]]],
                    "special_tokens": [bos: ["id": bos, "ids": [256 + i], "tokens": [bos]]]]
        } else {
            post = ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": true]
        }
        let json: [String: Any] = [
            "version": "1.0",
            "added_tokens": added,
            "normalizer": NSNull(),
            "pre_tokenizer": ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true],
            "post_processor": post,
            "decoder": ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true],
            "model": ["type": "BPE", "vocab": vocab, "merges": [String](), "dropout": NSNull(), "unk_token": NSNull(),
                      "fuse_unk": false, "byte_fallback": false, "ignore_merges": false],
        ]
        return (try? JSONSerialization.data(withJSONObject: json, options: [.sortedKeys])) ?? Data()
    }
}
