import ArgumentParser
import Foundation
import MoE
import MoECore
import MoEModels

/// The element types `--kv-cache` takes.
enum KVCacheType: String, ExpressibleByArgument, CaseIterable {
    case f32, f16

    var dtype: DType { self == .f16 ? .f16 : .f32 }
}

/// `--memory-budget SIZE` and `--cache-policy`: run the routed experts out of a cache that keeps
/// the model within SIZE bytes (the other weights stay resident; experts are read from the file
/// when chosen). Logits are unchanged. `--kv-cache f16` halves the KV cache; `--prefill-chunk`
/// bounds a prompt's activations.
struct MemoryOptions: ParsableArguments {
    @Option(name: .customLong("memory-budget"),
            help: "Most memory for the weights, e.g. 600MB, 12GB, 1.5GiB: routed experts are read from the file on demand into a cache of what the other weights leave.")
    var memoryBudget: String?
    @Option(name: .customLong("cache-policy"), help: "Which cached expert leaves first: lru or lfu (with --memory-budget).")
    var cachePolicy = "lru"
    @Flag(help: "Router lookahead: while a layer computes, read the experts the next layer's router would choose (with --memory-budget).")
    var prefetch = false
    @Option(name: .customLong("cache-aware-routing"),
            help: "Cache-aware routing (with --memory-budget; top-k softmax layers): a cached expert's probability counts 1+M times when experts are chosen, so near-ties go to experts in memory; weights stay the true probabilities. Changes the output: measure with moe perplexity. (0 to 10)")
    var cacheAwareMargin: Float?
    @Flag(name: .customLong("direct-io"),
          help: "Read experts with direct I/O (O_DIRECT), so the page cache keeps no second copy of them (with --memory-budget).")
    var directIO = false
    @Flag(name: .customLong("pack-experts"),
          help: "Hold bf16 experts in the cache packed, and the resident bf16 matrices (attention, shared and dense FFNs, LM head) too: lossless, about 78% of the bytes, the same logits; more experts fit the budget and a token reads less, for the cost of packing each read (with --memory-budget; CPUs with AVX-512, elsewhere they stay as stored).")
    var packExperts = false
    @Option(name: .customLong("kv-cache"),
            help: "KV cache element type: f32 (exact, the default) or f16 (half the memory and the bytes each decoded token reads at long contexts; keys and values rounded to f16, as llama.cpp's default cache).")
    var kvCache = KVCacheType.f32
    @Option(name: .customLong("prefill-chunk"),
            help: "Prompt tokens per forward pass (llama.cpp's micro-batch): a longer prompt runs in pieces, so its activations stay bounded (top-k routers only; 0: the whole prompt at once; at most 1000000; default 1024; moe serve takes --step-tokens instead).")
    var prefillChunk: Int?

    func validate() throws {
        _ = try budget()
        if let prefillChunk, !(0...1_000_000).contains(prefillChunk) {
            throw ValidationError("--prefill-chunk must be in 0...1000000, got \(prefillChunk)")
        }
        guard ExpertCache.Policy(rawValue: cachePolicy) != nil else {
            throw ValidationError("--cache-policy must be lru or lfu, got '\(cachePolicy)'")
        }
        if memoryBudget == nil && cachePolicy != "lru" { throw ValidationError("--cache-policy needs --memory-budget") }
        if memoryBudget == nil && prefetch { throw ValidationError("--prefetch needs --memory-budget") }
        if memoryBudget == nil && directIO { throw ValidationError("--direct-io needs --memory-budget") }
        if memoryBudget == nil && packExperts { throw ValidationError("--pack-experts needs --memory-budget") }
        if let m = cacheAwareMargin {
            if memoryBudget == nil { throw ValidationError("--cache-aware-routing needs --memory-budget") }
            guard m >= 0 && m <= 10 else { throw ValidationError("--cache-aware-routing must be in 0...10, got \(m)") }
        }
    }

    /// The budget in bytes, or nil without `--memory-budget`.
    func budget() throws -> Int? {
        guard let text = memoryBudget else { return nil }
        guard let bytes = Self.parseSize(text) else {
            throw ValidationError("--memory-budget: '\(text)' is not a size such as 600MB, 12GB or 1.5GiB (at most 1 PiB)")
        }
        return bytes
    }

    /// Sets `model`'s KV cache type and puts it under the budget, if one was given.
    func apply(to model: DecoderModel) throws {
        model.kvCacheType = kvCache.dtype
        if let prefillChunk { model.prefillChunk = prefillChunk }
        guard let bytes = try budget() else { return }
        try model.useExpertCache(budget: bytes, policy: ExpertCache.Policy(rawValue: cachePolicy) ?? .lru, prefetch: prefetch,
                                 cacheAwareMargin: cacheAwareMargin ?? 0, directIO: directIO, packBF16: packExperts)
    }

    /// Bytes of a size: a number with an optional unit, B, KB, MB, GB, TB (powers of 1000) or
    /// KiB, MiB, GiB, TiB (powers of 1024); nil for anything else, or past 2^50.
    static func parseSize(_ text: String) -> Int? {
        let units: [(String, Double)] = [("kib", 1024), ("mib", 1_048_576), ("gib", 1_073_741_824), ("tib", 1_099_511_627_776),
                                         ("kb", 1e3), ("mb", 1e6), ("gb", 1e9), ("tb", 1e12), ("b", 1)]
        let lower = text.trimmingCharacters(in: .whitespaces).lowercased()
        var number = lower, scale = 1.0
        for (unit, factor) in units where lower.hasSuffix(unit) {
            number = String(lower.dropLast(unit.count)).trimmingCharacters(in: .whitespaces)
            scale = factor
            break
        }
        guard !number.isEmpty, number.allSatisfy({ $0.isNumber || $0 == "." }), let value = Double(number),
              value.isFinite, value > 0, value * scale <= 1_125_899_906_842_624 else { return nil }
        return Int(value * scale)
    }
}
