import MoE

/// The routing statistics the MoE layers' auxiliary losses take over a whole batch, when the
/// batch runs as shards on model replicas at once (`TrainingConfig.dataParallel`). Each shard's
/// layer adds its part in the forward pass (`Shard.record`); `merge` then sums the parts, in
/// shard order, and gives the losses' value; each shard's backward takes the balance losses'
/// gradients from the whole batch's counts and token count (`global`). So the step is that of
/// one batch, up to the order of floating-point sums.
public final class MoEBatchStatistics: @unchecked Sendable {
    /// One shard's part of one layer.
    struct Part {
        /// Tokens per router logit (T f_i of the load-balance loss), as `balanceCounts` gives.
        var counts: [Float]
        /// Per logit, the sum over the shard's tokens of the balance probabilities.
        var probSums: [Double]
        var entropySum: Double, zSum: Double
        var tokens: Int, assignments: Int
    }

    /// The batch's figures for one layer, once merged.
    struct Global {
        var counts: [Float], tokens: Int, meanK: Double
    }

    private let layers: Int, shards: Int
    // [layer * shards + shard]: one slot per writer, so shards record at once without a lock
    // (a nested Swift array would be one value that both threads modify).
    private let parts: UnsafeMutableBufferPointer<Part?>
    private(set) var global: [Global?]

    /// Room for `layers` MoE layers of `shards` shards.
    public init(layers: Int, shards: Int) {
        (self.layers, self.shards) = (layers, shards)
        parts = .allocate(capacity: layers * shards)
        parts.initialize(repeating: nil)
        global = Array(repeating: nil, count: layers)
    }

    deinit {
        _ = parts.deinitialize()
        parts.deallocate()
    }

    /// What one shard's forward pass hands its MoE layers: where each records its part.
    public struct Shard: @unchecked Sendable {
        let statistics: MoEBatchStatistics, index: Int

        /// Records layer `layer`'s part (each layer of each shard once, before `merge`).
        func record(layer: Int, _ part: Part) { statistics.parts[layer * statistics.shards + index] = part }

        /// Layer `layer`'s batch figures (after `merge`).
        func global(layer: Int) -> Global {
            guard let g = statistics.global[layer] else { preconditionFailure("MoEBatchStatistics: backward before merge") }
            return g
        }
    }

    /// Shard `index`'s handle.
    public func shard(_ index: Int) -> Shard { Shard(statistics: self, index: index) }

    /// Sums every layer's parts over the shards (in shard order) and returns the auxiliary
    /// losses' weighted value, summed over the layers, as one batch would give it.
    public func merge(_ aux: AuxLossCoefficients) -> Float {
        var total: Float = 0
        for layer in 0..<layers {
            let shards = parts[(layer * self.shards)..<((layer + 1) * self.shards)].compactMap { $0 }
            guard let first = shards.first else { continue }
            precondition(shards.count == self.shards, "MoEBatchStatistics: a shard did not record layer \(layer)")
            var counts = [Float](repeating: 0, count: first.counts.count), sums = [Double](repeating: 0, count: first.counts.count)
            var entropy = 0.0, z = 0.0, tokens = 0, assignments = 0
            for part in shards {
                for i in counts.indices {
                    counts[i] += part.counts[i]
                    sums[i] += part.probSums[i]
                }
                entropy += part.entropySum
                z += part.zSum
                tokens += part.tokens
                assignments += part.assignments
            }
            let meanK = Double(assignments) / Double(max(1, tokens))
            global[layer] = Global(counts: counts, tokens: tokens, meanK: meanK)
            guard tokens > 0 else { continue }
            let t = Double(tokens), p = sums.map { $0 / t }, intCounts = counts.map { Int($0.rounded()) }
            total += aux.loadBalance * AuxLoss.loadBalance(meanProbs: p, fractions: counts.map { Double($0) / t })
            total += aux.zLoss * Float(z / t) + aux.entropy * Float(entropy / t)
            if aux.expertBalance != 0 {
                total += aux.expertBalance * AuxLoss.expertBalance(meanProbs: p, tokens: tokens, counts: intCounts, k: meanK)
            }
            if aux.deviceBalance != 0 {
                total += aux.deviceBalance * AuxLoss.deviceBalance(meanProbs: p, tokens: tokens, counts: intCounts, k: meanK,
                                                                   devices: aux.devices)
            }
        }
        return total
    }
}
