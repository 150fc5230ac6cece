import Foundation
import MoECore

/// Computes an importance matrix as llama-imatrix does: the model runs over calibration tokens
/// in chunks of `chunkSize` (each from an empty cache, its first token replaced by BOS when the
/// tokenizer adds one), and every product with a weight `blk.N.*` adds each input row's
/// squares to that weight's sums; a routed expert's products add to its own slice and count
/// only the tokens routed to it. Weights are told apart by their storage: the model is loaded
/// through `NamedWeights`, which notes every tensor it hands out under llama.cpp's name.
///
/// ```swift
/// let matrix = try ImportanceCollector.collect(path: "olmoe.bf16.gguf", tokens: ids, bos: 1, chunkSize: 512)
/// try matrix.write(to: "imatrix.gguf")
/// ```
public enum ImportanceCollector {
    /// Runs the model at `path` (a GGUF file or checkpoint folder) over `tokens`: at most
    /// `maxChunks` whole chunks; `includeOutput` also collects `output.weight` (llama-imatrix's
    /// `--process-output`). `progress(done, total)` after each chunk. Fewer tokens than one
    /// chunk is an error naming `dataset`.
    public static func collect(path: String, tokens: [Int], bos: Int?, chunkSize: Int = 512, maxChunks: Int? = nil,
                               includeOutput: Bool = false, dataset: String, pool: ThreadPool = .shared,
                               progress: ((Int, Int) -> Void)? = nil) throws(ModelError) -> ImportanceMatrix {
        precondition(chunkSize > 0, "ImportanceCollector: chunkSize must be positive")
        let chunks = min(tokens.count / chunkSize, maxChunks ?? Int.max)
        guard chunks >= 1 else {
            throw .invalidFile(path: dataset, field: "(text)", reason: "has \(tokens.count) tokens, fewer than one chunk of \(chunkSize)")
        }
        let (base, spec) = try DecoderModel.weightSource(path: path)
        let named = NamedWeights(base: base)
        let model = try DecoderModel(weights: named, spec: spec, pool: pool)
        let sums = Accumulator(names: named.table, experts: max(1, spec.experts), includeOutput: includeOutput)
        Kernels.linearObserver = { input, weight in sums.add(input: input, weight: weight) }
        defer { Kernels.linearObserver = nil }
        for c in 0..<chunks {
            var chunk = Array(tokens[(c * chunkSize)..<((c + 1) * chunkSize)])
            if let bos { chunk[0] = bos }
            var cache = model.makeCache(capacity: chunkSize)
            _ = try model.forward(chunk, cache: &cache)
            progress?(c + 1, chunks)
        }
        return ImportanceMatrix(entries: sums.entries(), datasets: [dataset], chunkCount: chunks, chunkSize: chunkSize)
    }

    /// Sums of squared inputs per weight, by llama.cpp's name (thread-safe).
    final class Accumulator: @unchecked Sendable {
        let names: [UnsafeRawPointer: NamedWeights.Name]
        let experts: Int, includeOutput: Bool
        let lock = NSLock()
        var sums: [String: [Double]] = [:], counts: [String: [Double]] = [:]

        init(names: [UnsafeRawPointer: NamedWeights.Name], experts: Int, includeOutput: Bool) {
            (self.names, self.experts, self.includeOutput) = (names, experts, includeOutput)
        }

        func add(input: Tensor, weight: Tensor) {
            guard let name = names[weight.rawPointer], name.gguf.hasPrefix("blk.") || (includeOutput && name.gguf == "output.weight"),
                  input.dtype == .f32 else { return }
            let (m, k) = (input.shape[0], input.shape[1]), slices = name.expert == nil ? 1 : experts
            let slice = name.expert ?? 0
            guard slice < slices else { return }
            lock.lock()
            defer { lock.unlock() }
            // Summed in place in the dictionary's storage: an expert tensor's sums are large, and a
            // copy out and back would double every call's work.
            if sums[name.gguf] == nil {
                sums[name.gguf] = [Double](repeating: 0, count: k * slices)
                counts[name.gguf] = [Double](repeating: 0, count: slices)
            }
            guard sums[name.gguf]?.count == k * slices else { return }  // one name used with two widths: keep the first
            let x = input.floats.baseAddress!  // safe: input has m * k > 0 floats
            sums[name.gguf]!.withUnsafeMutableBufferPointer { acc in  // safe: inserted just above
                let a = acc.baseAddress! + slice * k  // safe: slice < slices, so the row fits
                for r in 0..<m {
                    let row = x + r * k
                    for j in 0..<k { a[j] += Double(row[j] * row[j]) }
                }
            }
            counts[name.gguf]![slice] += Double(m)  // safe: inserted with the sums
        }

        func entries() -> [String: ImportanceMatrix.Entry] {
            lock.lock()
            defer { lock.unlock() }
            var out: [String: ImportanceMatrix.Entry] = [:]
            for (name, s) in sums { out[name] = .init(sums: s.map { Float($0) }, counts: (counts[name] ?? []).map { Float($0) }) }
            return out
        }
    }
}

/// A weight source that notes, for every tensor it hands out, llama.cpp's name for it (and
/// the expert it is a slice of) by the address of its storage: how a product's weight is
/// recognised whatever layer code runs it. Tensors llama.cpp has no name for are not noted.
final class NamedWeights: WeightSource, @unchecked Sendable {
    /// llama.cpp's tensor name, and the expert of a stacked MoE tensor.
    struct Name { var gguf: String, expert: Int? }

    let base: any WeightSource
    private(set) var table: [UnsafeRawPointer: Name] = [:]

    init(base: any WeightSource) { self.base = base }

    var configPath: String { base.configPath }
    var names: [String] { base.names }
    func has(_ name: String) -> Bool { base.has(name) }

    func tensor(_ name: String, shape: [Int]?) throws(ModelError) -> Tensor {
        let t = try base.tensor(name, shape: shape)
        if let mapped = GGUFWeights.ggufName(name) {
            table[t.rawPointer] = Name(gguf: mapped.name, expert: mapped.expert)
        } else if base is GGUFWeights, name.hasPrefix("blk.") || name == "output.weight" {
            table[t.rawPointer] = Name(gguf: name, expert: nil)
        }
        return t
    }
}
