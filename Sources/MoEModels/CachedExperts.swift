import Foundation
import MoE
import MoECore

// Dimension legend: R routed rows (grouped by expert), d hidden size, E experts.

/// A layer's SwiGLU experts served through an `ExpertCache`: the experts a forward pass chooses
/// are taken from the cache (read from the file when absent) and run as `SwiGLUExperts` does;
/// the experts' own tensors (views of the mapped file) are never touched. When the chosen
/// experts do not fit in the cache at once, they run in groups that do. Equal to the resident
/// experts' output exactly: the same values go through the same arithmetic (bf16 weights the
/// cache holds packed included).
public struct CachedExperts: ExpertFFN {
    /// The experts as loaded (file-backed views: the source of every read).
    public let resident: SwiGLUExperts
    /// The layer index, the cache's key with the expert.
    public let layer: Int
    public let cache: ExpertCache

    public init(_ experts: SwiGLUExperts, layer: Int, cache: ExpertCache) {
        resident = experts
        self.layer = layer
        self.cache = cache
    }

    public var expertCount: Int { resident.expertCount }
    public var hiddenSize: Int { resident.hiddenSize }
    public func weightBytes(expert e: Int) -> Int { resident.weightBytes(expert: e) }

    public func forward(_ rows: Tensor, rowOffsets: [Int], pool: ThreadPool) -> Tensor {
        let chosen = (0..<expertCount).filter { rowOffsets[$0] < rowOffsets[$0 + 1] }
        // Groups of chosen experts whose weights fit in the cache together.
        var groups: [[Int]] = [[]]
        var bytes = 0
        for e in chosen {
            let b = cache.entryBytes([resident.gate[e], resident.up[e], resident.down[e]])
            if bytes + b > cache.capacity && !groups[groups.count - 1].isEmpty {
                groups.append([])
                bytes = 0
            }
            groups[groups.count - 1].append(e)
            bytes += b
        }
        if groups.count == 1 {
            // Misses overlapped with compute: the experts not in the cache are read while the
            // ones in it run (each row's output depends on its expert alone, so the split
            // changes no bit).
            let held = cache.held(layer: layer, experts: expertCount)
            let missing = chosen.filter { !held[$0] }
            if missing.isEmpty || missing.count == chosen.count {
                return run(chosen, subset: false, rows: rows, rowOffsets: rowOffsets, pool: pool)
            }
            groups = [chosen.filter { held[$0] }, missing]
        }
        // Several groups: each runs on a compact copy of its experts' rows.
        let d = hiddenSize, out = Tensor(zeros: [rows.shape[0], d])
        let src = rows.floats.baseAddress!, dst = out.mutableFloats.baseAddress!
        for (g, group) in groups.enumerated() {
            var offsets = [0]
            for e in group { offsets.append(offsets[offsets.count - 1] + rowOffsets[e + 1] - rowOffsets[e]) }
            let sub = Tensor(zeros: [offsets[offsets.count - 1], d])
            let sp = sub.mutableFloats.baseAddress!
            for (i, e) in group.enumerated() {
                let count: Int = (rowOffsets[e + 1] - rowOffsets[e]) * d
                let from: UnsafePointer<Float> = src + rowOffsets[e] * d
                (sp + offsets[i] * d).update(from: from, count: count)
            }
            // Once this group's experts are pinned, the next group's start reading.
            let next = g + 1 < groups.count ? groups[g + 1] : []
            let result = run(group, subset: true, rows: sub, rowOffsets: offsets, pool: pool) {
                for e in next {
                    cache.prefetch(layer: layer, expert: e, source: [resident.gate[e], resident.up[e], resident.down[e]],
                                   sparing: layer, demand: true)
                }
            }
            withExtendedLifetime(result) {
                let y = result.floats.baseAddress!
                for (i, e) in group.enumerated() {
                    let count: Int = (rowOffsets[e + 1] - rowOffsets[e]) * d
                    let from: UnsafePointer<Float> = y + offsets[i] * d
                    (dst + rowOffsets[e] * d).update(from: from, count: count)
                }
            }
        }
        return out
    }

    /// Runs `experts` (all pinned in the cache for the call) on `rows`: as the whole layer
    /// with those experts' weights swapped for the cache's copies, or with `subset` as a layer
    /// of just those experts (rows and offsets then compact, in `experts`' order); `pinned`
    /// runs once they are pinned, before they compute. NaN rows when the cache could not
    /// supply one (the failure is recorded in the cache).
    private func run(_ experts: [Int], subset: Bool, rows: Tensor, rowOffsets: [Int], pool: ThreadPool,
                     pinned: () -> Void = {}) -> Tensor {
        var gate = resident.gate, up = resident.up, down = resident.down
        // Every expert at once: the misses are read in parallel (the cache reads outside its lock).
        final class Slots: @unchecked Sendable {  // one slot per expert, each written by one iteration
            let weights: UnsafeMutableBufferPointer<ExpertCache.Weights?>
            init(_ n: Int) {
                weights = .allocate(capacity: n)
                weights.initialize(repeating: nil)
            }
            deinit {
                _ = weights.deinitialize()
                weights.deallocate()
            }
        }
        let slots = Slots(experts.count)
        let sources = experts.map { [gate[$0], up[$0], down[$0]] }
        let (cache, layer) = (self.cache, self.layer)
        let start = DispatchTime.now().uptimeNanoseconds
        DispatchQueue.concurrentPerform(iterations: experts.count) { i in
            slots.weights[i] = cache.acquire(layer: layer, expert: experts[i], source: sources[i])
        }
        cache.recordStall(seconds: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        defer { for (i, e) in experts.enumerated() where slots.weights[i] != nil { cache.release(layer: layer, expert: e) } }
        pinned()
        var packed = [[PackedBF16Matrix?]](repeating: [], count: expertCount)
        for (i, e) in experts.enumerated() {
            guard let w = slots.weights[i] else {
                return Tensor(shape: [rows.shape[0], hiddenSize], values: [Float](repeating: .nan, count: rows.shape[0] * hiddenSize))
            }
            (gate[e], up[e], down[e]) = (w.tensors[0], w.tensors[1], w.tensors[2])
            if w.packed.contains(where: { $0 != nil }) { packed[e] = w.packed }
        }
        var layerExperts: SwiGLUExperts
        if subset {
            layerExperts = SwiGLUExperts(gate: experts.map { gate[$0] }, up: experts.map { up[$0] }, down: experts.map { down[$0] })
            layerExperts.packed = experts.map { packed[$0] }
            layerExperts.biases = resident.biases.map { b in
                ExpertBiases(gate: experts.map { b.gate[$0] }, up: experts.map { b.up[$0] }, down: experts.map { b.down[$0] })
            }
        } else {
            layerExperts = SwiGLUExperts(gate: gate, up: up, down: down)
            layerExperts.packed = packed
            layerExperts.biases = resident.biases
        }
        layerExperts.activation = resident.activation
        return layerExperts.forward(rows, rowOffsets: rowOffsets, pool: pool)
    }

    /// Starts reading `experts` into the cache in the background (router lookahead: the
    /// experts this layer is predicted to choose, asked for while the layer before computes),
    /// evicting none of layer `sparing`'s (the layer before, whose experts are about to run).
    public func prefetch(_ experts: [Int], sparing: Int? = nil) {
        for e in experts where e >= 0 && e < expertCount {
            cache.prefetch(layer: layer, expert: e, source: [resident.gate[e], resident.up[e], resident.down[e]], sparing: sparing)
        }
    }
}
