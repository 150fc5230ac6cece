import Foundation
import MoE
import MoECore
import MoEModels

/// Prefill and decode speed of a model, judged against the machine: decode against memory
/// bandwidth over the bytes one token reads, prefill against the FMA peak. `moe bench` prints it.
public enum ModelBenchmark {
    /// Bytes of the model's weights the read probe takes, when the model has them: 8 times a
    /// 32 MiB L3 cache, so that the probe reads memory.
    static let probeBytes = 256 << 20

    /// Decoded tokens between two passes of the windowed probe (`decodeFractionOfWindowedBandwidth`).
    static let probeWindow = 16

    /// What `moe bench` prints (snake_case keys in JSON).
    public struct Report: Codable, Sendable {
        public var model: String
        public var architecture: String
        public var threads: Int
        public var promptTokens: Int
        public var genTokens: Int
        public var prefillTokensPerS: Double
        public var decodeTokensPerS: Double
        public var peakRssBytes: Int
        /// Bytes of weights one decoded token reads.
        public var decodeBytesPerToken: Double
        /// Bytes of cached keys and values one decoded token reads, averaged over the timed
        /// steps (each attends to the prompt and the tokens before it), and the bytes the cache
        /// holds (sized for the whole run).
        public var decodeCacheBytesPerToken: Double
        public var kvCacheBytes: Int
        /// What decode achieves in GB/s over the bytes a token reads (weights and cache), and
        /// its fraction of the read bandwidth.
        public var decodeGbs: Double
        public var readBandwidthGbs: Double
        public var decodeFractionOfBandwidth: Double
        /// The read bandwidth sampled after every repetition (the median; `ReadBandwidthSampler`),
        /// so that the ceiling comes from the same seconds as the timed decode, and decode's
        /// fraction of it. Nil under an expert cache, whose decode reads the disk too.
        public var readBandwidthSampledGbs: Double?
        public var decodeFractionOfSampledBandwidth: Double?
        /// Decode against the memory of its own few milliseconds: one more decode after the
        /// timed ones runs in windows of `probeWindow` tokens with one pass of the sampler's probe
        /// between them (`windowedDecode`), and each window's GB/s is taken over the mean of the
        /// probes on either side. The median of the probes, and of the windows' fractions. The
        /// sampled figures above pair a second-long run with probes after it, while this VM's
        /// memory moves between 27 and 61 GB/s from one stretch of seconds to the next. Nil
        /// under an expert cache.
        public var readBandwidthWindowedGbs: Double?
        public var decodeFractionOfWindowedBandwidth: Double?
        /// The fraction of the timed decode the calling thread spent outside the pool's parallel
        /// loops (norms, routing, the products' set-up, ...), while the other threads waited and
        /// the memory idled (the median over the repetitions; `ThreadPool.parallelTime`). Nil on
        /// one thread.
        public var decodeSerialFraction: Double?
        public var prefillGflops: Double
        public var fmaPeakGflops: Double
        public var prefillFractionOfFmaPeak: Double
        /// Routed experts per token, averaged over the MoE layers and the decoded tokens (what
        /// decode read; the checkpoint's top-k unless routing was changed); 0 for a dense model.
        public var expertsPerToken: Double
        /// Sequences decoded together in the batched measurement (`--batch`), and their total
        /// tokens per second (each step one forward pass over all of them, as `moe serve` runs).
        public var batch: Int?
        public var batchDecodeTokensPerS: Double?
        /// The expert cache's figures over the timed decode steps, when the model runs under a
        /// memory budget (`DecoderModel.useExpertCache`).
        public var expertCache: ExpertCacheFigures?
        /// The arithmetic of products with bf16 weights, as the caller set it: "bf16" (activations
        /// rounded to bf16, `Kernels.bf16Activations`, on a CPU with the instruction) or "exact".
        public var precision: String?
    }

    /// What the expert cache did while decoding, per decoded token.
    public struct ExpertCacheFigures: Codable, Sendable {
        public var capacityBytes: Int
        public var policy: String
        /// Expert uses served from memory, of all expert uses.
        public var hitRate: Double
        /// Bytes read from the model's file, and seconds spent reading (summed over parallel
        /// and background reads).
        public var bytesReadPerToken: Double
        public var readSecondsPerToken: Double
        /// Seconds a token's layers waited for their experts (the decode's stall on the cache).
        public var stallSecondsPerToken: Double
        public var evictionsPerToken: Double
        /// Read buffers mapped afresh (the kernel zeroes their pages), rather than reused.
        public var buffersMappedPerToken: Double
        /// Of the experts router lookahead read ahead of use, the fraction that were used.
        public var prefetchAccuracy: Double
    }

    /// Total tokens per second of `batch` sequences decoding together: each prefilled alone
    /// with `promptTokens` random tokens (not timed), then `genTokens` steps of one batched
    /// pass over all of them (the median of `reps` timed runs after a warm-up).
    public static func batchedDecodeRate(model: DecoderModel, batch: Int, promptTokens: Int, genTokens: Int, reps: Int = 3,
                                         seed: UInt64 = 1) throws(ModelError) -> Double {
        var rng = SplitMix64(seed: seed)
        var times: [Double] = []
        for rep in 0...max(1, reps) {
            var caches: [KVCache] = []
            var next: [Int] = []
            for _ in 0..<batch {
                var cache = model.makeCache(capacity: promptTokens + genTokens + 1)
                let prompt = (0..<promptTokens).map { _ in Int(rng.next() % UInt64(model.spec.vocabSize)) }
                next.append(Kernels.argmax(try model.forward(prompt, cache: &cache, lastOnly: true))[0])
                caches.append(cache)
            }
            let t0 = DispatchTime.now().uptimeNanoseconds
            for _ in 0..<genTokens {
                next = Kernels.argmax(try model.forward(batch: next.map { [$0] }, caches: &caches, lastOnly: true))
            }
            let t1 = DispatchTime.now().uptimeNanoseconds
            if rep > 0 { times.append(Double(t1 - t0) / 1e9) }
        }
        return Double(batch * genTokens) / KernelBenchmark.median(times)
    }

    /// Runs `prompt` random tokens of prefill, then `gen` greedy decode steps, `reps` times
    /// (the median is kept), after a warm-up. With `randomTokens`, every repetition draws a
    /// fresh prompt and feeds random tokens to decode instead of the greedy ones, as
    /// llama-bench does: a random model's greedy output repeats itself, so its routing would too,
    /// and an expert cache would see the same experts every step.
    public static func run(model: DecoderModel, name: String, promptTokens: Int, genTokens: Int, reps: Int = 3,
                           seed: UInt64 = 1, randomTokens: Bool = false,
                           routing: RoutingOverride = RoutingOverride()) throws(ModelError) -> Report {
        // Counts each MoE layer's routed assignments in decode (one token a call) and prefill.
        final class Counter: @unchecked Sendable {
            var decoding = false, ignoring = false
            var decode: [Int: Int] = [:], prefill: [Int: Int] = [:]
        }
        let counter = Counter()
        var options = try routing.forwardOptions(for: model) { layer, r in
            if counter.ignoring { return }
            if counter.decoding { counter.decode[layer, default: 0] += r.assignmentCount } else { counter.prefill[layer, default: 0] += r.assignmentCount }
        }
        options.traceTakesPieces = true  // it only counts
        var rng = SplitMix64(seed: seed)
        let vocab = UInt64(model.spec.vocabSize)
        // Decode's next token: greedy, or random as llama-bench feeds it.
        func nextToken(_ logits: Tensor) -> Int { randomTokens ? Int(rng.next() % vocab) : Kernels.argmax(logits)[0] }
        // Bytes of cached keys and values `count` decode steps read from context `context` on.
        func cacheBytes(from context: Int, count: Int) -> Double {
            (0..<count).reduce(0.0) { $0 + model.decodeCacheBytes(context: context + $1 + 1) }
        }
        var prompt = (0..<promptTokens).map { _ in Int(rng.next() % vocab) }
        // The bandwidth probe reads the model's own weights, the same mapped pages decode reads.
        // It takes whole layers from the last one back until it holds 256 MiB or the model: a
        // set near the L3 cache's size reads partly from the cache, not from memory (the read
        // probe on this VM, 2 threads, with a 32 MiB L3: 80-86 GB/s over 24 MB, 36-42 over 48 MB,
        // 28-33 over 96 MB and more), and the last layer alone (40-95 MB on the small bench
        // models) overstated the ceiling their decode was measured against.
        var probed: [Tensor] = [], probedBytes = 0
        // Under an expert cache the routed experts stay out of memory: the probe leaves them alone.
        let cached = model.expertCache != nil
        for layer in stride(from: model.spec.layers - 1, through: 0, by: -1) where probedBytes < Self.probeBytes {
            let prefixes = ["model.layers.\(layer).", "blk.\(layer)."]
            for name in model.checkpoint.names where prefixes.contains(where: name.hasPrefix)
                && !(cached && (name.contains("_exps") || name.contains(".mlp.experts."))) {
                if let t = try? model.checkpoint.tensor(name) {
                    probed.append(t)
                    probedBytes += t.byteCount
                }
            }
        }
        var prefill: [Double] = [], decode: [Double] = [], serial: [Double] = []
        // Peak RSS before the sampler's buffer, which stays resident through the run and is taken
        // off the peak after it.
        let rssBeforeSampler = peakRSSBytes()
        let sampler = model.expertCache == nil ? ReadBandwidthSampler(pool: model.pool) : nil
        var sampled: [Double] = []
        var cacheStats = ExpertCache.Statistics()
        var kvCacheBytes = 0
        for rep in 0...max(1, reps) {
            var cache = model.makeCache(capacity: promptTokens + min(genTokens, 4096) + 1)
            kvCacheBytes = cache.byteCount
            if randomTokens && rep > 0 { prompt = prompt.map { _ in Int(rng.next() % vocab) } }
            counter.decoding = false
            let t0 = DispatchTime.now().uptimeNanoseconds
            var logits = try model.forward(prompt, cache: &cache, lastOnly: true, options: options)
            let t1 = DispatchTime.now().uptimeNanoseconds, parallel = model.pool.parallelTime
            counter.decoding = true
            model.expertCache?.resetStatistics()
            for _ in 0..<genTokens {
                logits = try model.forward([nextToken(logits)], cache: &cache, lastOnly: true, options: options)
            }
            let t2 = DispatchTime.now().uptimeNanoseconds, inLoops = model.pool.parallelTime - parallel
            if let sampler { sampled.append(sampler.sample()) }  // after the warm-up too: before the first timed rep
            if rep == 0 { continue }  // warm-up
            if let c = model.expertCache?.statistics {
                cacheStats.hits += c.hits
                cacheStats.misses += c.misses
                cacheStats.bytesRead += c.bytesRead
                cacheStats.readSeconds += c.readSeconds
                cacheStats.stallSeconds += c.stallSeconds
                cacheStats.evictions += c.evictions
                cacheStats.buffersMapped += c.buffersMapped
                cacheStats.prefetches += c.prefetches
                cacheStats.prefetchHits += c.prefetchHits
            }
            prefill.append(Double(t1 - t0) / 1e9)
            decode.append(Double(t2 - t1) / 1e9)
            serial.append(max(0, 1 - inLoops / (Double(t2 - t1) / 1e9)))
        }
        counter.ignoring = true
        let windows = try sampler.map { sampler throws(ModelError) in
            try windowedDecode(model: model, prompt: prompt, genTokens: genTokens, options: options, sampler: sampler, next: nextToken)
        } ?? []
        let prefillSeconds = KernelBenchmark.median(prefill), decodeSeconds = KernelBenchmark.median(decode)
        // The peak RSS is the run's, read before the probe maps weights a run may never touch (on
        // the 178 MB OLMoE-shaped Q4_K_M file it added 9 MB, experts no token chose); the probe
        // then runs right after the timed decode, in the same minute of the machine's memory.
        let peakRSS = max(rssBeforeSampler, peakRSSBytes() - (sampler?.bytes ?? 0))
        let sampledBandwidth = sampled.isEmpty ? nil : KernelBenchmark.median(sampled)
        let bandwidths = (0..<(probedBytes > 0 ? 3 : 0)).map { _ in
            Double(probedBytes) / KernelBenchmark.readProbeSeconds(probed, pool: model.pool) / 1e9
        }
        let bandwidth = bandwidths.isEmpty ? KernelBenchmark.measureReadBandwidth(pool: model.pool) : KernelBenchmark.median(bandwidths)
        let peak = KernelBenchmark.measureFMAPeak(pool: model.pool)
        let decodeRate = Double(genTokens) / decodeSeconds
        let prefillRate = Double(promptTokens) / prefillSeconds
        // Bytes and flops follow the experts the routing actually chose.
        let runs = Double(max(1, reps) + 1)
        let decodeExperts = { (layer: Int) in Double(counter.decode[layer] ?? 0) / (runs * Double(genTokens)) }
        let prefillExperts = { (layer: Int) in Double(counter.prefill[layer] ?? 0) / (runs * Double(promptTokens)) }
        let decodeBytes = model.decodeWeightBytes(expertsPerToken: decodeExperts)
        let cachePerToken = cacheBytes(from: promptTokens, count: genTokens) / Double(max(1, genTokens))
        let decodeGbs = decodeRate * (decodeBytes + cachePerToken) / 1e9
        let windowFractions = windows.map { w in
            (Double(w.tokens) * decodeBytes + cacheBytes(from: w.context, count: w.tokens)) / w.seconds / 1e9 / ((w.before + w.after) / 2)
        }
        let windowedBandwidth = windows.isEmpty ? nil : KernelBenchmark.median(windows.flatMap { [$0.before, $0.after] })
        let prefillGflops = prefillRate * model.prefillFlopsPerToken(expertsPerToken: prefillExperts) / 1e9
        let moeLayers = counter.decode.keys.sorted()
        let expertsPerToken = moeLayers.isEmpty ? 0 : moeLayers.map(decodeExperts).reduce(0, +) / Double(moeLayers.count)
        return Report(model: name, architecture: model.spec.modelType, threads: model.pool.threadCount,
                      promptTokens: promptTokens, genTokens: genTokens, prefillTokensPerS: prefillRate,
                      decodeTokensPerS: decodeRate, peakRssBytes: peakRSS,
                      decodeBytesPerToken: decodeBytes, decodeCacheBytesPerToken: cachePerToken, kvCacheBytes: kvCacheBytes,
                      decodeGbs: decodeGbs, readBandwidthGbs: bandwidth,
                      decodeFractionOfBandwidth: decodeGbs / bandwidth,
                      readBandwidthSampledGbs: sampledBandwidth, decodeFractionOfSampledBandwidth: sampledBandwidth.map { decodeGbs / $0 },
                      readBandwidthWindowedGbs: windowedBandwidth,
                      decodeFractionOfWindowedBandwidth: windowFractions.isEmpty ? nil : KernelBenchmark.median(windowFractions),
                      decodeSerialFraction: model.pool.threadCount > 1 ? KernelBenchmark.median(serial) : nil,
                      prefillGflops: prefillGflops, fmaPeakGflops: peak,
                      prefillFractionOfFmaPeak: prefillGflops / peak, expertsPerToken: expertsPerToken,
                      batch: nil, batchDecodeTokensPerS: nil,
                      expertCache: model.expertCache.map { cache in
                          let tokens = Double(max(1, reps) * genTokens)
                          return ExpertCacheFigures(capacityBytes: cache.capacity, policy: cache.policy.rawValue,
                                                    hitRate: cacheStats.hitRate, bytesReadPerToken: Double(cacheStats.bytesRead) / tokens,
                                                    readSecondsPerToken: cacheStats.readSeconds / tokens,
                                                    stallSecondsPerToken: cacheStats.stallSeconds / tokens,
                                                    evictionsPerToken: Double(cacheStats.evictions) / tokens,
                                                    buffersMappedPerToken: Double(cacheStats.buffersMapped) / tokens,
                                                    prefetchAccuracy: cacheStats.prefetchAccuracy)
                      })
    }

    /// One more decode of `genTokens` after `prompt` (`next` picks each token), outside the
    /// timed runs, in windows of `probeWindow` tokens with one pass of `sampler`'s probe between
    /// them: per window its timed tokens, their seconds, the context before them and the probes
    /// on either side. A window's first token runs untimed, as the pass before it has just
    /// evicted the caches continuous decode keeps. A pass of its own, so that the probes cannot
    /// touch `decode_tokens_per_s`, which stays a continuous decode as llama-bench times it.
    static func windowedDecode(model: DecoderModel, prompt: [Int], genTokens: Int, options: ForwardOptions,
                               sampler: ReadBandwidthSampler, next: (Tensor) -> Int) throws(ModelError)
        -> [(tokens: Int, seconds: Double, context: Int, before: Double, after: Double)] {
        var cache = model.makeCache(capacity: prompt.count + min(genTokens, 4096) + 1)
        var logits = try model.forward(prompt, cache: &cache, lastOnly: true, options: options)
        var windows: [(tokens: Int, seconds: Double, context: Int, before: Double, after: Double)] = []
        var before = sampler.sample(passes: 1), done = 0
        while done < genTokens {
            let n = min(probeWindow, genTokens - done), untimed = n > 1 ? 1 : 0
            var start = DispatchTime.now().uptimeNanoseconds
            for j in 0..<n {
                if j == untimed { start = DispatchTime.now().uptimeNanoseconds }
                logits = try model.forward([next(logits)], cache: &cache, lastOnly: true, options: options)
            }
            let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
            let after = sampler.sample(passes: 1)
            windows.append((n - untimed, seconds, prompt.count + done + untimed, before, after))
            before = after
            done += n
        }
        return windows
    }

    /// The process's peak resident set size in bytes.
    public static func peakRSSBytes() -> Int {
        var usage = rusage()
        #if os(Linux)
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return usage.ru_maxrss * 1024  // kilobytes on Linux
        #else
        getrusage(RUSAGE_SELF, &usage)
        return usage.ru_maxrss  // bytes on Darwin
        #endif
    }
}
