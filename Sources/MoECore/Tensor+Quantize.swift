import _MoEKernels

extension DType {
    /// Whether MoEKit writes this type from f32: the element formats, and the block formats
    /// with a quantizer (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, MXFP4, Q4_K, Q5_K, Q6_K).
    public var isQuantizable: Bool { isElementFormat || moek_can_quantize(cValue) != 0 }
}

extension Tensor {
    /// An owned copy stored as `dtype`: element formats round to nearest even; block formats
    /// are quantized row by row (rows are the last dimension) exactly as ggml's reference
    /// quantizers do, which is what llama-quantize writes without an importance matrix.
    /// Rows are split over the pool. Returns nil when a value is not finite and `dtype` is a
    /// block format (which cannot hold it) or when `dtype` cannot be written or does not divide the rows.
    ///
    /// With `importance` (an importance matrix's entry: a weight per column for each slice of
    /// `importance.rowsPerSlice` rows, an MoE tensor's experts), block formats are quantized as
    /// ggml's importance-weighted quantizers do (llama-quantize `--imatrix`); this tensor's row
    /// r is row `importance.firstRow + r` of the whole tensor the entry describes.
    public func quantized(to dtype: DType, importance: Importance? = nil, pool: ThreadPool = .shared) -> Tensor? {
        guard dtype.isQuantizable, let k = shape.last, k > 0, k % dtype.blockElements == 0 else { return nil }
        let rows = count / k
        if let importance, importance.values.count < ((importance.firstRow + rows - 1) / importance.rowsPerSlice + 1) * k {
            return nil
        }
        let out = Tensor(uninitialized: shape, dtype: dtype)
        let outRow = dtype.storageBytes(elements: k)
        let (src, srcType, srcRow) = (rawPointer, self.dtype, self.dtype.storageBytes(elements: k))
        let dst = out.mutableRawPointer
        let chunks = max(1, min(rows, pool.threadCount * 4))
        let bad = UnsafeMutablePointer<Int>.allocate(capacity: chunks)
        defer { bad.deallocate() }
        pool.parallelFor(chunks) { c in
            let r0 = rows * c / chunks, r1 = rows * (c + 1) / chunks
            var nonFinite = 0
            withScratchFloats(k) { x in
                for r in r0..<r1 {
                    moek_to_f32(src + r * srcRow, srcType.cValue, x, k)
                    if !dtype.isElementFormat && nonFinite == 0 && !UnsafeBufferPointer(start: x, count: k).allSatisfy(\.isFinite) { nonFinite = 1 }
                    if dtype.isElementFormat {
                        moek_from_f32(x, dtype.cValue, dst + r * outRow, k)
                    } else if let importance {
                        let slice = (importance.firstRow + r) / importance.rowsPerSlice
                        importance.values.withUnsafeBufferPointer { w in
                            _ = moek_quantize_row_weighted(x, dtype.cValue, dst + r * outRow, k, w.baseAddress! + slice * k)  // safe: count checked above
                        }
                    } else {
                        _ = moek_quantize(x, dtype.cValue, dst + r * outRow, k)
                    }
                }
            }
            bad[c] = nonFinite
        }
        return (0..<chunks).contains { bad[$0] != 0 } ? nil : out
    }
}

/// An importance matrix's weights for one tensor: for each slice of `rowsPerSlice` rows (an
/// MoE tensor's expert, or the whole matrix), one non-negative weight per column, in `values`
/// slice after slice; `firstRow` is where the rows being quantized start in the tensor.
public struct Importance: Sendable {
    public var values: [Float]
    public var rowsPerSlice: Int
    public var firstRow: Int

    public init(values: [Float], rowsPerSlice: Int, firstRow: Int = 0) {
        precondition(rowsPerSlice > 0, "Importance: rowsPerSlice must be positive")
        self.values = values
        self.rowsPerSlice = rowsPerSlice
        self.firstRow = firstRow
    }
}
