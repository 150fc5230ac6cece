import MoE
import MoECore
import MoEModels

extension DecoderModel {
    /// Shards every MoE layer's routed experts over `communicator`'s ranks for inference: each
    /// rank runs the same tokens (every weight but the routed experts is replicated) and only
    /// its share of each layer's experts (`ExpertParallelExperts`, `.replicated`). Tokens and
    /// logits are the single process's, bit for bit. Returns the statistics every layer adds to.
    /// Throws when a layer has fewer experts than there are ranks.
    ///
    /// With `mode: .partitioned` each rank's rows go to their experts' ranks by all-to-all, as
    /// when each rank serves its own tokens (data parallel), pipelined in `chunks` pieces
    /// (bit for bit the unpipelined layer). Each expert's products then take every rank's rows
    /// at once, so a rank's logits are the single process's on its own tokens to rounding.
    @discardableResult
    public func shardExperts(over communicator: any Communicator, mode: ExpertParallelExperts.Mode = .replicated,
                             chunks: Int = 1) throws(ModelError) -> ExchangeStatistics {
        let statistics = ExchangeStatistics()
        var refused: (layer: Int, experts: Int)?
        replaceRoutedExperts { layer, experts in
            guard refused == nil, let sharded = ExpertParallelExperts(experts, communicator: communicator, mode: mode,
                                                                      statistics: statistics) else {
                refused = refused ?? (layer, experts.expertCount)
                return experts
            }
            return sharded.pipelined(chunks: chunks)
        }
        if let (layer, count) = refused {
            throw .invalidConfig(path: checkpoint.weightsPath, field: "expert parallelism",
                                 reason: "layer \(layer) has \(count) routed experts, fewer than the \(communicator.size) ranks that would share them")
        }
        return statistics
    }
}

extension DecoderModel {
    /// Sets the pipeline depth of every expert-parallel layer (`ExpertParallelExperts.chunks`);
    /// every rank must set the same. Returns the chunks the layers really use (the fewest of
    /// their `effectiveChunks`).
    @discardableResult
    public func pipelineExpertExchanges(chunks: Int) -> Int {
        var effective = chunks
        replaceRoutedExperts { _, experts in
            guard let sharded = (experts as? ExpertParallelExperts)?.pipelined(chunks: chunks) else { return experts }
            effective = min(effective, sharded.effectiveChunks)
            return sharded
        }
        return effective
    }
}
