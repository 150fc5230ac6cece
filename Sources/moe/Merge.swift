import ArgumentParser
import Foundation
import MoECore
import MoEModels

/// `moe merge`: folds PEFT LoRA adapters into a checkpoint folder's weights for good.
struct Merge: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Fold PEFT LoRA adapters into a checkpoint's weights (W + scale·B·A, as PEFT's merge_and_unload) and write a new checkpoint folder.")

    @Option(help: "The checkpoint folder to merge into.") var model: String
    @OptionGroup(title: "Adapters") var adapter: AdapterOptions
    @Option(help: "The new checkpoint folder (written whole, then renamed into place; must not exist).") var out: String
    @Option(help: "Threads to run on (default: the active cores).") var threads: Int?

    func validate() throws {
        if adapter.adapters.isEmpty { throw ValidationError("--adapter: give at least one adapter folder to merge") }
        try OptionLimits.check(threads: threads)
    }

    func run() throws {
        try LoRAMerge.merge(model: model, adapters: adapter.adapters, to: out,
                            pool: ThreadPool(threads: threads ?? ThreadPool.defaultThreadCount))
        try printJSON(["out": out, "adapters": adapter.adapters.joined(separator: ",")])
    }
}
