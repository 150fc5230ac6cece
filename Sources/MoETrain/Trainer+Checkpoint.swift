import Foundation
import MoECore
import MoEModels

/// A training run's checkpoint folder: `<dir>/checkpoint`, a Hugging Face model folder that
/// `moe generate` runs (model.safetensors, config.json, tokenizer.json), or with LoRA a PEFT
/// adapter folder (adapter_config.json, adapter_model.safetensors) for `--adapter`, plus the
/// optimiser moments (optimizer.safetensors) and the step (trainer_state.json), replaced
/// atomically.
extension Trainer {
    /// Writes the checkpoint to a fresh folder, then swaps it in: checkpoint -> checkpoint.old,
    /// new -> checkpoint, then removes checkpoint.old. Under expert parallelism every rank
    /// calls it at the same step: rank 0 writes, each expert tensor sent by its rank as its
    /// turn comes (`Trainer+ShardedCheckpoint`); the others write nothing.
    public func save(to dir: URL) throws {
        let trainer = self
        if let group = communicator, group.rank != 0, model.expertParallel != nil {
            sendCheckpoint(checkpointWeights)
            sendCheckpoint(checkpointMoments)
            return
        }
        let fm = FileManager.default
        let final = dir.appendingPathComponent("checkpoint"), old = dir.appendingPathComponent("checkpoint.old")
        Self.recoverCheckpoint(in: dir)
        let tmp = dir.appendingPathComponent(".checkpoint-\(getpid())-\(trainer.step)")
        try? fm.removeItem(at: tmp)
        try fm.createDirectory(at: tmp, withIntermediateDirectories: true)
        if let lora = trainer.model.lora {  // a PEFT adapter for the unchanged base
            try lora.save(to: tmp.path, base: trainer.config.from)
        } else {
            try writeModel(to: tmp)
        }
        try SafetensorsWriter.write(entries: checkpointEntries(checkpointMoments), to: tmp.appendingPathComponent("optimizer.safetensors").path)
        try JSONSerialization.data(withJSONObject: ["step": trainer.step]).write(to: tmp.appendingPathComponent("trainer_state.json"))
        try? fm.removeItem(at: old)
        if fm.fileExists(atPath: final.path) { try fm.moveItem(at: final, to: old) }
        try fm.moveItem(at: tmp, to: final)
        try? fm.removeItem(at: old)
    }

    /// The model folder's files in `tmp`: weights, config.json and the tokenizer.
    private func writeModel(to tmp: URL) throws {
        let trainer = self, fm = FileManager.default
        try SafetensorsWriter.write(entries: checkpointEntries(checkpointWeights), metadata: ["format": "pt"],
                                    to: tmp.appendingPathComponent("model.safetensors").path)
        let fresh = trainer.config.from == nil
        var config = trainer.model.configJSON(routerConfig: fresh || trainer.config.routerGiven ? trainer.config.router : nil)
        if fresh {
            config["bos_token_id"] = ByteTokenizer.bos
            config["eos_token_id"] = ByteTokenizer.eos
        }
        try JSONSerialization.data(withJSONObject: config, options: [.prettyPrinted, .sortedKeys])
            .write(to: tmp.appendingPathComponent("config.json"))
        if let from = trainer.config.from, GGUFFile.isGGUF(path: from) {  // a GGUF file's tokenizer, as tokenizer.json
            if GGUFFile.hasTokenizer(path: from) {
                try GGUFFile(path: from).tokenizerJSON().write(to: tmp.appendingPathComponent("tokenizer.json"))
            }
        } else if let from = trainer.config.from {  // the checkpoint's own tokenizer files
            for name in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"] {
                let source = URL(fileURLWithPath: from).appendingPathComponent(name)
                if fm.fileExists(atPath: source.path) { try fm.copyItem(at: source, to: tmp.appendingPathComponent(name)) }
            }
        } else {
            try RandomCheckpoint.byteLevelTokenizerJSON(specials: ["<bos>", "<eos>", "<pad>"], bos: "<bos>")
                .write(to: tmp.appendingPathComponent("tokenizer.json"))
        }
    }

    /// After a run killed at any instant, puts the newest complete checkpoint under its usual
    /// name and removes what the kill left behind: with no `checkpoint`, the newest complete
    /// temporary folder (its trainer_state.json, written last, is there) or else
    /// `checkpoint.old` becomes `checkpoint`; then stale temporary folders and a leftover
    /// `checkpoint.old` go. (One run per folder at a time.)
    public static func recoverCheckpoint(in dir: URL) {
        let fm = FileManager.default
        let final = dir.appendingPathComponent("checkpoint"), old = dir.appendingPathComponent("checkpoint.old")
        let temporary = ((try? fm.contentsOfDirectory(atPath: dir.path)) ?? []).filter { $0.hasPrefix(".checkpoint-") }
            .map { dir.appendingPathComponent($0) }
        func step(_ folder: URL) -> Int? {
            let data = try? Data(contentsOf: folder.appendingPathComponent("trainer_state.json"))
            return (data.flatMap { try? JSONSerialization.jsonObject(with: $0) } as? [String: Any])?["step"] as? Int
        }
        if !fm.fileExists(atPath: final.path) {
            if let newest = temporary.compactMap({ f in step(f).map { (f, $0) } }).max(by: { $0.1 < $1.1 })?.0 {
                try? fm.moveItem(at: newest, to: final)
            } else if fm.fileExists(atPath: old.path) {
                try? fm.moveItem(at: old, to: final)
            }
        }
        for f in temporary where fm.fileExists(atPath: f.path) { try? fm.removeItem(at: f) }
        if fm.fileExists(atPath: final.path) { try? fm.removeItem(at: old) }
    }

    /// Loads the last checkpoint (recovering it first if a swap was interrupted).
    public func restore(from dir: URL) throws {
        let trainer = self
        let fm = FileManager.default
        Self.recoverCheckpoint(in: dir)
        var folder = dir.appendingPathComponent("checkpoint")
        if !fm.fileExists(atPath: folder.path) { folder = dir.appendingPathComponent("checkpoint.old") }
        guard fm.fileExists(atPath: folder.path) else {
            throw MoECoreError.io(path: dir.appendingPathComponent("checkpoint").path, reason: "no checkpoint to resume from")
        }
        let state = try JSONSerialization.jsonObject(with: Data(contentsOf: folder.appendingPathComponent("trainer_state.json"))) as? [String: Any]
        guard let step = state?["step"] as? Int, step >= 0 else {
            throw MoECoreError.invalidValue(path: folder.appendingPathComponent("trainer_state.json").path, field: "step",
                                            reason: "missing, or not a whole number >= 0")
        }
        let weights = trainer.model.lora == nil ? "model.safetensors" : "adapter_model.safetensors"
        let model = try SafetensorsFile(path: folder.appendingPathComponent(weights).path)
        let moments = try SafetensorsFile(path: folder.appendingPathComponent("optimizer.safetensors").path)
        try trainer.restore(step: step, tensor: { try model.tensor($0) },
                            moment: { name, which in moments.entries["\(name).\(which)"] == nil ? nil : try moments.tensor("\(name).\(which)") })
    }
}
