import Foundation
import MoE
import MoECore
import MoEModels

/// Everything `moe train` needs, from a JSON file (snake_case keys; absent keys take the
/// defaults below).
///
/// ```json
/// {"model": {"hidden_size": 128, "layers": 4, "heads": 4, "kv_heads": 2, "experts": 8, "expert_size": 256},
///  "router": {"name": "topk-softmax", "k": 2},
///  "data": {"synthetic": {"level": 2}}, "steps": 2000, "batch": 8, "seq_len": 64, "lr": 0.001,
///  "checkpoint_dir": "runs/tiny"}
/// ```
public struct TrainingConfig: Codable, Sendable, StrictConfig {
    public struct Model: Codable, Sendable {
        public var hiddenSize = 128, layers = 4, heads = 4, kvHeads = 2, experts = 8, expertSize = 256
        public var ropeTheta = 10_000.0
        /// The family (config.json's `model_type`); nil is Mixtral's layout with MoEKit's own
        /// initialisation. Any other family starts from `init-random`'s weights.
        public var arch: String?
        /// For the other families: the dense FFN size, the shared expert size and the leading
        /// dense layers, where the family has them (defaults: `init-random`'s).
        public var denseSize: Int?, sharedSize: Int?, denseLayers: Int?
        enum CodingKeys: String, CodingKey, CaseIterable {
            case hiddenSize = "hidden_size", layers, heads, kvHeads = "kv_heads", experts, expertSize = "expert_size"
            case ropeTheta = "rope_theta", arch, denseSize = "dense_size", sharedSize = "shared_size", denseLayers = "dense_layers"
        }
        public init() {}
        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            let d = Model()
            hiddenSize = try c.decodeIfPresent(Int.self, forKey: .hiddenSize) ?? d.hiddenSize
            layers = try c.decodeIfPresent(Int.self, forKey: .layers) ?? d.layers
            heads = try c.decodeIfPresent(Int.self, forKey: .heads) ?? d.heads
            kvHeads = try c.decodeIfPresent(Int.self, forKey: .kvHeads) ?? d.kvHeads
            experts = try c.decodeIfPresent(Int.self, forKey: .experts) ?? d.experts
            expertSize = try c.decodeIfPresent(Int.self, forKey: .expertSize) ?? d.expertSize
            ropeTheta = try c.decodeIfPresent(Double.self, forKey: .ropeTheta) ?? d.ropeTheta
            arch = try c.decodeIfPresent(String.self, forKey: .arch)
            denseSize = try c.decodeIfPresent(Int.self, forKey: .denseSize)
            sharedSize = try c.decodeIfPresent(Int.self, forKey: .sharedSize)
            denseLayers = try c.decodeIfPresent(Int.self, forKey: .denseLayers)
        }

        /// `init-random`'s shape for a fresh model of `arch` with the byte vocabulary.
        func randomShape(topK: Int) -> RandomCheckpoint.Shape {
            var s = RandomCheckpoint.Shape()
            s.vocabSize = ByteTokenizer.vocabularySize
            (s.hiddenSize, s.layers, s.heads, s.kvHeads) = (hiddenSize, layers, heads, kvHeads)
            (s.experts, s.expertSize, s.topK, s.ropeTheta) = (experts, expertSize, topK, ropeTheta)
            if let denseSize { s.denseSize = denseSize }
            if let sharedSize { s.sharedSize = sharedSize }
            if let denseLayers { s.denseLayers = denseLayers }
            return s
        }
    }

    /// Where batches come from: the synthetic tasks, or text files.
    public struct DataSource: Codable, Sendable {
        public struct Synthetic: Codable, Sendable {
            public var tasks: [SyntheticTask]?
            public var level: Int?
            public var heldOut: Double?
            enum CodingKeys: String, CodingKey, CaseIterable { case tasks, level, heldOut = "held_out" }
        }
        public var synthetic: Synthetic?
        public var textFiles: [String]?
        /// Instruction-tuning JSONL files (`InstructionCorpus`): the loss on the answers only.
        public var jsonl: [String]?
        /// A Jinja chat template file for `jsonl` conversations, in place of the model's own.
        public var chatTemplate: String?
        enum CodingKeys: String, CodingKey, CaseIterable { case synthetic, textFiles = "text_files", jsonl, chatTemplate = "chat_template" }
    }

    public var model = Model()
    /// A checkpoint folder to train from (`moe train --from`): its family, weights and tokenizer
    /// replace the `model` section.
    public var from: String?
    public var router = RouterConfig(name: "topk-softmax")
    /// LoRA fine-tuning of the `from` checkpoint (its weights frozen), or nil to train every weight.
    public var lora: LoRAConfig?
    /// Whether the file names a router; a checkpoint trained `from` keeps its own otherwise.
    public var routerGiven = false
    public var loadBalance: Float = 0.01
    public var zLoss: Float = 0.001
    /// The top-p dynamic loss (mean router entropy), DeepSeekMoE's expert- and device-level
    /// balance (devices from the router's `devices`); all off by default.
    public var entropyLoss: Float = 0, expertBalance: Float = 0, deviceBalance: Float = 0
    /// DeepSeek-V3's auxiliary-loss-free balancing (`topk-sigmoid` with sigmoid scores): after
    /// each step every layer's selection bias moves by this much towards balance,
    /// b_i += speed * sign(mean load - load_i). 0 keeps the biases fixed.
    public var biasUpdateSpeed: Float = 0.001
    public var data = DataSource(synthetic: .init(), textFiles: nil)
    public var steps = 1000, batch = 8, seqLen = 64
    /// Gradient accumulation: each step's `batch` sequences run as this many micro-batches,
    /// their gradients summed before one optimiser step (`Trainer.computeGradients`).
    public var gradAccum = 1
    /// Data-parallel steps: each step's batch runs as shards, one per thread, on model replicas
    /// (each single-threaded inside), with the auxiliary losses still those of the whole batch
    /// (`MoEBatchStatistics`), so the step is the one-batch step up to the order of
    /// floating-point sums. Faster for small models, whose ops are too short to split across
    /// threads well. Needs `grad_accum` 1 and a router that routes token by token (not
    /// `expert-choice`, `switch` or `capacity_factor`, whose choices depend on the whole batch).
    public var dataParallel = false
    /// Expert parallelism over the ranks of a data-parallel run under `mpirun` (`Trainer.communicator`):
    /// each rank runs 1/P of every MoE layer's experts, on the rows every rank routed to them,
    /// rows crossing ranks by all-to-all in the MoE op's forward and backward. 1: off. Needs
    /// `data_parallel`, plain SwiGLU experts and no LoRA; P must be the number of ranks.
    public var expertParallel = 1
    /// With `expert_parallel`: chunks the MoE op's all-to-alls (forward and backward) are
    /// pipelined in, so that one chunk's rows travel while another's experts run (FSMoE); 1:
    /// none. At most the fewest experts a rank holds are used.
    public var overlapChunks = 1
    public var lr: Float = 1e-3, minLR: Float = 1e-4, warmup = 100, weightDecay: Float = 0.1, clip: Float = 1
    public var evalInterval = 100, evalSamples = 60, checkpointInterval = 200
    public var checkpointDir = "runs/moe"
    public var seed: UInt64 = 1
    public var threads: Int?

    enum CodingKeys: String, CodingKey, CaseIterable {
        case model, from, router, lora, data, steps, batch, lr, warmup, clip, seed, threads
        case loadBalance = "load_balance", zLoss = "z_loss", seqLen = "seq_len", minLR = "min_lr", gradAccum = "grad_accum"
        case dataParallel = "data_parallel", expertParallel = "expert_parallel", overlapChunks = "overlap_chunks"
        case entropyLoss = "entropy_loss", expertBalance = "expert_balance", deviceBalance = "device_balance"
        case biasUpdateSpeed = "bias_update_speed"
        case weightDecay = "weight_decay", evalInterval = "eval_interval", evalSamples = "eval_samples"
        case checkpointInterval = "checkpoint_interval", checkpointDir = "checkpoint_dir"
    }

    public init() {}

    /// The keys a training config may hold, down to the router's and the data section's.
    public static var configKeys: ConfigKeys {
        .keys(CodingKeys.self).with([
            "model": .keys(Model.CodingKeys.self), "router": RouterConfig.configKeys, "lora": .keys(LoRAConfig.CodingKeys.self),
            "data": .keys(DataSource.CodingKeys.self).with(["synthetic": .keys(DataSource.Synthetic.CodingKeys.self)]),
        ])
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        let d = TrainingConfig()
        model = try c.decodeIfPresent(Model.self, forKey: .model) ?? d.model
        from = try c.decodeIfPresent(String.self, forKey: .from)
        router = try c.decodeIfPresent(RouterConfig.self, forKey: .router) ?? d.router
        routerGiven = c.contains(.router)
        lora = try c.decodeIfPresent(LoRAConfig.self, forKey: .lora)
        loadBalance = try c.decodeIfPresent(Float.self, forKey: .loadBalance) ?? d.loadBalance
        zLoss = try c.decodeIfPresent(Float.self, forKey: .zLoss) ?? d.zLoss
        entropyLoss = try c.decodeIfPresent(Float.self, forKey: .entropyLoss) ?? d.entropyLoss
        expertBalance = try c.decodeIfPresent(Float.self, forKey: .expertBalance) ?? d.expertBalance
        deviceBalance = try c.decodeIfPresent(Float.self, forKey: .deviceBalance) ?? d.deviceBalance
        biasUpdateSpeed = try c.decodeIfPresent(Float.self, forKey: .biasUpdateSpeed) ?? d.biasUpdateSpeed
        data = try c.decodeIfPresent(DataSource.self, forKey: .data) ?? d.data
        steps = try c.decodeIfPresent(Int.self, forKey: .steps) ?? d.steps
        batch = try c.decodeIfPresent(Int.self, forKey: .batch) ?? d.batch
        seqLen = try c.decodeIfPresent(Int.self, forKey: .seqLen) ?? d.seqLen
        gradAccum = try c.decodeIfPresent(Int.self, forKey: .gradAccum) ?? d.gradAccum
        dataParallel = try c.decodeIfPresent(Bool.self, forKey: .dataParallel) ?? d.dataParallel
        expertParallel = try c.decodeIfPresent(Int.self, forKey: .expertParallel) ?? d.expertParallel
        overlapChunks = try c.decodeIfPresent(Int.self, forKey: .overlapChunks) ?? d.overlapChunks
        lr = try c.decodeIfPresent(Float.self, forKey: .lr) ?? d.lr
        minLR = try c.decodeIfPresent(Float.self, forKey: .minLR) ?? d.minLR
        warmup = try c.decodeIfPresent(Int.self, forKey: .warmup) ?? d.warmup
        weightDecay = try c.decodeIfPresent(Float.self, forKey: .weightDecay) ?? d.weightDecay
        clip = try c.decodeIfPresent(Float.self, forKey: .clip) ?? d.clip
        evalInterval = try c.decodeIfPresent(Int.self, forKey: .evalInterval) ?? d.evalInterval
        evalSamples = try c.decodeIfPresent(Int.self, forKey: .evalSamples) ?? d.evalSamples
        checkpointInterval = try c.decodeIfPresent(Int.self, forKey: .checkpointInterval) ?? d.checkpointInterval
        checkpointDir = try c.decodeIfPresent(String.self, forKey: .checkpointDir) ?? d.checkpointDir
        seed = try c.decodeIfPresent(UInt64.self, forKey: .seed) ?? d.seed
        threads = try c.decodeIfPresent(Int.self, forKey: .threads)
    }

    /// Checks ranges; throws naming the field (and `path`).
    public func validate(path: String?) throws(MoEError) {
        func bad(_ f: String, _ r: String) -> MoEError { .invalidConfig(path: path, field: f, reason: r) }
        let m = model
        if from == nil {
            guard m.hiddenSize > 0, m.layers > 0, m.heads > 0, m.hiddenSize % m.heads == 0, (m.hiddenSize / m.heads) % 2 == 0 else {
                throw bad("model", "need positive sizes and hidden_size / heads even")
            }
            guard m.kvHeads > 0, m.heads % m.kvHeads == 0 else { throw bad("model.kv_heads", "must divide heads") }
            guard m.experts > 0, m.expertSize > 0 else { throw bad("model.experts", "must be positive") }
            if let arch = m.arch, arch != "mixtral" {
                guard Architectures.modelTypes.contains(arch) else {
                    throw bad("model.arch", "'\(arch)' is not one of \(Architectures.modelTypes.joined(separator: ", "))")
                }
            } else {
                do {
                    _ = try TrainableDecoder.spec(for: shape, topK: 1)
                } catch {
                    throw bad("model", error.description)
                }
            }
        }
        if let lora {
            guard from != nil else { throw bad("lora", "LoRA fine-tunes a checkpoint: give `from` (or --from)") }
            try lora.validate(path: path)
            if lora.kind != .lora && dataParallel {
                throw bad("data_parallel", "the shards' balance statistics cover the model's MoE layers, not \(lora.kind.rawValue)'s mixtures; use grad_accum")
            }
        }
        guard steps > 0, batch > 0, seqLen > 1 else { throw bad("steps/batch/seq_len", "must be positive (seq_len > 1)") }
        // Bounded so that every size computed from them fits memory and Int, checked before anything is allocated.
        guard steps <= 1 << 40 else { throw bad("steps", "must be at most 2^40, got \(steps)") }
        guard batch <= 1 << 16 else { throw bad("batch", "must be at most 65536, got \(batch)") }
        guard seqLen <= 1 << 20 else { throw bad("seq_len", "must be at most 2^20, got \(seqLen)") }
        guard batch * seqLen <= 1 << 24 else { throw bad("batch", "batch x seq_len must be at most 2^24 tokens a step, got \(batch) x \(seqLen)") }
        if let level = data.synthetic?.level, !(1...1000).contains(level) { throw bad("data.synthetic.level", "must be in 1...1000, got \(level)") }
        if let held = data.synthetic?.heldOut, !(held >= 0 && held < 1) { throw bad("data.synthetic.held_out", "must be in [0, 1), got \(held)") }
        guard !checkpointDir.trimmingCharacters(in: .whitespaces).isEmpty else { throw bad("checkpoint_dir", "must name a folder") }
        if let threads, !(1...ThreadPool.maxThreads).contains(threads) {
            throw bad("threads", "must be in 1...\(ThreadPool.maxThreads) (4 per core on this machine), got \(threads)")
        }
        guard gradAccum > 0, batch % gradAccum == 0 else { throw bad("grad_accum", "must be positive and divide batch") }
        guard (1...4096).contains(expertParallel) else { throw bad("expert_parallel", "\(expertParallel) is not in 1...4096") }
        guard (1...1024).contains(overlapChunks) else { throw bad("overlap_chunks", "\(overlapChunks) is not in 1...1024") }
        if overlapChunks > 1 && expertParallel == 1 {
            throw bad("overlap_chunks", "pipelines the all-to-all of expert_parallel, which is off")
        }
        if expertParallel > 1 {
            guard dataParallel else { throw bad("expert_parallel", "needs data_parallel (each rank trains a shard of every batch)") }
            guard lora == nil else { throw bad("expert_parallel", "runs the experts' own weights; LoRA training keeps them frozen on every rank") }
            if from == nil && model.experts < expertParallel {
                throw bad("expert_parallel", "\(model.experts) experts cannot be shared by \(expertParallel) ranks")
            }
        }
        if dataParallel {
            guard gradAccum == 1 else { throw bad("data_parallel", "needs grad_accum 1") }
            guard Self.tokenByTokenRouters.contains(router.name), router.capacityFactor == nil else {
                throw bad("data_parallel", "needs a router that routes token by token (not \(router.name)\(router.capacityFactor == nil ? "" : " with capacity_factor"))")
            }
        }
        guard biasUpdateSpeed >= 0 else { throw bad("bias_update_speed", "must not be negative") }
        guard lr > 0, minLR >= 0, warmup >= 0, clip > 0 else { throw bad("lr/min_lr/warmup/clip", "out of range") }
        guard evalInterval > 0, checkpointInterval > 0, evalSamples >= 0 else { throw bad("eval_interval/checkpoint_interval", "must be positive") }
        if data.synthetic == nil && (data.textFiles ?? []).isEmpty && (data.jsonl ?? []).isEmpty {
            throw bad("data", "give synthetic, text_files or jsonl")
        }
        if data.chatTemplate != nil && (data.jsonl ?? []).isEmpty { throw bad("data.chat_template", "is for jsonl conversations; give jsonl") }
        if from == nil { _ = try router.makeRouter(experts: m.experts, path: path) }  // every router trains; this checks its parameters
    }

    /// Routers whose choice for a token depends on that token alone (without capacity), so a
    /// batch can run as shards (`dataParallel`).
    static let tokenByTokenRouters: Set<String> = ["topk-softmax", "topk-sigmoid", "top-p", "null-experts", "recurrent"]

    /// The shape of the fresh model the `model` section describes.
    public var shape: TrainableDecoder.Shape {
        var s = TrainableDecoder.Shape(vocabSize: ByteTokenizer.vocabularySize, hiddenSize: model.hiddenSize, layers: model.layers,
                                       heads: model.heads, kvHeads: model.kvHeads, experts: model.experts, expertSize: model.expertSize)
        s.ropeTheta = model.ropeTheta
        return s
    }

    /// The auxiliary-loss weights the MoE layers train with.
    public var auxLosses: AuxLossCoefficients {
        AuxLossCoefficients(loadBalance: loadBalance, zLoss: zLoss, entropy: entropyLoss, expertBalance: expertBalance,
                            deviceBalance: deviceBalance, devices: router.devices ?? 1)
    }
}
