import MoE
import MoECore

extension DecoderModel {
    /// Replaces each MoE layer's routed experts by `transform(layer, experts)`: the seam for
    /// running the experts somewhere else (sharded over ranks, behind a cache) while the rest of
    /// the model stays as loaded. The replacement must compute the same function of the same
    /// rows (same expert count and hidden size). Call before running the model.
    public func replaceRoutedExperts(_ transform: (_ layer: Int, _ experts: any ExpertFFN) throws -> any ExpertFFN) rethrows {
        for (i, layer) in layers.enumerated() {
            guard case var .moe(moe) = layer.ffn else { continue }
            let replaced = try transform(i, moe.experts)
            precondition(replaced.expertCount == moe.experts.expertCount && replaced.hiddenSize == moe.experts.hiddenSize,
                         "replaceRoutedExperts: layer \(i)'s replacement has \(replaced.expertCount) experts of width \(replaced.hiddenSize)")
            moe.experts = replaced
            layers[i] = Layer(inputNorm: layer.inputNorm, postNorm: layer.postNorm, attention: layer.attention, ffn: .moe(moe))
        }
    }
}
