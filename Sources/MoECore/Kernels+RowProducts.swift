import _MoEKernels

// Dimension legend: K input features, N output features.

/// One activation row times one weight: `output[0..<N] = input[0..<K] W^T` for `weight` [N, K].
/// The pointers must stay valid for the call that takes the product.
public struct RowProduct {
    public let input: UnsafePointer<Float>
    public let weight: Tensor
    public let output: UnsafeMutablePointer<Float>

    public init(input: UnsafePointer<Float>, weight: Tensor, output: UnsafeMutablePointer<Float>) {
        self.input = input
        self.weight = weight
        self.output = output
    }
}

/// A weight matrix [rows, columns] as decode's one-row products read it: where its bytes are
/// and their format. Made once when the model is (a decoded token's products then read these
/// few words, not the tensor's objects, which the token's streamed weights have pushed out of
/// the caches). The bytes must outlive every product that reads them.
public struct MatrixBytes: @unchecked Sendable {
    public let base: UnsafeRawPointer, dtype: DType, rows: Int, columns: Int

    /// The bytes of `weight`, a matrix.
    public init(_ weight: Tensor) {
        precondition(weight.rank == 2, "MatrixBytes: \(weight.shape) is not a matrix")
        (base, dtype, rows, columns) = (weight.rawPointer, weight.dtype, weight.shape[0], weight.shape[1])
    }
}

extension Kernels {
    /// Whether `tokenProducts` takes `weight`: a block format this machine multiplies against
    /// 8-bit activations, with no calibration observer watching the products.
    public static func takesTokenProducts(_ weight: MatrixBytes) -> Bool {
        linearObserver == nil && activationBlock(for: weight.dtype, k: weight.columns) > 0
    }

    /// `outputs[j][0..<W_j.rows] = x W_j^T` for one activation row x of every weight's
    /// `columns`, in one streamed pass (x quantized once a block size): the bits `matmul` and
    /// `linearBatch` give that row. Every weight must be one `takesTokenProducts` takes.
    public static func tokenProducts(x: UnsafePointer<Float>, _ weights: [MatrixBytes], into outputs: [UnsafeMutablePointer<Float>],
                                     pool: ThreadPool) {
        precondition(weights.count == outputs.count, "tokenProducts: \(weights.count) weights, \(outputs.count) outputs")
        streamOneRowProducts(weights.indices.map { (x, weights[$0], outputs[$0]) }, pool: pool)
    }

    /// Block-format products of single activation rows in one streamed pass, each distinct
    /// input (by address and block) quantized once on the calling thread.
    static func streamOneRowProducts(_ products: [(input: UnsafePointer<Float>, weight: MatrixBytes, output: UnsafeMutablePointer<Float>)],
                                     pool: ThreadPool) {
        var inputs = QuantizedInputs()
        defer { inputs.deallocate() }
        var jobs: [QuantizedJob] = []
        jobs.reserveCapacity(products.count)
        for p in products {
            let w = p.weight, block = activationBlock(for: w.dtype, k: w.columns)
            precondition(block > 0, "rowProducts: weight [\(w.rows), \(w.columns)] of \(w.dtype) has no integer leaf here")
            let q = inputs.filledRow(p.input, k: w.columns, block: block)
            jobs.append(QuantizedJob(w: w.base, dtype: w.dtype, n: w.rows, k: w.columns, x: q, out: p.output, ldo: w.rows))
        }
        if jobs.isEmpty { return }
        streamQuantizedJobs(jobs, pool: pool)
    }

    /// Whether `rowProducts` takes `weight` on `pool`: a rank-2 block-format weight whose
    /// products this machine runs against 8-bit activations (`activationBlock`), or an f32,
    /// f16 or bf16 one on more than one thread (where `linearBatch` streams one-row jobs too),
    /// with no packed twin; and no calibration observer watching the products (it sees
    /// `linearBatch`'s).
    public static func takesRowProducts(_ weight: Tensor, pool: ThreadPool) -> Bool {
        guard linearObserver == nil && weight.rank == 2 else { return false }
        if weight.dtype.isElementFormat { return pool.threadCount > 1 && PackedBF16Matrix.twin(of: weight) == nil }
        return activationBlock(for: weight.dtype, k: weight.shape[1]) > 0
    }

    /// Decode's products of single activation rows, streamed over `pool` as `linearBatch`
    /// streams one-row jobs, so every output equals `linearBatch`'s for the same job bit for
    /// bit: block-format weights in one pass, each distinct input (by address and block)
    /// quantized once on the calling thread; f32, f16 and bf16 weights in a pass of their own.
    /// What this saves is the batch's bookkeeping: an MoE layer's token went to every expert as
    /// its own gathered row, quantized once an expert in a parallel pass of its own, with a few
    /// tensors made a job (on a Qwen3-MoE-shaped Q8_0 file, 33 parallel passes a token became
    /// 25, and the calling thread's time between them, while the others wait, fell from about
    /// 255 to 200 us a token). Every weight must be one `takesRowProducts` takes on `pool`.
    public static func rowProducts(_ products: [RowProduct], pool: ThreadPool) {
        for p in products { precondition(p.weight.rank == 2, "rowProducts: weight \(p.weight.shape) is not a matrix") }
        let elements = products.filter { $0.weight.dtype.isElementFormat }
        if !elements.isEmpty {
            precondition(pool.threadCount > 1, "rowProducts: element-format weights need more than one thread")
            streamGemvJobs(elements.map { p in
                let dtype = p.weight.dtype, n = p.weight.shape[0], k = p.weight.shape[1]
                return (p.input, p.weight.rawPointer, p.output, dtype.cValue, 1, k, n, k * dtype.byteSize, usesBF16Dot(dtype: dtype))
            }, pool: pool)
            if elements.count == products.count { return }
        }
        streamOneRowProducts(products.filter { !$0.weight.dtype.isElementFormat }.map { ($0.input, MatrixBytes($0.weight), $0.output) },
                             pool: pool)
    }
}
