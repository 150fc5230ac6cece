import ArgumentParser
import Foundation
import MoECore
import MoEModels

/// How matmuls with bf16 weights treat their activations.
enum Precision: String, ExpressibleByArgument, CaseIterable {
    /// `bf16` for a GGUF file, `exact` for a checkpoint folder: each format's own runtime's
    /// arithmetic (llama.cpp rounds activations to the weight's type, as MoEKit already rounds
    /// them to 8-bit blocks for the quantized types; transformers' contract here is f32).
    case auto
    /// Activations kept in f32, widened bf16 weights, f32 accumulation.
    case exact
    /// Activations rounded to bf16 for the CPU's bf16 dot product (AVX512-BF16), accumulating
    /// in f32, as llama.cpp, PyTorch and oneDNN do for bf16 weights: twice the f32 FMA rate.
    case bf16

    /// The choice for the model at `path`, with `auto` resolved.
    func resolved(model path: String) -> Precision {
        self != .auto ? self : (GGUFFile.isGGUF(path: path) ? .bf16 : .exact)
    }
}

/// `--precision`: the arithmetic of products with bf16 weights.
struct PrecisionOption: ParsableArguments {
    @Option(help: """
        auto (the default: bf16 for a GGUF file, as llama.cpp computes it; exact for a checkpoint folder), \
        exact (f32 activations) or bf16 (activations rounded to bf16 for the CPU's bf16 dot product, where it has one).
        """)
    var precision = Precision.auto

    /// Sets the kernels' arithmetic for the model at `path`.
    func apply(model path: String) {
        Kernels.bf16Activations = precision.resolved(model: path) == .bf16
    }
}
