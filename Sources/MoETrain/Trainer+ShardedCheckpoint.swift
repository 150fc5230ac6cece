import MoECore
import MoEDistributed
import MoEModels

/// Checkpoints under expert parallelism: each rank holds only the routed experts it trains, so
/// the checkpoint is written by rank 0 tensor by tensor, each expert tensor it does not hold
/// sent by its rank just when its turn comes (one `allGatherV` per tensor, every rank walking
/// the same list in the same order). No rank ever holds more than its own experts plus one
/// tensor, and the files are those one process writes.
extension Trainer {
    /// Under expert parallelism, the rank that trains each routed expert weight, by parameter
    /// name; empty otherwise (every tensor is then rank 0's).
    public var expertOwners: [String: Int] {
        guard let group = communicator, model.expertParallel != nil else { return [:] }
        var owner: [ObjectIdentifier: Int] = [:]
        for layer in model.layers {
            guard let moe = layer.moe, let shard = ExpertShard(experts: moe.gate.count, ranks: group.size) else { continue }
            for kind in [moe.gate, moe.up, moe.down] {
                for (e, v) in kind.enumerated() { owner[ObjectIdentifier(v)] = shard.owner(of: e) }
            }
        }
        var out: [String: Int] = [:]
        for (name, v) in model.orderedVariables { if let r = owner[ObjectIdentifier(v)] { out[name] = r } }
        return out
    }

    /// One tensor of a checkpoint file, with the rank whose copy is written.
    struct CheckpointTensor {
        let name: String
        let shape: [Int], dtype: DType
        let owner: Int
        /// This rank's copy (a placeholder on ranks that do not own it).
        let local: () -> Tensor
    }

    /// The weights file's tensors, in the order they are written.
    var checkpointWeights: [CheckpointTensor] {
        let owners = expertOwners
        return model.namedTensors.map { t in
            CheckpointTensor(name: t.name, shape: t.tensor.shape, dtype: t.tensor.dtype, owner: owners[t.name] ?? 0) { t.tensor }
        }
    }

    /// The optimiser file's tensors (`<name>.m`, `<name>.v`), in the order they are written:
    /// every parameter with moments, a routed expert's on its rank under expert parallelism
    /// (which experts have them, one `allGather`: every rank must build it at the same point).
    var checkpointMoments: [CheckpointTensor] {
        let owners = expertOwners
        let named = model.lora.map { Dictionary(uniqueKeysWithValues: $0.namedVariables) } ?? model.namedVariables
        let sorted = named.sorted(by: { $0.key < $1.key })
        var withMoments = Set(sorted.filter { owners[$0.key] == nil && optimizer.state(of: $0.value) != nil }.map(\.key))
        if let group = communicator, !owners.isEmpty {
            let experts = sorted.filter { owners[$0.key] != nil }
            let flags = group.allGather(experts.map { Int64(owners[$0.key] == group.rank && optimizer.state(of: $0.value) != nil ? 1 : 0) })
            for (i, e) in experts.enumerated() where (0..<group.size).contains(where: { flags[$0 * experts.count + i] != 0 }) {
                withMoments.insert(e.key)
            }
        }
        var out: [CheckpointTensor] = []
        for (name, v) in sorted where withMoments.contains(name) {
            let owner = owners[name] ?? 0, shape = v.value.shape
            out.append(CheckpointTensor(name: "\(name).m", shape: shape, dtype: .f32, owner: owner) { [optimizer] in
                optimizer.state(of: v)!.m
            })
            out.append(CheckpointTensor(name: "\(name).v", shape: shape, dtype: .f32, owner: owner) { [optimizer] in
                optimizer.state(of: v)!.v
            })
        }
        return out
    }

    /// `tensors` as entries for `SafetensorsWriter` on rank 0: a tensor another rank owns comes
    /// from it when written (the other ranks run `sendCheckpoint` on the same list meanwhile).
    func checkpointEntries(_ tensors: [CheckpointTensor]) -> [SafetensorsWriter.Entry] {
        tensors.map { t in
            SafetensorsWriter.Entry(name: t.name, shape: t.shape, dtype: t.dtype) { [self] in
                t.owner == 0 ? t.local() : fetch(t)!
            }
        }
    }

    /// A rank other than 0's part in writing `tensors`: it sends each of its own, and takes
    /// part in every other exchange, in the list's order.
    func sendCheckpoint(_ tensors: [CheckpointTensor]) {
        for t in tensors where t.owner != 0 { _ = fetch(t) }
    }

    /// One tensor from its owner to rank 0 (a collective: every rank calls it in the same
    /// order); the tensor on rank 0, nil elsewhere.
    private func fetch(_ t: CheckpointTensor) -> Tensor? {
        guard let group = communicator else { return t.local() }
        let n = t.shape.reduce(1, *)
        let counts = (0..<group.size).map { $0 == t.owner ? n : 0 }
        let mine = group.rank == t.owner ? t.local().converted(to: .f32) : Tensor(zeros: [0])
        let received = Tensor(uninitialized: [n])
        withExtendedLifetime(mine) { group.allGatherV(send: mine.floats, receive: received.mutableFloats, counts: counts) }
        guard group.rank == 0 else { return nil }
        return Tensor(shape: t.shape, values: received.toFloats()).converted(to: t.dtype)
    }
}
