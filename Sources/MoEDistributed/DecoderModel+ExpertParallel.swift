import MoE
import MoECore
import MoEModels

extension DecoderModel {
    /// Shards every MoE layer's routed experts over `communicator`'s ranks for inference: each
    /// rank runs the same tokens (every weight but the routed experts is replicated) and only
    /// its share of each layer's experts (`ExpertParallelExperts`, `.replicated`). Tokens and
    /// logits are the single process's, bit for bit. Returns the statistics every layer adds to.
    /// Throws when a layer has fewer experts than there are ranks.
    @discardableResult
    public func shardExperts(over communicator: any Communicator) throws(ModelError) -> ExchangeStatistics {
        let statistics = ExchangeStatistics()
        var refused: (layer: Int, experts: Int)?
        replaceRoutedExperts { layer, experts in
            guard refused == nil, let sharded = ExpertParallelExperts(experts, communicator: communicator, mode: .replicated,
                                                                      statistics: statistics) else {
                refused = refused ?? (layer, experts.expertCount)
                return experts
            }
            return sharded
        }
        if let (layer, count) = refused {
            throw .invalidConfig(path: checkpoint.weightsPath, field: "expert parallelism",
                                 reason: "layer \(layer) has \(count) routed experts, fewer than the \(communicator.size) ranks that would share them")
        }
        return statistics
    }
}
