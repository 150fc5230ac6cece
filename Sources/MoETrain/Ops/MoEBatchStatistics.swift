import MoE
import MoEDistributed

/// The routing statistics the MoE layers' auxiliary losses take over a whole batch, when the
/// batch runs as shards on model replicas at once (`TrainingConfig.dataParallel`). Each shard's
/// layer adds its part in the forward pass (`Shard.record`); `merge` then sums the parts, in
/// shard order, and gives the losses' value; each shard's backward takes the balance losses'
/// gradients from the whole batch's counts and token count (`global`). So the step is that of
/// one batch, up to the order of floating-point sums.
public final class MoEBatchStatistics: @unchecked Sendable {
    /// What one MoE layer's auxiliary losses need from a set of tokens: one shard's part, the
    /// whole batch's once merged, or (no shards) the layer's own, whose `value` the layer reports.
    struct Part {
        /// Tokens per router logit (T f_i of the load-balance loss), as `balanceCounts` gives.
        var counts: [Float]
        /// Per logit, the sum over the tokens of the balance probabilities.
        var probSums: [Double]
        var entropySum: Double, zSum: Double
        var tokens: Int, assignments: Int

        /// Experts per token: k, or top-p's mean.
        var meanK: Double { Double(assignments) / Double(max(1, tokens)) }

        /// The auxiliary losses over these tokens, weighted by `aux` and summed.
        func value(_ aux: AuxLossCoefficients) -> Float {
            guard tokens > 0 else { return 0 }
            let t = Double(tokens), p = probSums.map { $0 / t }, intCounts = counts.map { Int($0.rounded()) }
            let balance = AuxLoss.loadBalance(meanProbs: p, fractions: counts.map { Double($0) / t })
            let zLoss = aux.zLoss == 0 ? 0 : Float(zSum / t)
            let expertBalance = aux.expertBalance == 0 ? 0 : AuxLoss.expertBalance(meanProbs: p, tokens: tokens, counts: intCounts, k: meanK)
            let deviceBalance = aux.deviceBalance == 0 ? 0
                : AuxLoss.deviceBalance(meanProbs: p, tokens: tokens, counts: intCounts, k: meanK, devices: aux.devices)
            let entropy = aux.entropy == 0 ? 0 : Float(entropySum / t)
            return aux.loadBalance * balance + aux.zLoss * zLoss + aux.expertBalance * expertBalance
                + aux.deviceBalance * deviceBalance + aux.entropy * entropy
        }
    }

    private let layers: Int, shards: Int
    // [layer * shards + shard]: one slot per writer, so shards record at once without a lock
    // (a nested Swift array would be one value that both threads modify).
    private let parts: UnsafeMutableBufferPointer<Part?>
    private(set) var global: [Part?]  // per layer, once merged

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

        /// Layer `layer`'s whole-batch statistics (after `merge`).
        func global(layer: Int) -> Part {
            guard let g = statistics.global[layer] else { preconditionFailure("MoEBatchStatistics: backward before merge") }
            return g
        }
    }

    /// Shard `index`'s handle.
    public func shard(_ index: Int) -> Shard { Shard(statistics: self, index: index) }

    /// Shards on ranks: this rank recorded shard `shard` (its rank); afterwards every rank
    /// holds every shard's parts (one `allGather`, each value's f64 bits as an Int64), so
    /// `merge` gives each rank the same whole-batch statistics.
    public func exchange(over group: any Communicator, shard: Int) {
        precondition(group.size == shards && group.rank == shard, "MoEBatchStatistics: \(shards) shards on \(group.size) ranks")
        let width = (0..<layers).compactMap { parts[$0 * shards + shard]?.counts.count }.max() ?? 0
        // Per layer: a present flag, tokens, assignments, entropy, z, then width counts and sums.
        var mine: [Double] = []
        for layer in 0..<layers {
            guard let part = parts[layer * shards + shard] else {
                mine += [Double](repeating: 0, count: 5 + 2 * width)
                continue
            }
            precondition(part.counts.count == width, "MoEBatchStatistics: layers with different logit counts")
            mine += [1, Double(part.tokens), Double(part.assignments), part.entropySum, part.zSum]
            mine += part.counts.map(Double.init) + part.probSums
        }
        let all = group.allGather(mine.map { Int64(bitPattern: $0.bitPattern) }).map { Double(bitPattern: UInt64(bitPattern: $0)) }
        let stride = layers * (5 + 2 * width)
        for r in 0..<shards where r != shard {
            for layer in 0..<layers {
                let o = r * stride + layer * (5 + 2 * width)
                guard all[o] == 1 else { continue }
                parts[layer * shards + r] = Part(counts: all[(o + 5)..<(o + 5 + width)].map(Float.init),
                                                 probSums: Array(all[(o + 5 + width)..<(o + 5 + 2 * width)]),
                                                 entropySum: all[o + 3], zSum: all[o + 4], tokens: Int(all[o + 1]), assignments: Int(all[o + 2]))
            }
        }
    }

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
            let batch = Part(counts: counts, probSums: sums, entropySum: entropy, zSum: z, tokens: tokens, assignments: assignments)
            global[layer] = batch
            total += batch.value(aux)
        }
        return total
    }
}
