import Foundation
import MoEModels
import MoEGenerate
import Prometheus

/// The server's Prometheus metrics (`GET /metrics`): requests by endpoint and status, tokens in
/// and out, time to first token, inter-token latency, queue depth, active sequences, KV cache
/// bytes, tokens per expert per MoE layer, and (under `--memory-budget`) the expert cache's
/// hits, misses, bytes read, read seconds, evictions, read-ahead use and bytes held.
final class ServerMetrics: @unchecked Sendable {
    let registry = PrometheusCollectorRegistry()
    private let promptTokens: Counter
    private let generatedTokens: Counter
    private let timeToFirstToken: ValueHistogram
    private let interTokenLatency: ValueHistogram
    private let queueDepth: Gauge
    private let activeSequences: Gauge
    private let kvCacheBytes: Gauge
    private let lock = NSLock()
    private var requestCounters: [String: Counter] = [:]
    private var expertGauges: [String: Gauge] = [:]
    private var finishedGauges: [String: Gauge] = [:]
    private let expertCache: ExpertCache?
    private var cacheGauges: [(Gauge, (ExpertCache.Statistics, ExpertCache) -> Double)] = []

    init(expertCache: ExpertCache? = nil) {
        self.expertCache = expertCache
        promptTokens = registry.makeCounter(name: "moekit_prompt_tokens_total", help: "Prompt tokens prefilled.")
        generatedTokens = registry.makeCounter(name: "moekit_generation_tokens_total", help: "Tokens generated.")
        timeToFirstToken = registry.makeValueHistogram(
            name: "moekit_time_to_first_token_seconds", buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
            help: "Seconds from a request's arrival to its first token.")
        interTokenLatency = registry.makeValueHistogram(
            name: "moekit_inter_token_latency_seconds", buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
            help: "Mean seconds between a request's tokens after the first.")
        queueDepth = registry.makeGauge(name: "moekit_queue_depth", help: "Requests waiting for a sequence slot.")
        activeSequences = registry.makeGauge(name: "moekit_active_sequences", help: "Sequences being generated.")
        kvCacheBytes = registry.makeGauge(name: "moekit_kv_cache_bytes", help: "Bytes of KV cache held by active sequences.")
        if expertCache != nil {
            let figures: [(String, String, (ExpertCache.Statistics, ExpertCache) -> Double)] = [
                ("moekit_expert_cache_hits", "Expert uses served from the expert cache.", { s, _ in Double(s.hits) }),
                ("moekit_expert_cache_misses", "Expert uses that read the model file.", { s, _ in Double(s.misses) }),
                ("moekit_expert_cache_read_bytes", "Bytes of expert weights read from the model file.", { s, _ in Double(s.bytesRead) }),
                ("moekit_expert_cache_read_seconds", "Seconds spent reading expert weights, summed over parallel and background reads.",
                 { s, _ in s.readSeconds }),
                ("moekit_expert_cache_stall_seconds", "Seconds layers waited for their experts to be read.", { s, _ in s.stallSeconds }),
                ("moekit_expert_cache_evictions", "Experts evicted from the cache.", { s, _ in Double(s.evictions) }),
                ("moekit_expert_cache_prefetches", "Experts read ahead by router lookahead (--prefetch).", { s, _ in Double(s.prefetches) }),
                ("moekit_expert_cache_prefetch_hits", "Read-ahead experts used before eviction.", { s, _ in Double(s.prefetchHits) }),
                ("moekit_expert_cache_bytes", "Bytes of expert weights the cache holds now.", { _, c in Double(c.bytesHeld) }),
                ("moekit_expert_cache_capacity_bytes", "Most bytes the cache may hold (the budget less the resident weights).",
                 { _, c in Double(c.capacity) }),
            ]
            cacheGauges = figures.map { name, help, value in (self.registry.makeGauge(name: name, help: help), value) }
        }
    }

    /// Counts a finished HTTP request.
    func request(endpoint: String, status: Int) {
        let key = "\(endpoint) \(status)"
        lock.lock()
        let counter = requestCounters[key] ?? registry.makeCounter(
            name: "moekit_requests_total", labels: [("endpoint", endpoint), ("status", String(status))], help: "HTTP requests answered.")
        requestCounters[key] = counter
        lock.unlock()
        counter.increment()
    }

    /// Records a finished generation.
    func finished(_ f: BatchFinish) {
        timeToFirstToken.record(f.timeToFirstToken)
        if f.completionTokens > 1 { interTokenLatency.record(f.decodeSeconds / Double(f.completionTokens - 1)) }
    }

    /// Text exposition, with the engine's gauges read now.
    func render(engine: BatchEngine) -> String {
        let s = engine.snapshot
        queueDepth.set(Double(s.queued))
        if let cache = expertCache {
            let stats = cache.statistics
            for (gauge, value) in cacheGauges { gauge.set(value(stats, cache)) }
        }
        activeSequences.set(Double(s.active))
        kvCacheBytes.set(Double(s.kvCacheBytes))
        lock.lock()
        let promptDelta = s.promptTokens - lastPrompt, generatedDelta = s.generatedTokens - lastGenerated
        lastPrompt = s.promptTokens
        lastGenerated = s.generatedTokens
        for (reason, n) in s.finished {
            let gauge = finishedGauges[reason] ?? registry.makeGauge(
                name: "moekit_finished_requests", labels: [("reason", reason)],
                help: "Generations ended since the server started, by reason (eos, stop_string, max_tokens, cancelled, failed).")
            finishedGauges[reason] = gauge
            gauge.set(Double(n))
        }
        for (layer, counts) in s.expertLoad {
            for (e, n) in counts.enumerated() {
                let key = "\(layer) \(e)"
                let gauge = expertGauges[key] ?? registry.makeGauge(
                    name: "moekit_expert_tokens", labels: [("layer", String(layer)), ("expert", String(e))],
                    help: "Tokens routed to each expert of each MoE layer since the server started.")
                expertGauges[key] = gauge
                gauge.set(Double(n))
            }
        }
        lock.unlock()
        if promptDelta > 0 { promptTokens.increment(by: Int64(promptDelta)) }
        if generatedDelta > 0 { generatedTokens.increment(by: Int64(generatedDelta)) }
        return registry.emitToString()
    }

    private var lastPrompt = 0, lastGenerated = 0
}
