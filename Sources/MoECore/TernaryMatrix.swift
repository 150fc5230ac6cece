import _MoEKernels

// Dimension legend: M activation rows, K input features (a row's weights), N weight rows.

/// QMoE's dictionary (Frantar & Alistarh 2023): up to 65536 codewords, each a run of 2 to 56
/// ternary weights (an even number: pairs of them). Entry bits 0-27 mark the run's weights equal
/// to the row's hi, bits 28-55 those equal to its lo, bits 56-61 the run's length. The masks
/// cover a run's first 28 weights; the weights past them are 0. QMoE's runs stop at 28; the
/// zero tail lets one code also cover the gap to the next non-zero weight, which at 90% zeros
/// is often longer than what is left of 28. A model has one dictionary, shared by every coded
/// matrix. QMoE's has 65536 entries; a small model's may hold fewer (512 KiB of entries is more
/// than a few million weights' worth), and its codes then stay below the entry count
/// (`TernaryMatrix` checks).
public struct TernaryDictionary: @unchecked Sendable, Equatable {
    /// The most codewords a dictionary holds (16-bit codes).
    public static let maxSize = 1 << 16
    /// The longest run one codeword holds, in weights.
    public static let maxRun = 56
    /// The weights at the start of a run its masks cover; the rest of a longer run are 0.
    public static let maskedRun = 28

    /// The entries, 1 to `maxSize` of them.
    public let entries: [UInt64]
    /// A copy of the entries at a fixed address for the kernels, padded to `maxSize` with
    /// the pair (0, 0), so that no 16-bit code reads past it.
    let storage: TensorStorage
    var pointer: UnsafePointer<UInt64> { UnsafePointer(storage.base.assumingMemoryBound(to: UInt64.self)) }

    public static func == (a: TernaryDictionary, b: TernaryDictionary) -> Bool { a.storage === b.storage || a.entries == b.entries }

    /// Checks every entry: a length in 2...56 and even, masks within the run (and its first 28
    /// weights) and disjoint.
    public init(entries: [UInt64], path: String = "dictionary") throws(MoECoreError) {
        guard (1...Self.maxSize).contains(entries.count) else {
            throw .invalidValue(path: path, field: "dictionary", reason: "\(entries.count) entries, not 1 to \(Self.maxSize)")
        }
        for (i, e) in entries.enumerated() {
            let (pos, neg, len) = Self.fields(e)
            guard len >= 2, len <= Self.maxRun, len % 2 == 0, e >> 62 == 0, pos & neg == 0, (pos | neg) >> min(len, Self.maskedRun) == 0 else {
                throw .invalidValue(path: path, field: "dictionary[\(i)]",
                                    reason: "entry 0x\(String(e, radix: 16)) is not a run of 2...56 ternary weights")
            }
        }
        self.entries = entries
        storage = TernaryMatrix.copy(entries + [UInt64](repeating: Self.entry([0, 0]), count: Self.maxSize - entries.count))
    }

    /// An entry's positive mask, negative mask and run length.
    public static func fields(_ e: UInt64) -> (pos: UInt32, neg: UInt32, length: Int) {
        (UInt32(truncatingIfNeeded: e) & 0x0FFF_FFFF, UInt32(truncatingIfNeeded: e >> 28) & 0x0FFF_FFFF, Int((e >> 56) & 63))
    }

    /// The entry for a run of ternary values (-1, 0, 1), 2...56 of them, any past the 28th 0.
    public static func entry(_ run: ArraySlice<Int8>) -> UInt64 {
        precondition(run.count >= 2 && run.count <= maxRun && run.count % 2 == 0 && !run.dropFirst(maskedRun).contains { $0 != 0 },
                     "TernaryDictionary.entry: run of \(run.count)")
        var pos: UInt64 = 0, neg: UInt64 = 0
        for (j, t) in run.enumerated() {
            if t > 0 { pos |= 1 << UInt64(j) } else if t < 0 { neg |= 1 << UInt64(j) }
        }
        return pos | neg << 28 | UInt64(run.count) << 56
    }

    /// The run of ternary values an entry stands for.
    public static func run(_ e: UInt64) -> [Int8] {
        let (pos, neg, len) = fields(e)
        return (0..<len).map { j in Int8((pos >> j) & 1) - Int8((neg >> j) & 1) }
    }
}

/// A weight matrix [N, K] in QMoE's coded ternary format: each row's weights are lo, 0 or hi
/// (its own two f16 scales), stored as a stream of 16-bit codes into a shared
/// `TernaryDictionary`, with each row's first code at `offsets[row]` so rows decode in
/// parallel. Products decode the codes in registers (`Kernels.ternaryLinear`); no dense copy is
/// made. Storage: 2 bytes per code, 4 per row offset, 4 per row's scales.
public struct TernaryMatrix: @unchecked Sendable {
    /// N and K.
    public let rows: Int, cols: Int
    /// Codes, row offsets (N + 1) and scales (N pairs of f16 lo, hi), in memory they own or in a
    /// mapped file.
    let codes: UnsafePointer<UInt16>
    /// Codes over every row.
    public let codeCount: Int
    let offsets: UnsafePointer<UInt32>
    let scales: UnsafePointer<UInt16>
    /// Keeps the memory behind the pointers alive.
    let owners: [TensorStorage]
    /// The dictionary the codes index.
    public let dictionary: TernaryDictionary

    /// A matrix over codes, offsets and scales that `owners` hold (zero-copy views of a file,
    /// or owned memory), checked so that no product can read out of bounds: offsets start at
    /// 0, never decrease and end at the code count, and every row's runs add up to exactly K.
    public init(rows: Int, cols: Int, codes: UnsafePointer<UInt16>, codeCount: Int, offsets: UnsafePointer<UInt32>,
                scales: UnsafePointer<UInt16>, owners: [TensorStorage], dictionary: TernaryDictionary,
                path: String = "matrix") throws(MoECoreError) {
        guard rows > 0, cols > 0, cols <= Int(Int32.max) else {
            throw .invalidValue(path: path, field: "shape", reason: "[\(rows), \(cols)] is not a matrix")
        }
        guard offsets[0] == 0, Int(offsets[rows]) == codeCount else {
            throw .invalidValue(path: path, field: "offsets", reason: "must run from 0 to the \(codeCount) codes; they run from \(offsets[0]) to \(offsets[rows])")
        }
        let entries = dictionary.entries
        for r in 0..<rows {
            guard offsets[r] <= offsets[r + 1] else {
                throw .invalidValue(path: path, field: "offsets[\(r + 1)]", reason: "\(offsets[r + 1]) is less than the row before's \(offsets[r])")
            }
            var length = 0, largest: UInt16 = 0
            for c in Int(offsets[r])..<Int(offsets[r + 1]) {
                largest = max(largest, codes[c])
                length += Int((dictionary.pointer[Int(codes[c])] >> 56) & 63)
            }
            guard Int(largest) < entries.count else {
                throw .invalidValue(path: path, field: "codes of row \(r)", reason: "code \(largest) is past the dictionary's \(entries.count) entries")
            }
            guard length == cols else {
                throw .invalidValue(path: path, field: "codes of row \(r)", reason: "decode to \(length) weights, not \(cols)")
            }
        }
        self.rows = rows
        self.cols = cols
        self.codes = codes
        self.codeCount = codeCount
        self.offsets = offsets
        self.scales = scales
        self.owners = owners
        self.dictionary = dictionary
    }

    /// A matrix over codes and scales that `owners` hold, with each row's first code found by
    /// walking the codes: a row ends where its runs add up to exactly K (a file need not store
    /// the offsets; they are built here, 4 bytes a row). A run that crosses a row's end, codes
    /// that end before the last row or run past it, or a code past the dictionary: an error.
    public init(rows: Int, cols: Int, codes: UnsafePointer<UInt16>, codeCount: Int, scales: UnsafePointer<UInt16>,
                owners: [TensorStorage], dictionary: TernaryDictionary, path: String = "matrix") throws(MoECoreError) {
        guard rows > 0, cols > 0, cols <= Int(Int32.max), codeCount <= Int(UInt32.max) else {
            throw .invalidValue(path: path, field: "shape", reason: "[\(rows), \(cols)] with \(codeCount) codes is not a coded matrix")
        }
        var offsets = [UInt32](repeating: 0, count: rows + 1)
        var c = 0
        for r in 0..<rows {
            var length = 0
            while length < cols {
                guard c < codeCount else {
                    throw .invalidValue(path: path, field: "codes of row \(r)", reason: "end after \(length) of its \(cols) weights")
                }
                guard Int(codes[c]) < dictionary.entries.count else {
                    throw .invalidValue(path: path, field: "codes of row \(r)", reason: "code \(codes[c]) is past the dictionary's \(dictionary.entries.count) entries")
                }
                length += Int((dictionary.pointer[Int(codes[c])] >> 56) & 63)
                c += 1
            }
            guard length == cols else {
                throw .invalidValue(path: path, field: "codes of row \(r)", reason: "a run crosses the row's end (\(length) weights, not \(cols))")
            }
            offsets[r + 1] = UInt32(c)
        }
        guard c == codeCount else {
            throw .invalidValue(path: path, field: "codes", reason: "\(codeCount - c) codes past the last row")
        }
        // The walk has made every check of the initializer with offsets (offsets from 0 to the code
        // count, rising, every row exactly K, every code in the dictionary): no second walk.
        let o = Self.copy(offsets)
        self.rows = rows
        self.cols = cols
        self.codes = codes
        self.codeCount = codeCount
        self.offsets = UnsafePointer(o.base.assumingMemoryBound(to: UInt32.self))
        self.scales = scales
        self.owners = owners + [o]
        self.dictionary = dictionary
    }

    /// A matrix that owns copies of `codes`, `offsets` (N + 1) and `scales` (N pairs of f16 bits).
    public init(rows: Int, cols: Int, codes: [UInt16], offsets: [UInt32], scales: [UInt16],
                dictionary: TernaryDictionary) throws(MoECoreError) {
        guard offsets.count == rows + 1, scales.count == 2 * rows else {
            throw .invalidValue(path: nil, field: "offsets", reason: "\(offsets.count) offsets and \(scales.count) scales for \(rows) rows")
        }
        let c = Self.copy(codes), o = Self.copy(offsets), s = Self.copy(scales)
        try self.init(rows: rows, cols: cols, codes: UnsafePointer(c.base.assumingMemoryBound(to: UInt16.self)), codeCount: codes.count,
                      offsets: UnsafePointer(o.base.assumingMemoryBound(to: UInt32.self)),
                      scales: UnsafePointer(s.base.assumingMemoryBound(to: UInt16.self)), owners: [c, o, s], dictionary: dictionary)
    }

    static func copy<T>(_ values: [T]) -> TensorStorage {
        let storage = TensorStorage(byteCount: max(1, values.count * MemoryLayout<T>.stride))
        values.withUnsafeBytes { storage.base.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
        return storage
    }

    /// Bytes the matrix's codes, offsets and scales take in memory (the dictionary is shared,
    /// not counted); a file holds all but the offsets.
    public var byteCount: Int { codeCount * 2 + (rows + 1) * 4 + rows * 4 }

    /// The codes, offsets and scales as arrays (for writing them to a file).
    public var parts: (codes: [UInt16], offsets: [UInt32], scales: [UInt16]) {
        (Array(UnsafeBufferPointer(start: codes, count: codeCount)), Array(UnsafeBufferPointer(start: offsets, count: rows + 1)),
         Array(UnsafeBufferPointer(start: scales, count: 2 * rows)))
    }

    /// f32 values as f16 bits (round to nearest even), as the scales are stored.
    public static func f16Bits(_ values: [Float]) -> [UInt16] {
        var out = [UInt16](repeating: 0, count: values.count)
        out.withUnsafeMutableBytes { o in values.withUnsafeBufferPointer { moek_from_f32($0.baseAddress, DType.f16.cValue, o.baseAddress, values.count) } }
        return out
    }

    /// f16 bits as f32 values.
    public static func f16Values(_ bits: [UInt16]) -> [Float] {
        var out = [Float](repeating: 0, count: bits.count)
        out.withUnsafeMutableBufferPointer { o in bits.withUnsafeBytes { moek_to_f32($0.baseAddress, DType.f16.cValue, o.baseAddress, bits.count) } }
        return out
    }

    /// Row r's lo and hi.
    public func scales(row r: Int) -> (lo: Float, hi: Float) {
        var v: (Float, Float) = (0, 0)
        withUnsafeMutableBytes(of: &v) { moek_to_f32(scales + 2 * r, DType.f16.cValue, $0.baseAddress!.assumingMemoryBound(to: Float.self), 2) }
        return (v.0, v.1)
    }

    /// The ternary values (-1, 0, 1 for lo, 0, hi) of rows [r0, r1), row-major.
    public func ternary(rows range: Range<Int>) -> [Int8] {
        var t = [Int8](repeating: 0, count: range.count * cols)
        t.withUnsafeMutableBufferPointer { p in
            moek_ternary_decode_rows(codes, offsets, dictionary.pointer, p.baseAddress, cols, range.lowerBound, range.upperBound)
        }
        return t
    }

    /// The matrix widened to f32 [N, K] (for tests and for training on a coded base; products
    /// never need it).
    public func dequantized() -> Tensor {
        let out = Tensor(uninitialized: [rows, cols])
        moek_ternary_dequantize_rows(codes, offsets, scales, dictionary.pointer, out.mutableFloats.baseAddress!, cols, 0, rows, cols)
        return out
    }
}

extension Kernels {
    /// `out = x W^T` for a coded ternary W: x [M, K] f32, out [M, N]. Weight rows are split over
    /// the pool; each piece runs every activation row against its codes.
    public static func ternaryLinear(_ x: Tensor, _ w: TernaryMatrix, into out: Tensor, pool: ThreadPool) {
        precondition(x.rank == 2 && x.dtype == .f32 && x.shape[1] == w.cols && out.shape == [x.shape[0], w.rows],
                     "ternaryLinear: x \(x.shape), W [\(w.rows), \(w.cols)], out \(out.shape)")
        ternaryLinearBatch([TernaryJob(input: x, weight: w, output: out)], pool: pool)
    }

    /// One product of `ternaryLinearBatch`: out = input W^T.
    public struct TernaryJob {
        public let input: Tensor, weight: TernaryMatrix, output: Tensor
        public init(input: Tensor, weight: TernaryMatrix, output: Tensor) {
            precondition(input.rank == 2 && input.dtype == .f32 && input.shape[1] == weight.cols && output.shape == [input.shape[0], weight.rows],
                         "TernaryJob: x \(input.shape), W [\(weight.rows), \(weight.cols)], out \(output.shape)")
            self.input = input
            self.weight = weight
            self.output = output
        }
    }

    /// Several products in one parallel pass (an MoE layer's experts): runs of about a
    /// thread's share of weight rows, at least 16, go to the pool together, so small experts
    /// share one barrier.
    public static func ternaryLinearBatch(_ jobs: [TernaryJob], pool: ThreadPool) {
        // Many activation rows (prefill): tiles of weight rows widened once, then the f32 GEMM.
        let wide = jobs.filter { $0.input.shape[0] >= ternaryTileMinRows }
        if !wide.isEmpty { ternaryTiledBatch(wide, pool: pool) }
        let live = jobs.filter { $0.input.shape[0] > 0 && $0.input.shape[0] < ternaryTileMinRows }
        let totalRows = live.reduce(0) { $0 + $1.weight.rows }
        if totalRows == 0 { return }
        let share = max(16, totalRows / max(1, 4 * pool.threadCount))
        var pieces: [(job: Int, r0: Int, r1: Int)] = []
        for (i, job) in live.enumerated() {
            for r0 in stride(from: 0, to: job.weight.rows, by: share) { pieces.append((i, r0, min(job.weight.rows, r0 + share))) }
        }
        pool.parallelFor(pieces.count) { p in
            let (i, r0, r1) = pieces[p]
            let job = live[i], w = job.weight
            moek_ternary_gemv_rows(w.codes, w.offsets, w.scales, w.dictionary.pointer, job.input.floats.baseAddress!, w.cols,
                                   Int32(job.input.shape[0]), job.output.mutableFloats.baseAddress!, w.rows, r0, r1, w.cols)
        }
    }

    /// Activation rows from which a product widens tiles of weight rows and runs the f32 GEMM
    /// rather than summing under each row's bit streams per activation row.
    static let ternaryTileMinRows = 8
    /// Weight rows widened at a time: 64 rows of K f32 values, in a buffer of the task's own.
    static let ternaryTileRows = 64

    /// The prefill products: each task widens a tile of `ternaryTileRows` weight rows into its
    /// own f32 buffer (the tile, never the matrix) and multiplies every activation row by it
    /// with the GEMM, single-threaded inside the task.
    static func ternaryTiledBatch(_ jobs: [TernaryJob], pool: ThreadPool) {
        var pieces: [(job: Int, r0: Int, r1: Int)] = []
        for (i, job) in jobs.enumerated() {
            for r0 in stride(from: 0, to: job.weight.rows, by: ternaryTileRows) {
                pieces.append((i, r0, min(job.weight.rows, r0 + ternaryTileRows)))
            }
        }
        pool.parallelFor(pieces.count) { p in
            let (i, r0, r1) = pieces[p]
            let job = jobs[i], w = job.weight, k = w.cols
            let tile = Tensor(uninitialized: [r1 - r0, k])
            moek_ternary_dequantize_rows(w.codes, w.offsets, w.scales, w.dictionary.pointer, tile.mutableFloats.baseAddress!, k, r0, r1, k)
            linear(x: job.input.floats.baseAddress!, ldx: k, rows: job.input.shape[0], w: tile.rawPointer, dtype: .f32, n: r1 - r0, k: k,
                   out: job.output.mutableFloats.baseAddress! + r0, ldo: w.rows, pool: pool)  // inline: the pool is busy
        }
    }

    /// `x W^T` for a coded ternary W, in a new tensor.
    public static func ternaryLinear(_ x: Tensor, _ w: TernaryMatrix, pool: ThreadPool) -> Tensor {
        let out = Tensor(uninitialized: [x.shape[0], w.rows])
        ternaryLinear(x, w, into: out, pool: pool)
        return out
    }
}
