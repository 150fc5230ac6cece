import Foundation
import MoECore
import MoEModels

/// What to generate and when to stop.
public struct GenerationOptions: Sendable {
    public var maxTokens: Int
    public var sampling: SamplingOptions
    /// Generation stops before the first of these appears in the text (it is not emitted).
    public var stopStrings: [String]
    /// Stop on an end-of-sequence token (config.json's `eos_token_id`, else the tokenizer's).
    public var stopOnEOS: Bool
    /// Add the tokenizer's special tokens (a BOS) to the prompt.
    public var addSpecialTokens: Bool
    /// How the MoE layers route (another top-k, top-p, a threshold); empty: as the checkpoint does.
    public var routing = RoutingOverride()
    /// SCMoE self-contrast decoding (nil: plain decoding from the model's logits).
    public var selfContrast: SelfContrast?

    public init(maxTokens: Int = 128, sampling: SamplingOptions = .greedy, stopStrings: [String] = [],
                stopOnEOS: Bool = true, addSpecialTokens: Bool = true) {
        self.maxTokens = maxTokens
        self.sampling = sampling
        self.stopStrings = stopStrings
        self.stopOnEOS = stopOnEOS
        self.addSpecialTokens = addSpecialTokens
    }
}

/// The outcome of a generation.
public struct GenerationResult: Sendable {
    /// Why it stopped.
    public enum StopReason: String, Sendable, Codable { case eos, stopString = "stop_string", maxTokens = "max_tokens" }
    public var promptIDs: [Int]
    /// Generated token ids (without the prompt; an EOS that stopped it is not included).
    public var ids: [Int]
    /// Generated text, cut before a stop string.
    public var text: String
    public var stopReason: StopReason
    public var prefillSeconds: Double
    public var decodeSeconds: Double
}

/// Runs a model token by token with its tokenizer, streaming text as it becomes final.
public struct Generator {
    public let model: DecoderModel
    public let tokenizer: Tokenizer

    public init(model: DecoderModel, tokenizer: Tokenizer) {
        self.model = model
        self.tokenizer = tokenizer
    }

    /// The ids that end a sequence.
    public var eosIDs: Set<Int> {
        if !model.spec.eosTokenIDs.isEmpty { return Set(model.spec.eosTokenIDs) }
        return Set(["</s>", "<|endoftext|>", "<|im_end|>", "<|end_of_text|>", "<|eot_id|>"].compactMap { tokenizer.id(of: $0) })
    }

    /// Generates a continuation of `prompt`, calling `onText` with each newly final piece of text.
    public func generate(prompt: String, options: GenerationOptions, onText: (String) -> Void = { _ in }) throws(ModelError) -> GenerationResult {
        try generate(promptIDs: tokenizer.encode(prompt, addSpecialTokens: options.addSpecialTokens), options: options, onText: onText)
    }

    /// Generates a continuation of the token ids `promptIDs`.
    public func generate(promptIDs: [Int], options: GenerationOptions, onText: (String) -> Void = { _ in }) throws(ModelError) -> GenerationResult {
        // The cache grows as tokens come: start at what the prompt needs plus a little, not at the
        // most tokens asked for (which comes from outside).
        var cache = model.makeCache(capacity: promptIDs.count + min(options.maxTokens, 256) + 1)
        var sampler = Sampler(options.sampling)
        var stream = TextStream(tokenizer: tokenizer, stopStrings: options.stopStrings, eos: options.stopOnEOS ? eosIDs : [])
        let t0 = DispatchTime.now().uptimeNanoseconds
        guard !promptIDs.isEmpty, options.maxTokens > 0 else {
            return GenerationResult(promptIDs: promptIDs, ids: [], text: "", stopReason: .maxTokens, prefillSeconds: 0, decodeSeconds: 0)
        }
        let forward = try options.routing.forwardOptions(for: model)
        // SCMoE: the weak pass has a cache of its own and shares each forward pass with the
        // strong one (one read of the weights for both, each routed its own way).
        let weakOptions = try options.selfContrast?.weakOptions(for: model)
        var caches = [cache]
        if weakOptions != nil { caches.append(model.makeCache(capacity: promptIDs.count + min(options.maxTokens, 256) + 1)) }
        cache = .placeholder
        let perSequence = weakOptions.map { [forward, $0] }
        func step(_ tokens: [Int]) throws(ModelError) -> Tensor {
            try model.forward(batch: Array(repeating: tokens, count: caches.count), caches: &caches, lastOnly: true,
                              options: forward, sequenceOptions: perSequence)
        }
        var logits: Tensor
        if let weak = weakOptions, caches.count == 2 {
            // The prompt of each half runs alone: block-format weights pick their leaf by the rows
            // a pass holds, so a shared prefill of twice the rows could round differently from
            // each half's own. Decode steps (a row per half) share one pass.
            let strong = try model.forward(promptIDs, cache: &caches[0], lastOnly: true, options: forward)
            let weakLogits = try model.forward(promptIDs, cache: &caches[1], lastOnly: true, options: weak)
            logits = Tensor(shape: [2, model.spec.vocabSize], values: strong.toFloats() + weakLogits.toFloats())
        } else {
            // Through the model's own prompt path, so a prompt longer than `prefillChunk` runs in
            // pieces and its activations stay bounded, as `--prefill-chunk` promises.
            logits = try model.forward(promptIDs, cache: &caches[0], lastOnly: true, options: forward)
        }
        let t1 = DispatchTime.now().uptimeNanoseconds
        let v = model.spec.vocabSize
        while stream.ids.count < options.maxTokens {
            let next: Int
            let strong = UnsafeBufferPointer(rebasing: logits.floats[0..<v])
            if let contrast = options.selfContrast, caches.count == 2 {
                let scores = contrast.scores(strong: strong, weak: UnsafeBufferPointer(rebasing: logits.floats[v..<(2 * v)]))
                next = scores.withUnsafeBufferPointer { sampler.sample($0) }
            } else {
                next = sampler.sample(strong)
            }
            let piece = stream.push(next)
            if !piece.isEmpty { onText(piece) }
            if stream.stopReason != nil || stream.ids.count == options.maxTokens { break }
            logits = try step([next])
        }
        let rest = stream.finish(.maxTokens)
        if !rest.isEmpty { onText(rest) }
        let t2 = DispatchTime.now().uptimeNanoseconds
        return GenerationResult(promptIDs: promptIDs, ids: stream.ids, text: stream.text, stopReason: stream.stopReason ?? .maxTokens,
                                prefillSeconds: Double(t1 - t0) / 1e9, decodeSeconds: Double(t2 - t1) / 1e9)
    }
}
