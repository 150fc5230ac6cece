import MoE
import MoECore
import MoEDistributed

extension Trainer {
    /// Trains on `ranks` from the next step on (sets `communicator`), after checking that the
    /// config fits them: `data_parallel`, a batch they divide, and with `expert_parallel` P > 1,
    /// P ranks, plain SwiGLU experts and at least P experts in every MoE layer. Errors name
    /// `configPath`, the file the config came from.
    public func join(_ ranks: any Communicator, configPath: String? = nil) throws(MoEError) {
        func bad(_ field: String, _ reason: String) -> MoEError { .invalidConfig(path: configPath, field: field, reason: reason) }
        guard config.dataParallel else { throw bad("data_parallel", "\(ranks.size) ranks train data parallel: set data_parallel to true") }
        guard config.batch % ranks.size == 0 else { throw bad("batch", "\(config.batch) sequences do not divide among \(ranks.size) ranks") }
        if config.expertParallel > 1 {
            guard config.expertParallel == ranks.size else {
                throw bad("expert_parallel", "\(config.expertParallel) differs from the \(ranks.size) ranks of this job")
            }
            for (i, layer) in model.layers.enumerated() {
                guard let moe = layer.moe else { continue }
                guard moe.plainSwiGLU else { throw bad("expert_parallel", "layer \(i)'s experts have biases or another activation") }
                guard moe.gate.count >= ranks.size else {
                    throw bad("expert_parallel", "layer \(i) has \(moe.gate.count) experts, fewer than the \(ranks.size) ranks")
                }
            }
        }
        communicator = ranks
        if config.expertParallel > 1 { releaseOtherExperts() }
    }

    /// Under expert parallelism, on every rank: lets go of the other ranks' experts (weights
    /// and AdamW moments), which it never reads: evaluations run the experts where they are
    /// (`evaluate`), and checkpoints fetch them one tensor at a time (`save`). Each keeps a
    /// placeholder of its shape whose memory is never touched, so it is not resident.
    private func releaseOtherExperts() {
        guard let group = communicator else { return }
        for layer in model.layers {
            guard let moe = layer.moe, let shard = ExpertShard(experts: moe.gate.count, ranks: group.size) else { continue }
            let mine = shard.experts(of: group.rank)
            for kind in [moe.gate, moe.up, moe.down] {
                for (e, v) in kind.enumerated() where !mine.contains(e) {
                    v.value = Tensor(uninitialized: v.value.shape, dtype: v.value.dtype)
                    v.grad = nil
                    optimizer.forget(v)
                }
            }
        }
    }

    /// `computeGradients` on ranks (`communicator`): `data_parallel` with the ranks as its
    /// shards. Every rank draws the same batch and runs shard `rank` of it on its own model
    /// copy; the MoE layers' statistics are exchanged (`allGather`), so each rank merges every
    /// shard's part in shard order and backpropagates the whole batch's auxiliary losses; then
    /// the gradients are summed over the ranks (`allReduceSum`, one buffer), as are the loss and
    /// the experts' loads. Every rank then takes the same optimiser step, so the weights stay
    /// identical without being sent. Against one process running `data_parallel` with as many
    /// shards, the step differs only in the order the ranks' gradients are added (none on
    /// threads, which add in rank order).
    func computeRankGradients(_ inputs: [[Int]], _ targets: [[Int]], _ group: any Communicator) -> (loss: Float, aux: Float) {
        let shards = group.size, rank = group.rank, per = inputs.count / shards
        let rows = (rank * per)..<((rank + 1) * per)
        let statistics = MoEBatchStatistics(layers: model.layers.count, shards: shards)
        let seed = model.lora?.dropoutSeed
        if let seed { model.lora?.dropoutSeed = seed &+ UInt64(rank) }
        let tape = Tape(pool: pool)
        let out = model.forward(Array(inputs[rows]), targets: Array(targets[rows]), tape: tape, aux: config.auxLosses,
                                shard: statistics.shard(rank))
        model.lora?.dropoutSeed = seed
        statistics.exchange(over: group, shard: rank)
        let aux = statistics.merge(config.auxLosses)
        let counted = (0..<shards).map { i in targets[(i * per)..<((i + 1) * per)].reduce(0) { $0 + $1.filter { $0 >= 0 }.count } }
        let total = max(1, counted.reduce(0, +))
        tape.backward(from: out.loss, seed: Float(counted[rank]) / Float(total))
        sumGradients(over: group, excluding: shardedExperts)
        let loads = out.routings.map(\.chosenPerExpert)
        // The loss weighted as one process weights its shards: l c / total, added in rank order.
        var summed = [out.loss.value.floats[0] * Float(counted[rank]) / Float(total)] + loads.flatMap { $0.map(Float.init) }
        summed.withUnsafeMutableBufferPointer { group.allReduceSum($0) }
        var next = 1
        lastLoads = loads.map { layer in
            defer { next += layer.count }
            return summed[next..<(next + layer.count)].map { Int($0.rounded()) }
        }
        return (summed[0] + aux, aux)
    }

    /// Every trainable parameter's gradient summed over the ranks, in one `allReduceSum`: each
    /// rank packs its gradients (zeros where it has none) and a has-gradient flag per
    /// parameter; a parameter no rank gave a gradient keeps none (so the optimiser skips it, as
    /// it would alone). The `excluded` parameters (experts under expert parallelism, whose
    /// gradient is whole on the rank that runs them) are left as they are.
    private func sumGradients(over group: any Communicator, excluding excluded: Set<ObjectIdentifier>) {
        let params = model.trainableParameters.map(\.variable).filter { $0.requiresGrad && !excluded.contains(ObjectIdentifier($0)) }
        let sizes = params.map { $0.value.count }
        var offsets = [Int](), total = params.count  // the flags come first
        for n in sizes { offsets.append(total); total += n }
        var buffer = [Float](repeating: 0, count: total)
        buffer.withUnsafeMutableBufferPointer { b in
            for (i, p) in params.enumerated() {
                guard let g = p.grad else { continue }
                b[i] = 1
                let from = g.dtype == .f32 ? g : g.converted(to: .f32)
                withExtendedLifetime(from) { (b.baseAddress! + offsets[i]).update(from: from.floats.baseAddress!, count: sizes[i]) }
            }
            group.allReduceSum(b)
            for (i, p) in params.enumerated() where b[i] > 0 {
                let g = Tensor(uninitialized: p.value.shape)
                g.mutableFloats.baseAddress!.update(from: b.baseAddress! + offsets[i], count: sizes[i])
                p.grad = g
            }
        }
    }

    /// Under expert parallelism, the routed experts' weight variables (each runs, gets a
    /// gradient and is updated only on the rank that holds it); empty otherwise.
    var shardedExperts: Set<ObjectIdentifier> {
        guard model.expertParallel != nil else { return [] }
        return Set(model.layers.compactMap(\.moe).flatMap { $0.gate + $0.up + $0.down }.map(ObjectIdentifier.init))
    }

    /// Gradient clipping's scale; on ranks with sharded experts, the replicated parameters'
    /// sum of squares is the same on every rank, each expert's is on its rank alone, so the
    /// experts' sums are added over the ranks (`allReduceSum`) before the norm is taken.
    func rankClipScale(_ params: [Variable]) -> Float {
        guard let group = communicator, model.expertParallel != nil else { return clipScale(params, maxNorm: config.clip, pool: pool).scale }
        let experts = shardedExperts
        let replicated = clipScale(params.filter { !experts.contains(ObjectIdentifier($0)) }, maxNorm: .infinity, pool: pool).norm
        let mine = clipScale(params.filter { experts.contains(ObjectIdentifier($0)) }, maxNorm: .infinity, pool: pool).norm
        let squares = Double(replicated) * Double(replicated) + group.sum(Double(mine) * Double(mine))
        let norm = Float(squares.squareRoot())
        return norm > config.clip && norm > 0 ? config.clip / norm : 1
    }
}
