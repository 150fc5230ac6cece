import Foundation
import MoECore
import MoEModels

/// What expert parallelism costs a model, measured: one prefill and a run of decode steps on
/// a model whose experts `DecoderModel.shardExperts` sharded, reading its `ExchangeStatistics`.
public enum ExpertParallelBenchmark {
    /// The figures of one phase (prefill or decode), for this rank.
    public struct Phase: Codable, Sendable, Equatable {
        /// Bytes this rank sent to other ranks, per token and MoE layer (received: the same
        /// in total over the ranks).
        public var bytesSentPerTokenPerLayer: Double
        public var bytesReceivedPerTokenPerLayer: Double
        /// Seconds per token: in the collectives (transfer and waiting for other ranks),
        /// running this rank's experts, and the whole forward pass.
        public var communicationSecondsPerToken: Double
        public var expertSecondsPerToken: Double
        public var totalSecondsPerToken: Double
        /// Communication's share of the forward pass.
        public var communicationFraction: Double
    }

    /// The figures `moe bench --expert-parallel` adds to its report.
    public struct Figures: Codable, Sendable, Equatable {
        public var ranks: Int
        public var rank: Int
        /// Bytes of routed-expert weights this rank holds, and the model's total.
        public var expertBytesHeld: Int
        public var expertBytesTotal: Int
        public var prefill: Phase
        public var decode: Phase
    }

    /// Prefills `promptTokens` tokens, then decodes `genTokens` more (greedy), and reports
    /// each phase's exchanges. Every rank must call it with the same arguments.
    public static func measure(model: DecoderModel, statistics: ExchangeStatistics, communicator: any Communicator,
                               expertBytesTotal: Int, promptTokens: Int, genTokens: Int) throws(ModelError) -> Figures {
        let vocab = model.spec.vocabSize
        var rng = SplitMix64(seed: 11)
        let prompt = (0..<promptTokens).map { _ in Int(rng.next() % UInt64(vocab)) }
        let layers = Double(max(1, model.spec.moeLayers.filter { $0 }.count))
        func phase(tokens: Int, seconds: Double) -> Phase {
            let t = statistics.current, n = Double(max(1, tokens))
            let comm = Double(t.communicationNanoseconds) / 1e9
            return Phase(bytesSentPerTokenPerLayer: Double(t.bytesSent) / n / layers,
                         bytesReceivedPerTokenPerLayer: Double(t.bytesReceived) / n / layers,
                         communicationSecondsPerToken: comm / n, expertSecondsPerToken: Double(t.computeNanoseconds) / 1e9 / n,
                         totalSecondsPerToken: seconds / n, communicationFraction: seconds > 0 ? comm / seconds : 0)
        }
        var cache = model.makeCache(capacity: promptTokens + genTokens)
        communicator.barrier()
        statistics.reset()
        var start = DispatchTime.now().uptimeNanoseconds
        var logits = try model.forward(prompt, cache: &cache, lastOnly: true)
        let prefill = phase(tokens: promptTokens, seconds: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        communicator.barrier()
        statistics.reset()
        start = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<genTokens {
            let last = logits.floats.suffix(vocab)
            let next = last.indices.max { last[$0] < last[$1] }.map { $0 - last.startIndex } ?? 0
            logits = try model.forward([next], cache: &cache, lastOnly: true)
        }
        let decode = phase(tokens: genTokens, seconds: Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        return Figures(ranks: communicator.size, rank: communicator.rank, expertBytesHeld: model.routedExpertBytes,
                       expertBytesTotal: expertBytesTotal, prefill: prefill, decode: decode)
    }
}
