import ArgumentParser
import Foundation
import MoECore
import MoEModels

/// `--adapter DIR` (repeatable): PEFT LoRA adapter folders folded into the model's weights as it
/// loads, in the order given (`DecoderModel(path:adapters:pool:)`).
struct AdapterOptions: ParsableArguments {
    @Option(name: .customLong("adapter"), parsing: .singleValue,
            help: "A PEFT LoRA adapter folder (adapter_config.json, adapter_model.safetensors) applied to the model; repeatable, applied in order.")
    var adapters: [String] = []

    func validate() throws {
        for a in adapters {
            var isDirectory: ObjCBool = false
            guard FileManager.default.fileExists(atPath: a, isDirectory: &isDirectory), isDirectory.boolValue else {
                throw ValidationError("--adapter: '\(a)' is not a folder")
            }
        }
    }

    /// The model at `path` with the adapters applied.
    func load(_ path: String, pool: ThreadPool) throws -> DecoderModel {
        try DecoderModel(path: path, adapters: adapters, pool: pool)
    }
}
