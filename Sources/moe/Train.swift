import ArgumentParser
import Foundation
import MoE
import MoECore
import MoEModels
import MoETrain

/// `moe train`: trains an MoE from scratch, or any checkpoint MoEKit can train from its
/// weights (`--from`), as a config file says, with progress, evaluation, atomic checkpoints and
/// resume.
struct Train: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Train an MoE from a JSON or TOML config: progress on stderr, eval to <checkpoint_dir>/log.jsonl, checkpoints in <checkpoint_dir>/checkpoint.",
        discussion: """
            The checkpoint folder is a Hugging Face checkpoint (model.safetensors, config.json, tokenizer.json) that \
            `moe generate --model <checkpoint_dir>/checkpoint` runs, plus the optimiser state for --resume. It is \
            written to a temporary folder and swapped in, so a kill never leaves a half-written checkpoint.

            With a `lora` section (`rank`, `alpha`, `dropout`, `target_modules` as PEFT names them, `use_rslora`) and             --from, the checkpoint's weights stay frozen and only LoRA adapters train; the checkpoint folder is then a             PEFT adapter (adapter_config.json, adapter_model.safetensors) for `--adapter` on generate, logits,             perplexity, bench and serve, for `moe merge`, and for PEFT itself.
            """)

    @Option(help: "Training config (JSON, or TOML if the name ends in .toml).") var config: String
    @Option(help: "A checkpoint folder to train from (any family with grouped-query attention): its weights, config and tokenizer replace the config's model section.")
    var from: String?
    @Flag(help: "Continue from the last checkpoint in checkpoint_dir.") var resume = false
    @Option(name: .customLong("stop-after"), help: "Stop after this many steps in this run (then resume later).") var stopAfter: Int?
    @Flag(help: "No progress bar.") var quiet = false
    @Flag(help: "Only evaluate the last checkpoint on held-out samples (per-task accuracy and experts per token), then stop.")
    var evaluate = false
    @Option(name: .customLong("eval-samples"), help: "Held-out samples per evaluation (overrides the config's eval_samples).")
    var evalSamples: Int?

    mutating func validate() throws {
        if let evalSamples, evalSamples < 1 { throw ValidationError("--eval-samples must be at least 1") }
    }

    func run() throws {
        var cfg = try ConfigFile.load(TrainingConfig.self, path: config)
        if let evalSamples { cfg.evalSamples = evalSamples }
        if let from { cfg.from = from }
        try cfg.validate(path: config)
        let pool = ThreadPool(threads: cfg.threads ?? ThreadPool.defaultThreadCount)
        let trainer = try Trainer(config: cfg, pool: pool)
        // Under mpirun: data parallel over the ranks; rank 0 alone writes and prints.
        let ranks = try ParallelOptions.trainingRanks(config: cfg, path: config)
        let lead = (ranks?.rank ?? 0) == 0
        let dir = URL(fileURLWithPath: cfg.checkpointDir)
        if resume || evaluate {  // before anything is created: a failed resume writes nothing
            if lead { Trainer.recoverCheckpoint(in: dir) }  // what a killed run left behind
            ranks?.barrier()
            try trainer.restore(from: dir)
        }
        // After restoring: with expert_parallel, every rank then lets go of the others' experts,
        // and evaluations and checkpoints need every rank (each runs or sends its experts).
        if let ranks { try trainer.join(ranks, configPath: config) }
        let sharded = trainer.model.expertParallel != nil
        if evaluate {
            guard lead || sharded else { return }
            let e = trainer.evaluate()
            if lead { try printJSON(Evaluated(step: trainer.step, samples: cfg.evalSamples, accuracy: e.accuracy, expertsPerToken: e.expertsPerToken)) }
            return
        }
        do {
            if lead { try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true) }
        } catch {
            throw MoEError.invalidConfig(path: config, field: "checkpoint_dir", reason: "cannot create '\(cfg.checkpointDir)': \(systemReason(error))")
        }
        if !resume && lead { Trainer.recoverCheckpoint(in: dir) }
        let log = dir.appendingPathComponent("log.jsonl")
        let start = Date(), firstStep = trainer.step
        var tokens = 0, lastLoss: Float = 0, ran = 0, lastRate = 0.0
        var warm: (date: Date, tokens: Int)?  // after the first 3 steps of this run
        var lastStepEnd = start
        while trainer.step < cfg.steps {
            if let stopAfter, ran >= stopAfter { break }
            let r = trainer.trainStep()
            ran += 1
            tokens += cfg.batch * cfg.seqLen
            lastLoss = r.loss
            lastStepEnd = Date()
            let elapsed = lastStepEnd.timeIntervalSince(start)
            let rate = Double(tokens) / max(elapsed, 1e-9)
            lastRate = rate
            if ran == Self.warmupSteps { warm = (lastStepEnd, tokens) }
            if !quiet && lead { Self.progress(step: trainer.step, total: cfg.steps, loss: r.loss, rate: rate, elapsed: elapsed, done: trainer.step - firstStep) }
            let evaluating = trainer.step % cfg.evalInterval == 0 || trainer.step == cfg.steps
            let saving = trainer.step % cfg.checkpointInterval == 0 || trainer.step == cfg.steps
            if evaluating && (lead || sharded) {
                let e = trainer.evaluate()
                let line = EvalLine(step: trainer.step, loss: r.loss, lr: r.lr, tokensPerS: rate, accuracy: e.accuracy,
                                    expertsPerToken: e.expertsPerToken)
                if lead { try Self.append(line, to: log) }
            }
            if saving && (lead || sharded) {
                do {
                    try trainer.save(to: dir)  // sharded: rank 0 writes, the others send their experts
                } catch let error as CocoaError {
                    throw MoECoreError.io(path: dir.appendingPathComponent("checkpoint").path, reason: "cannot write the checkpoint: \(systemReason(error))")
                }
            }
        }
        if !quiet && lead { FileHandle.standardError.write(Data("\n".utf8)) }
        let afterWarmup = warm.flatMap { w in
            ran > Self.warmupSteps ? Double(tokens - w.tokens) / max(lastStepEnd.timeIntervalSince(w.date), 1e-9) : nil
        }
        var summary = Summary(step: trainer.step, loss: lastLoss, tokensPerS: lastRate, tokensPerSAfterWarmup: afterWarmup,
                              checkpoint: dir.appendingPathComponent("checkpoint").path)
        if trainer.model.expertParallel != nil && ran > 0 {
            let t = trainer.model.expertExchange.current
            summary.expertParallelBytesSentPerStep = Double(t.bytesSent) / Double(ran)
            summary.expertParallelSecondsPerStep = Double(t.communicationNanoseconds) / 1e9 / Double(ran)
        }
        try printJSON(summary)
    }

    struct EvalLine: Encodable {
        let step: Int, loss: Float, lr: Float, tokensPerS: Double
        let accuracy: [String: Double], expertsPerToken: [String: Double]
    }

    /// What `moe train --evaluate` prints.
    struct Evaluated: Encodable {
        let step: Int, samples: Int
        let accuracy: [String: Double], expertsPerToken: [String: Double]
    }

    /// What `moe train` prints when it stops: `tokens_per_s` over this run's steps, the first
    /// included (evaluations and checkpoints between steps too); `tokens_per_s_after_warmup` over
    /// the steps after the first `warmupSteps`, as PyTorch benchmarks time (absent for shorter
    /// runs).
    struct Summary: Encodable {
        let step: Int, loss: Float, tokensPerS: Double, tokensPerSAfterWarmup: Double?, checkpoint: String
        /// With `expert_parallel`: rank 0's all-to-all traffic per step (bytes sent to other
        /// ranks, over every MoE layer, forward and backward) and its seconds in those collectives.
        var expertParallelBytesSentPerStep: Double? = nil
        var expertParallelSecondsPerStep: Double? = nil
    }

    /// Steps `tokens_per_s_after_warmup` leaves out (the first touches every buffer).
    static let warmupSteps = 3

    static func progress(step: Int, total: Int, loss: Float, rate: Double, elapsed: Double, done: Int) {
        let width = 30, filled = width * step / max(1, total)
        let eta = done > 0 ? elapsed / Double(done) * Double(total - step) : 0
        let bar = String(repeating: "=", count: filled) + String(repeating: " ", count: width - filled)
        let line = String(format: "\rstep %d/%d [%@] loss %.4f  %.0f tok/s  eta %dm%02ds", step, total, bar, loss, rate,
                          Int(eta) / 60, Int(eta) % 60)
        FileHandle.standardError.write(Data(line.utf8))
    }

    static func append(_ line: EvalLine, to url: URL) throws {
        let encoder = JSONEncoder()
        encoder.keyEncodingStrategy = .convertToSnakeCase
        encoder.outputFormatting = [.sortedKeys]
        var data = try encoder.encode(line)
        data.append(0x0A)
        do {
            if let handle = try? FileHandle(forWritingTo: url) {
                defer { try? handle.close() }
                try handle.seekToEnd()
                try handle.write(contentsOf: data)
            } else {
                try data.write(to: url)
            }
        } catch {
            throw MoECoreError.io(path: url.path, reason: "cannot append the evaluation line: \(systemReason(error))")
        }
    }
}
