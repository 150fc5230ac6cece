import ArgumentParser
import Foundation
import MoETrain

/// `moe upcycle`: a dense checkpoint into an MoE whose experts are copies of its FFN's slices.
struct Upcycle: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Sparse upcycling: turn a dense checkpoint (Llama, Mistral, Qwen2, Qwen3) into an MoE (Mixtral, Qwen3-MoE, or Qwen2-MoE with shared experts) whose experts are copies of slices of each FFN.",
        discussion: """
            The FFN is cut into --granularity slices; the first --shared-experts slices form a shared expert \
            (Qwen2-MoE layout) and the rest are copied round-robin into the --experts routed experts, each \
            scaled so that, with a zero router (--router-std 0), no --noise and a --top-k that is a multiple \
            of the routed slices, the MoE computes the dense model exactly. Train it further with `moe train --from`.
            """)

    @Option(help: "The dense checkpoint folder.") var model: String
    @Option(help: "Routed experts per layer (a multiple of the routed slices).") var experts: Int
    @Option(name: .customLong("top-k"), help: "Experts per token.") var topK: Int
    @Option(help: "Slices each FFN is cut into (fine-grained experts of 1/g of its size).") var granularity = 1
    @Option(name: .customLong("shared-experts"), help: "Slices that form an always-on shared expert (Qwen2-MoE layout).")
    var sharedExperts = 0
    @Option(name: .customLong("router-std"), help: "Std of the router's initial weights (0: zeros).") var routerStd: Float = 0.02
    @Option(help: "Std of noise added to each expert weight, relative to the weight's RMS.") var noise: Float = 0
    @Option(help: "Seed for the router and the noise.") var seed: UInt64 = 0
    @Option(help: "The new checkpoint folder (written whole, then renamed into place; must not exist).") var out: String

    func run() throws {
        var o = Upcycler.Options(experts: experts, topK: topK)
        (o.granularity, o.sharedExperts, o.routerStd, o.noise, o.seed) = (granularity, sharedExperts, routerStd, noise, seed)
        try Upcycler.upcycle(model: model, options: o, to: out)
        try printJSON(["out": out])
    }
}
