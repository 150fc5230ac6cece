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
        /// How rows reach the experts (`replicated` or `partitioned`) and the pipeline's chunks
        /// (as used: at most the fewest experts a rank holds).
        public var rows: String
        public var chunks: Int
        /// Partitioned rows: the prefill pipelined in each chunk count, side by side.
        public var overlap: [Overlap]?
    }

    /// One prefill of a partitioned model pipelined in `chunks` pieces (the fastest of the
    /// repetitions), per token of this rank's prompt.
    public struct Overlap: Codable, Sendable, Equatable {
        /// The chunks used (at most the fewest experts a rank holds).
        public var chunks: Int
        /// The whole forward pass, and the expert layers' exchange-and-run within it.
        public var prefillSecondsPerToken: Double
        public var expertLayerSecondsPerToken: Double
        /// Running this rank's experts; held up by the exchanges; the exchanges in flight.
        public var expertSecondsPerToken: Double
        public var exposedCommunicationSecondsPerToken: Double
        public var flightSecondsPerToken: Double
        /// The share of the exchanges' time in flight that other work hid: 1 - exposed / flight.
        public var hiddenFraction: Double
    }

    /// Prefills `promptTokens` tokens, then decodes `genTokens` more (greedy), and reports
    /// each phase's exchanges. Every rank must call it with the same arguments. With
    /// `partitioned` rows each rank has its own prompt (a seed of its rank), as when each
    /// serves its own requests, and the prefill is also run pipelined in each of
    /// `overlapChunks` (fastest of `reps`), the model left at its `chunks` at the end.
    public static func measure(model: DecoderModel, statistics: ExchangeStatistics, communicator: any Communicator,
                               expertBytesTotal: Int, promptTokens: Int, genTokens: Int, partitioned: Bool = false, chunks: Int = 1,
                               overlapChunks: [Int] = [], reps: Int = 3) throws(ModelError) -> Figures {
        let vocab = model.spec.vocabSize
        var rng = SplitMix64(seed: 11 &+ UInt64(partitioned ? communicator.rank : 0))
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
        var overlap: [Overlap]?
        if partitioned && !overlapChunks.isEmpty {
            overlap = try Self.overlap(model: model, prompt: prompt, statistics: statistics, communicator: communicator,
                                       chunks: overlapChunks, reps: reps)
        }
        let used = model.pipelineExpertExchanges(chunks: chunks)
        return Figures(ranks: communicator.size, rank: communicator.rank, expertBytesHeld: model.routedExpertBytes,
                       expertBytesTotal: expertBytesTotal, prefill: prefill, decode: decode,
                       rows: partitioned ? "partitioned" : "replicated", chunks: used, overlap: overlap)
    }

    /// The prefill of `prompt` pipelined in each chunk count, the counts taken in turn within
    /// each repetition (so drift hits them alike); the fastest repetition of each.
    static func overlap(model: DecoderModel, prompt: [Int], statistics: ExchangeStatistics, communicator: any Communicator,
                        chunks: [Int], reps: Int) throws(ModelError) -> [Overlap] {
        // The counts the layers really use, each once (a count past the fewest experts a rank
        // holds is capped).
        var counts: [Int] = []
        for c in chunks {
            let effective = model.pipelineExpertExchanges(chunks: c)
            if !counts.contains(effective) { counts.append(effective) }
        }
        var best = [Overlap?](repeating: nil, count: counts.count)
        let n = Double(prompt.count)
        for _ in 0..<max(1, reps) {
            for (i, c) in counts.enumerated() {
                let effective = model.pipelineExpertExchanges(chunks: c)
                var cache = model.makeCache(capacity: prompt.count)
                communicator.barrier()
                statistics.reset()
                let start = DispatchTime.now().uptimeNanoseconds
                _ = try model.forward(prompt, cache: &cache, lastOnly: true)
                let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
                let t = statistics.current
                let flight = Double(t.flightNanoseconds), exposed = Double(t.communicationNanoseconds)
                let run = Overlap(chunks: effective, prefillSecondsPerToken: seconds / n, expertLayerSecondsPerToken: Double(t.wallNanoseconds) / 1e9 / n,
                                  expertSecondsPerToken: Double(t.computeNanoseconds) / 1e9 / n,
                                  exposedCommunicationSecondsPerToken: exposed / 1e9 / n, flightSecondsPerToken: flight / 1e9 / n,
                                  hiddenFraction: flight > 0 ? max(0, 1 - exposed / flight) : 0)
                if best[i].map({ run.prefillSecondsPerToken < $0.prefillSecondsPerToken }) ?? true { best[i] = run }
            }
        }
        return best.map { $0! }
    }
}
