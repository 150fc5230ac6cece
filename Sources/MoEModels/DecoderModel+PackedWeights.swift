import MoE
import MoECore

extension DecoderModel {
    /// The matrices that stay resident and that every token multiplies by: each layer's
    /// attention, dense FFN or shared experts, and the LM head (not the routed experts, nor
    /// the embedding, read a row a token).
    var residentMatrices: [Tensor] {
        var out: [Tensor] = []
        for layer in layers {
            out += layer.attention.matrices
            switch layer.ffn {
            case let .moe(moe): if let sh = moe.shared { out += [sh.gate, sh.up, sh.down] }
            case let .dense(g, u, d): out += [g, u, d]
            }
        }
        return out + [lmHead]
    }

    /// Packs the resident bf16 matrices (`residentMatrices`) that view a mapped file into
    /// lossless twins (`PackedBF16Matrix.attachTwin`), where the packed products are the faster
    /// (`PackedBF16Matrix.isFast`, AVX-512; elsewhere nothing changes): a token then reads
    /// about 78% of their bytes, the process holds only the twins, and logits do not change.
    /// Reads each matrix once. Returns the bytes saved: stored less packed.
    @discardableResult
    public func packResidentMatrices() -> Int {
        guard PackedBF16Matrix.isFast else { return 0 }
        var seen: [ObjectIdentifier: Set<Int>] = [:], saved = 0
        for w in residentMatrices where PackedBF16Matrix.canPack(w) && !w.storage.isWritable {
            guard seen[ObjectIdentifier(w.storage), default: []].insert(w.byteOffset).inserted else { continue }
            saved += w.byteCount - PackedBF16Matrix.attachTwin(to: w).byteCount
        }
        return saved
    }
}
