import MoECore

/// The two row orders of a Llama-family q or k projection: transformers' rotate-half (each
/// head's rows as two halves) and llama.cpp's interleaved pairs (its converter's `permute`).
/// GGUF files of the `llama` architecture store the second; adapters and trainers work in the
/// first.
public enum RopeRows {
    /// Halves to pairs: within each head, row j h/2 + i (half j, pair i) moves to 2 i + j, so
    /// rotating adjacent pairs equals transformers' rotate-half. A copy in the stored type.
    public static func interleaved(_ t: Tensor, heads: Int) -> Tensor { permuted(t, heads: heads, interleave: true) }

    /// Pairs back to halves: `interleaved` undone.
    public static func halves(_ t: Tensor, heads: Int) -> Tensor { permuted(t, heads: heads, interleave: false) }

    static func permuted(_ t: Tensor, heads: Int, interleave: Bool) -> Tensor {
        let rows = t.shape[0], cols = t.rank == 2 ? t.shape[1] : 1, hd = rows / max(1, heads), half = hd / 2
        let rowBytes = t.dtype.storageBytes(elements: cols)
        let out = Tensor(uninitialized: t.shape, dtype: t.dtype)
        for h in 0..<heads {
            for j in 0..<2 {
                for i in 0..<half {
                    let halves = h * hd + j * half + i, pairs = h * hd + 2 * i + j
                    let (from, to) = interleave ? (halves, pairs) : (pairs, halves)
                    (out.mutableRawPointer + to * rowBytes).copyMemory(from: t.rawPointer + from * rowBytes, byteCount: rowBytes)
                }
            }
        }
        return out
    }
}
