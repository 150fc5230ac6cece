import Foundation
import MoECore

/// Folds PEFT LoRA adapters into a checkpoint's weights for good (`moe merge`), as PEFT's
/// `merge_and_unload` does: each adapted weight becomes `W + Σ scale · B A`, computed in f32
/// and stored back in the weight's own dtype; every other tensor is copied as it is. The result
/// is a checkpoint folder (one `model.safetensors`, config and tokenizer files copied), written
/// tensor by tensor and renamed into place whole.
public enum LoRAMerge {
    /// Writes `model` (a checkpoint folder) with `adapters` folded in to the new folder `out`.
    public static func merge(model: String, adapters: [String], to out: String, pool: ThreadPool = .shared) throws(ModelError) {
        guard !GGUFFile.isGGUF(path: model) else {
            throw .invalidConfig(path: model, field: "--model", reason: "merging writes a checkpoint folder from one; a GGUF file takes --adapter at run time")
        }
        let ck = try Checkpoint(directory: model)
        let spec = try Architectures.spec(configAt: ck.configPath)
        var folders: [LoRAAdapterFolder] = []
        for a in adapters { folders.append(try LoRAAdapterFolder(path: a)) }
        if let mixed = folders.first(where: { !$0.mixtures.isEmpty }) {
            throw .invalidFile(path: (mixed.path as NSString).appendingPathComponent("adapter_config.json"), field: "peft_type",
                               reason: "is MIXLORA: a mixture of LoRA experts has a router, so it cannot fold into the weights; run it with --adapter")
        }
        // Every adapted module must be in the checkpoint before anything is written.
        try AdaptedWeights.check(folders) { ck.has($0 + ".weight") }
        let weights = try AdaptedWeights(base: ck, spec: spec, adapters: folders, pool: pool)
        var entries: [SafetensorsWriter.Entry] = []
        for name in ck.names {
            let base = try ck.tensor(name)
            guard [.f32, .f16, .bf16].contains(base.dtype) else {
                throw .unsupportedDType(path: ck.directory, name: name, dtype: "\(base.dtype) (merging writes f32, f16 and bf16 checkpoints)")
            }
            entries.append(.init(name: name, shape: base.shape, dtype: base.dtype) { () throws(ModelError) in
                let t = try weights.tensor(name)
                return t.dtype == base.dtype ? t : Tensor(shape: t.shape, values: t.toFloats(), dtype: base.dtype)
            })
        }
        try CheckpointFolderWriter.write(out: out, copyingFrom: ck.directory) { (temporary: String) throws(ModelError) in
            try SafetensorsWriter.write(entries: entries, metadata: ["format": "pt"], to: (temporary as NSString).appendingPathComponent("model.safetensors"))
            do {
                try FileManager.default.copyItem(atPath: ck.configPath, toPath: (temporary as NSString).appendingPathComponent("config.json"))
            } catch {
                throw .io(path: ck.configPath, reason: "cannot copy: \(systemReason(error))")
            }
        }
    }
}
