import Foundation
import MoE
import MoEDistributed
import MoECore
import MoEModels

/// Trains a `TrainableDecoder` as a `TrainingConfig` says: batches from the synthetic tasks or
/// text files, AdamW on a warm-up plus cosine schedule, clipping, and evaluation (exact-match
/// accuracy and experts per token, per task, on the held-out split).
///
/// Every batch depends only on (seed, step), and nothing else is random, so a run resumed from
/// a checkpoint at step s reaches exactly the weights of an uninterrupted run.
public final class Trainer: @unchecked Sendable {
    public let config: TrainingConfig
    public let model: TrainableDecoder
    public let optimizer: AdamW
    public let schedule: WarmupCosine
    public let pool: ThreadPool
    /// The ranks this run trains with, data parallel (one shard of each batch per rank, the
    /// gradients summed over the ranks), or nil to train alone. Set before the first step;
    /// every rank runs the same steps. `Trainer+Ranks.swift`.
    public var communicator: (any Communicator)? {
        didSet {
            model.expertParallel = config.expertParallel > 1 ? communicator : nil
            model.expertParallelChunks = config.overlapChunks
        }
    }
    /// Steps done.
    public private(set) var step = 0
    let text: TextCorpus?
    let instructions: InstructionCorpus?
    let synthetic: SyntheticCorpus
    /// The byte tokenizer for a fresh model; the checkpoint's own for one trained `from` a folder.
    public let tokenizer: any TrainingTokenizer

    /// A fresh model for `config`, or the checkpoint its `from` names (a typed error from
    /// MoEModels names the file and field when the folder is not one MoEKit can train).
    public init(config: TrainingConfig, pool: ThreadPool = .shared) throws {
        try config.validate(path: nil)
        self.config = config
        self.pool = pool
        if let from = config.from {
            // A LoRA base in its stored dtype is loaded so, never widened (QLoRA on a GGUF's blocks).
            let loaded = try TrainableDecoder(path: from, router: config.routerGiven ? config.router : nil,
                                              frozenProjections: config.lora != nil && config.lora?.baseDType == nil)
            if let lora = config.lora { try loaded.attachLoRA(lora, seed: config.seed) }
            model = loaded
            tokenizer = try Trainer.checkpointTokenizer(of: from, spec: model.spec)
        } else if let arch = config.model.arch, arch != "mixtral" {
            // A fresh model of another family: init-random's f32 weights, read back through the family.
            let dir = FileManager.default.temporaryDirectory.appendingPathComponent("moekit-init-\(arch)-\(UUID().uuidString)").path
            defer { try? FileManager.default.removeItem(atPath: dir) }
            try RandomCheckpoint.write(arch: arch, shape: config.model.randomShape(topK: config.router.k ?? 2), to: dir,
                                       seed: config.seed, dtype: .f32)
            model = try TrainableDecoder(directory: dir, router: config.routerGiven ? config.router : nil)
            tokenizer = ByteTokenizer()
        } else {
            let router = try config.router.makeRouter(experts: config.model.experts)
            model = TrainableDecoder(shape: config.shape, router: router, seed: config.seed)
            tokenizer = ByteTokenizer()
        }
        optimizer = AdamW(weightDecay: config.weightDecay)
        schedule = WarmupCosine(peak: config.lr, minLR: config.minLR, warmup: config.warmup, totalSteps: config.steps)
        let tok = tokenizer
        text = try config.data.textFiles.flatMap { $0.isEmpty ? nil : try TextCorpus(paths: $0, tokenizer: tok) }
        instructions = try config.data.jsonl.flatMap { files throws -> InstructionCorpus? in
            guard !files.isEmpty else { return nil }
            return try InstructionCorpus(paths: files, tokenizer: tok, chat: try Self.chatFormat(config))
        }
        if let instructions, instructions.unanswered(length: config.seqLen) == instructions.examples.count {
            throw MoEError.invalidConfig(path: nil, field: "seq_len",
                                         reason: "\(config.seqLen) tokens end before every jsonl example's answer begins: nothing would train")
        }
        let s = config.data.synthetic
        synthetic = SyntheticCorpus(tasks: s?.tasks ?? SyntheticTask.allCases, level: s?.level ?? 2,
                                    heldOutFraction: s?.heldOut ?? 0.1)
    }

    /// The tokenizer of checkpoint folder `dir`: its `tokenizer.json`, or the byte tokenizer for
    /// a byte-vocabulary model MoEKit trained; its ids must fit the model's vocabulary.
    static func checkpointTokenizer(of dir: String, spec: DecoderSpec) throws(ModelError) -> any TrainingTokenizer {
        let isGGUF = GGUFFile.isGGUF(path: dir)
        let path = isGGUF ? dir : (dir as NSString).appendingPathComponent("tokenizer.json")
        let tokenizer: any TrainingTokenizer
        if isGGUF && GGUFFile.hasTokenizer(path: dir) || !isGGUF && FileManager.default.fileExists(atPath: path) {
            tokenizer = try CheckpointTokenizer(directory: dir, spec: spec)
        } else if spec.vocabSize == ByteTokenizer.vocabularySize {
            tokenizer = ByteTokenizer()
        } else {
            throw .io(path: path, reason: "missing: training from a checkpoint needs its tokenizer")
        }
        guard tokenizer.idBound <= spec.vocabSize else {
            throw .invalidFile(path: path, field: "model.vocab", reason: "ids up to \(tokenizer.idBound - 1) do not fit the model's vocabulary of \(spec.vocabSize)")
        }
        for (field, id) in [("bos_token_id", tokenizer.bosID), ("eos_token_id", tokenizer.eosID)] {
            if let id, id >= spec.vocabSize {
                throw .invalidConfig(path: (dir as NSString).appendingPathComponent("config.json"), field: field,
                                     reason: "\(id) is outside the vocabulary of \(spec.vocabSize), and training needs it")
            }
        }
        return tokenizer
    }

    /// The chat format `jsonl` conversations render through: `data.chat_template`, else the
    /// `from` checkpoint's own; nil for neither.
    static func chatFormat(_ config: TrainingConfig) throws -> ChatFormat? {
        if let from = config.from { return try ChatFormat.of(model: from, templateFile: config.data.chatTemplate) }
        guard let file = config.data.chatTemplate else { return nil }
        guard let data = FileManager.default.contents(atPath: file) else { throw MoECoreError.io(path: file, reason: "cannot read the chat template") }
        do {
            return ChatFormat(template: try ChatTemplate(String(decoding: data, as: UTF8.self)), specialTokens: [:], origin: file)
        } catch {
            throw MoECoreError.invalidValue(path: file, field: "chat_template", reason: error.description)
        }
    }

    /// The batch for step `s`: inputs and next-token targets, `batch` rows of `seqLen`.
    /// Synthetic rows are drawn and tokenized on the pool, each from its own seed (the result
    /// does not depend on the threads): a step's rows took 2.5% of a small model's LoRA run on
    /// the calling thread while the other threads waited.
    public func batch(at s: Int) -> (inputs: [[Int]], targets: [[Int]]) {
        var rng = SplitMix64(seed: config.seed &* 0x9E37_79B9 &+ UInt64(s))
        if let instructions { return instructions.batch(config.batch, length: config.seqLen, rng: &rng) }
        if let text { return text.batch(config.batch, length: config.seqLen, rng: &rng) }
        let seeds = (0..<config.batch).map { rng.next() &+ UInt64($0) }
        var windows = [[Int]](repeating: [], count: config.batch)
        let (tokenizer, synthetic, length) = (tokenizer, synthetic, config.seqLen + 1)
        windows.withUnsafeMutableBufferPointer { rows in
            pool.parallelFor(rows.count) { b in
                var ids = tokenizer.bosID.map { [$0] } ?? []
                var rowRNG = SplitMix64(seed: seeds[b])
                while ids.count < length {
                    ids += tokenizer.encode(synthetic.randomSample(heldOut: false, rng: &rowRNG)?.text ?? "\n")
                }
                rows[b] = Array(ids.prefix(length))
            }
        }
        return (windows.map { Array($0.dropLast()) }, windows.map { Array($0.dropFirst()) })
    }

    /// One optimisation step; returns the loss (cross-entropy plus auxiliary) and the learning rate.
    @discardableResult
    public func trainStep() -> (loss: Float, aux: Float, lr: Float) {
        let (loss, aux) = computeGradients()
        let trainable = model.trainableParameters
        let clip = rankClipScale(trainable.map { $0.variable })
        let lr = schedule.rate(at: step)
        optimizer.update(trainable, lr: lr, gradScale: clip, pool: pool)
        if config.biasUpdateSpeed > 0 { updateRouterBiases(loads: lastLoads, speed: config.biasUpdateSpeed) }
        step += 1
        return (loss, aux, lr)
    }

    /// Tokens each layer sent to each expert in the last `computeGradients` (all micro-batches).
    public internal(set) var lastLoads: [[Int]] = []

    /// DeepSeek-V3's auxiliary-loss-free balancing, applied after a step: each layer's bias
    /// b_i += speed * sign(mean load - load_i), so an overloaded expert is chosen less next
    /// time. The bias steers only which experts are chosen, never their weights.
    public func updateRouterBiases(loads: [[Int]], speed: Float) {
        for (l, load) in loads.enumerated() where l < model.layers.count {
            guard var bias = model.layers[l].routerBias, bias.count == load.count, !load.isEmpty else { continue }
            let mean = Float(load.reduce(0, +)) / Float(load.count)
            for i in bias.indices {
                let gap = mean - Float(load[i])
                bias[i] += gap > 0 ? speed : (gap < 0 ? -speed : 0)
            }
            model.layers[l].routerBias = bias
        }
    }

    /// Forward and backward over this step's batch, leaving the gradients in `model`; returns
    /// the loss (cross-entropy plus auxiliary) and its auxiliary part.
    ///
    /// With `grad_accum` G > 1 the batch is G micro-batches of batch / G sequences, each with
    /// its loss (and auxiliary losses, over its own tokens) weighted 1 / G. They run on model
    /// replicas, as many at once as the pool has threads (each single-threaded inside), and
    /// their gradients are summed in micro-batch order: the result does not depend on the
    /// thread count.
    public func computeGradients() -> (loss: Float, aux: Float) {
        let (inputs, targets) = batch(at: step)
        for p in model.trainableParameters { p.variable.grad = nil }
        // LoRA dropout: masks from (seed, step, micro-batch or shard) alone, off again after.
        let dropout = model.lora.map { _ in config.seed &* 0xD1B5_4A32_D192_ED03 &+ UInt64(step) &* 1_000_003 }
        model.lora?.dropoutSeed = dropout
        defer { model.lora?.dropoutSeed = nil }
        let g = config.gradAccum
        if let group = communicator, group.size > 1 {
            precondition(g == 1 && config.dataParallel && inputs.count % group.size == 0,
                         "Trainer: ranks need data_parallel, grad_accum 1 and a batch they divide (Trainer.join checks)")
            return computeRankGradients(inputs, targets, group)
        }
        if g == 1 && config.dataParallel && pool.threadCount > 1 && inputs.count > 1 {
            return computeShardedGradients(inputs, targets)
        }
        if g == 1 {
            let tape = Tape(pool: pool)
            let out = model.forward(inputs, targets: targets, tape: tape, aux: config.auxLosses)
            tape.backward(from: out.loss)
            lastLoads = out.routings.map(\.chosenPerExpert)
            return (out.loss.value.floats[0] + out.auxLoss, out.auxLoss)
        }
        let micro = inputs.count / g, weight = 1 / Float(g)
        var aux = config.auxLosses
        aux.scale(by: weight)
        let lanes = min(g, pool.threadCount)
        let replicas = (0..<lanes).map { _ in model.replica() }
        var results = [(loss: Float, aux: Float, loads: [[Int]])](repeating: (0, 0, []), count: g)
        for wave in stride(from: 0, to: g, by: lanes) {
            let n = min(lanes, g - wave)
            results.withUnsafeMutableBufferPointer { out in
                pool.parallelFor(n) { i in
                    let rows = ((wave + i) * micro)..<((wave + i + 1) * micro)
                    replicas[i].lora?.dropoutSeed = dropout.map { $0 &+ UInt64(wave + i) }
                    replicas[i].lora?.auxScale = weight  // the mixtures' balance losses, as `aux` for the MoE layers
                    let tape = Tape(pool: pool)  // calls from inside a pool task run inline
                    let o = replicas[i].forward(Array(inputs[rows]), targets: Array(targets[rows]), tape: tape, aux: aux)
                    tape.backward(from: o.loss, seed: weight)
                    out[wave + i] = (o.loss.value.floats[0] * weight + o.auxLoss, o.auxLoss, o.routings.map(\.chosenPerExpert))
                }
            }
            model.absorbGradients(of: Array(replicas[0..<n]), pool: pool)
        }
        lastLoads = Self.summedLoads(results.map(\.loads))
        return (results.reduce(0) { $0 + $1.loss }, results.reduce(0) { $0 + $1.aux })
    }

    /// `computeGradients` with `dataParallel`: the batch as S shards (S the most threads that
    /// divide the batch), one per thread, each on a model replica single-threaded inside. The
    /// forward passes run at once, recording the MoE layers' statistics; once merged they give
    /// the auxiliary losses of the whole batch, and the backward passes run at once with the
    /// whole batch's counts. Each shard's cross-entropy (a mean over its targets) is weighted by
    /// its share of the batch's targets, so the loss is the batch's mean; the replicas'
    /// gradients are summed in shard order.
    private func computeShardedGradients(_ inputs: [[Int]], _ targets: [[Int]]) -> (loss: Float, aux: Float) {
        let shards = (1...min(pool.threadCount, inputs.count)).last { inputs.count % $0 == 0 } ?? 1
        let per = inputs.count / shards
        let statistics = MoEBatchStatistics(layers: model.layers.count, shards: shards)
        let replicas = (0..<shards).map { _ in model.replica() }
        let tapes = (0..<shards).map { _ in Tape(pool: pool) }  // calls from inside a pool task run inline
        var outputs = [TrainableDecoder.Output?](repeating: nil, count: shards)
        outputs.withUnsafeMutableBufferPointer { out in
            pool.parallelFor(shards) { i in
                let rows = (i * per)..<((i + 1) * per)
                if let seed = model.lora?.dropoutSeed { replicas[i].lora?.dropoutSeed = seed &+ UInt64(i) }
                out[i] = replicas[i].forward(Array(inputs[rows]), targets: Array(targets[rows]), tape: tapes[i],
                                             aux: config.auxLosses, shard: statistics.shard(i))
            }
        }
        let aux = statistics.merge(config.auxLosses)
        let counted = (0..<shards).map { i in targets[(i * per)..<((i + 1) * per)].reduce(0) { $0 + $1.filter { $0 >= 0 }.count } }
        let total = max(1, counted.reduce(0, +))
        pool.parallelFor(shards) { i in
            guard let out = outputs[i] else { return }
            tapes[i].backward(from: out.loss, seed: Float(counted[i]) / Float(total))
        }
        model.absorbGradients(of: replicas, pool: pool)
        let results = outputs.compactMap { $0 }
        lastLoads = Self.summedLoads(results.map { $0.routings.map(\.chosenPerExpert) })
        let loss = zip(results, counted).reduce(Float(0)) { $0 + $1.0.loss.value.floats[0] * Float($1.1) / Float(total) }
        return (loss + aux, aux)
    }

    /// Per layer and expert, the tokens chosen over several parts of a batch (each part's
    /// per-layer loads).
    static func summedLoads(_ parts: [[[Int]]]) -> [[Int]] {
        guard let first = parts.first else { return [] }
        return parts.dropFirst().reduce(first) { total, part in zip(total, part).map { a, b in zip(a, b).map { $0 + $1 } } }
    }

    /// Greedy continuation of `prompt` until a newline, end of sequence or `maxNew` tokens.
    public func complete(_ prompt: String, maxNew: Int = 24) -> String {
        var ids = tokenizer.encode(prompt, bos: true)
        var out: [Int] = []
        for _ in 0..<maxNew {
            let tape = Tape(pool: pool)
            let logits = model.forward([ids], targets: [[Int](repeating: -1, count: ids.count)], tape: tape,
                                       aux: AuxLossCoefficients()).logits.value
            let v = logits.shape[1]
            let next = Kernels.argmaxRow(UnsafeBufferPointer(rebasing: logits.floats[((ids.count - 1) * v)...]))
            if next == tokenizer.eosID || tokenizer.decode([next]).contains("\n") { break }
            out.append(next)
            ids.append(next)
        }
        return tokenizer.decode(out)
    }

    /// Per-task evaluation on held-out prompts.
    public struct Evaluation: Codable, Sendable {
        /// Exact-match accuracy per task name.
        public var accuracy: [String: Double]
        /// Mean true experts per token per task (over every MoE layer), on prompt and answer.
        public var expertsPerToken: [String: Double]
    }

    /// Exact-match accuracy and experts per token on `config.evalSamples` held-out samples.
    /// With sharded experts (expert parallelism) every rank must call it at the same point: all
    /// run the same samples, each its experts on every token, the outputs all-gathered
    /// (`ExpertParallelGroup.replicated`), so every rank gets the single process's figures bit
    /// for bit. Otherwise it runs on this rank alone.
    public func evaluate() -> Evaluation {
        model.expertParallelReplicated = true
        defer { model.expertParallelReplicated = false }
        let samples = synthetic.samples(config.evalSamples, heldOut: true, seed: config.seed &+ 0xE7A1)
        let accuracy = exactMatchAccuracy(samples) { complete($0) }
        var experts: [String: (sum: Double, count: Int)] = [:]
        for s in samples {
            let ids = tokenizer.encode(s.text, bos: true)
            let out = model.forward([ids], targets: [[Int](repeating: -1, count: ids.count)], tape: Tape(pool: pool),
                                    aux: AuxLossCoefficients())
            for r in out.routings {
                experts[s.task.rawValue, default: (0, 0)].sum += Double(r.assignmentCount)
                experts[s.task.rawValue, default: (0, 0)].count += r.tokenCount
            }
        }
        return Evaluation(accuracy: Dictionary(uniqueKeysWithValues: accuracy.map { ($0.key.rawValue, $0.value) }),
                          expertsPerToken: experts.mapValues { $0.count == 0 ? 0 : $0.sum / Double($0.count) })
    }

    /// The optimiser state by parameter name: first and second moments, as views of the live
    /// tensors (`AdamW.state(of:)`).
    public var optimizerState: [(name: String, m: Tensor, v: Tensor)] {
        let named = model.lora.map { Dictionary(uniqueKeysWithValues: $0.namedVariables) } ?? model.namedVariables
        return named.sorted { $0.key < $1.key }.compactMap { name, v in
            optimizer.state(of: v).map { (name, $0.m, $0.v) }
        }
    }

    /// Restores a checkpoint: parameters, optimiser moments (`moment(name, "m" | "v")`, nil when
    /// absent) and the step count.
    public func restore(step: Int, tensor: @escaping (String) throws -> Tensor, moment: (String, String) throws -> Tensor?) throws {
        let named: [String: Variable]
        if let lora = model.lora {  // the adapter's tensors; the base stays as loaded
            try lora.load(tensor)
            named = Dictionary(uniqueKeysWithValues: lora.namedVariables)
        } else {
            try model.load(tensor)
            named = model.namedVariables
        }
        for (name, v) in named {
            if let m = try moment(name, "m"), let s = try moment(name, "v") {
                optimizer.restore(v, m: m, v: s, step: step)
            }
        }
        self.step = step
    }
}
