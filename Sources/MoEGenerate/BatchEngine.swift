import Foundation
import MoECore
import MoE
import MoEModels

/// One generation request for `BatchEngine`.
public struct BatchRequest: Sendable {
    public var promptIDs: [Int]
    public var maxTokens: Int
    public var sampling: SamplingOptions
    public var stopStrings: [String]
    public var stopOnEOS: Bool
    /// How the MoE layers route for this request (another top-k, top-p, a threshold).
    public var routing: RoutingOverride
    /// How many most likely alternatives to report with each token's log-probability (nil:
    /// no log-probabilities).
    public var logprobs: Int?
    /// Report the experts each generated token was routed to, per MoE layer.
    public var returnRouting: Bool
    /// SCMoE: contrast each step's logits with a weak pass's (nil: plain decoding).
    public var selfContrast: SelfContrast?

    public init(promptIDs: [Int], maxTokens: Int, sampling: SamplingOptions = .greedy, stopStrings: [String] = [],
                stopOnEOS: Bool = true, routing: RoutingOverride = RoutingOverride(), logprobs: Int? = nil,
                returnRouting: Bool = false, selfContrast: SelfContrast? = nil) {
        self.selfContrast = selfContrast
        self.promptIDs = promptIDs
        self.maxTokens = maxTokens
        self.sampling = sampling
        self.stopStrings = stopStrings
        self.stopOnEOS = stopOnEOS
        self.routing = routing
        self.logprobs = logprobs
        self.returnRouting = returnRouting
    }
}

/// A token's log-probability under the model (log-softmax of its logits).
public struct TokenLogprob: Sendable {
    public var id: Int
    public var logprob: Float
}

/// What the engine reports about a request, in order: tokens, then one `finished`.
public enum BatchEvent: Sendable {
    /// A generated token and the text that became final with it (often empty or partial words).
    case token(id: Int, text: String, logprob: TokenLogprob?, alternatives: [TokenLogprob], experts: [Int: [Int]]?)
    /// The request ended; `text` is all of its text.
    case finished(BatchFinish)
    /// The request failed (a model error); nothing follows.
    case failed(String)
}

/// How a request ended.
public struct BatchFinish: Sendable {
    /// eos, stop_string, max_tokens, or cancelled.
    public var reason: String
    public var promptTokens: Int
    public var completionTokens: Int
    public var text: String
    /// Seconds from submission to the first token.
    public var timeToFirstToken: Double
    /// Seconds from the first token to the last.
    public var decodeSeconds: Double
}

/// Errors submitting a request.
public enum BatchEngineError: Error, Equatable, CustomStringConvertible {
    /// The queue holds its most requests (this many) already.
    case queueFull(Int)
    /// The engine was shut down.
    case stopped
    /// The request cannot run (an empty prompt, a routing override the model cannot take).
    case invalid(String)

    public var description: String {
        switch self {
        case let .queueFull(n): return "the server is busy: \(n) requests are waiting already, the most it queues"
        case .stopped: return "the engine has stopped"
        case let .invalid(m): return m
        }
    }
}

/// Continuous batching: generates for many requests at once on one model. Each step runs one
/// forward pass over every active sequence (`DecoderModel.forward(batch:caches:)`): the
/// decoding ones contribute their last token, the prefilling ones the next chunk of their
/// prompt (within `stepTokens` rows a step, so a long prompt does not stall the others), and
/// every MoE layer reads each expert once for all of them, each sequence routed by its own
/// request's settings (and an SCMoE request's weak pass beside its strong one). New requests
/// join between steps; at most `maxSequences` run, `maxQueue` more wait, and the rest are
/// refused. A model whose routers choose across tokens (expert choice, capacity) runs one
/// sequence per pass.
///
/// Events are delivered on the engine's thread; a callback must not block.
public final class BatchEngine: @unchecked Sendable {
    /// Limits of the engine.
    public struct Configuration: Sendable {
        public var maxSequences: Int
        public var maxQueue: Int
        /// Rows one pass may carry (decoding tokens plus prompt chunks).
        public var stepTokens: Int
        public init(maxSequences: Int = 8, maxQueue: Int = 64, stepTokens: Int = 256) {
            self.maxSequences = max(1, maxSequences)
            self.maxQueue = max(0, maxQueue)
            self.stepTokens = max(1, stepTokens)
        }
    }

    /// Counters for metrics, read with `snapshot`.
    public struct Snapshot: Sendable {
        public var queued: Int
        public var active: Int
        /// Bytes of KV cache the active sequences hold.
        public var kvCacheBytes: Int
        public var steps: Int
        public var promptTokens: Int
        public var generatedTokens: Int
        /// Per MoE layer, tokens routed to each expert since the start.
        public var expertLoad: [Int: [Int]]
        /// Requests ended, by reason (eos, stop_string, max_tokens, cancelled, failed).
        public var finished: [String: Int] = [:]
    }

    public let model: DecoderModel
    public let tokenizer: Tokenizer
    public let configuration: Configuration
    private let eos: Set<Int>
    private let batchesAcrossSequences: Bool
    private let condition = NSCondition()
    private var queue: [Sequence] = []
    private var active: [Sequence] = []
    private var cancelled: Set<Int> = []
    private var nextID = 0
    private var running = true
    private var counters = Snapshot(queued: 0, active: 0, kvCacheBytes: 0, steps: 0, promptTokens: 0, generatedTokens: 0, expertLoad: [:])

    public init(model: DecoderModel, tokenizer: Tokenizer, configuration: Configuration = Configuration()) {
        self.model = model
        self.tokenizer = tokenizer
        self.configuration = configuration
        eos = Generator(model: model, tokenizer: tokenizer).eosIDs
        batchesAcrossSequences = model.moeRouters.values.allSatisfy(\.isCausal)
        let thread = Thread { [weak self] in self?.loop() }
        thread.name = "moekit-batch-engine"
        thread.stackSize = 8 << 20
        thread.start()
    }

    deinit { shutdown() }

    /// Queues a request; `onEvent` hears its tokens and its end. Returns its id (for `cancel`).
    @discardableResult
    public func submit(_ request: BatchRequest, onEvent: @escaping @Sendable (BatchEvent) -> Void) throws(BatchEngineError) -> Int {
        guard !request.promptIDs.isEmpty else { throw .invalid("the prompt has no tokens") }
        let forward: ForwardOptions, weakForward: ForwardOptions?
        do {
            forward = try request.routing.forwardOptions(for: model)
            weakForward = try request.selfContrast?.weakOptions(for: model)
        } catch { throw .invalid(error.description) }
        condition.lock()
        defer { condition.unlock() }
        guard running else { throw .stopped }
        guard queue.count + active.count < configuration.maxQueue + configuration.maxSequences else {
            throw .queueFull(configuration.maxQueue)
        }
        nextID += 1
        let counted: @Sendable (BatchEvent) -> Void = { [weak self] event in
            switch event {
            case let .finished(f): self?.countFinished(f.reason)
            case .failed: self?.countFinished("failed")
            case .token: break
            }
            onEvent(event)
        }
        let sequence = Sequence(id: nextID, request: request, forward: forward, weakForward: weakForward, onEvent: counted,
                                cache: model.makeCache(capacity: min(request.promptIDs.count + 64, request.promptIDs.count + request.maxTokens + 1)),
                                stream: TextStream(tokenizer: tokenizer, stopStrings: request.stopStrings, eos: request.stopOnEOS ? eos : []))
        queue.append(sequence)
        condition.signal()
        return sequence.id
    }

    private func countFinished(_ reason: String) {
        condition.lock()
        counters.finished[reason, default: 0] += 1
        condition.unlock()
    }

    /// Stops a request (its client went away): it ends with reason `cancelled` before the next step.
    public func cancel(_ id: Int) {
        condition.lock()
        cancelled.insert(id)
        condition.signal()
        condition.unlock()
    }

    /// Ends the engine: waiting and running requests fail.
    public func shutdown() {
        condition.lock()
        running = false
        condition.signal()
        condition.unlock()
    }

    /// The engine's counters now.
    public var snapshot: Snapshot {
        condition.lock()
        defer { condition.unlock() }
        var s = counters
        s.queued = queue.count
        s.active = active.count
        return s
    }

    // MARK: - The loop

    private func loop() {
        while true {
            condition.lock()
            while running && queue.isEmpty && active.isEmpty { condition.wait() }
            if !running {
                let all = active + queue
                active = []
                queue = []
                condition.unlock()
                for s in all { s.onEvent(.failed("the engine has stopped")) }
                return
            }
            for s in (active + queue) where cancelled.contains(s.id) { s.cancelled = true }
            let ended = (active + queue).filter(\.cancelled)
            active.removeAll(where: \.cancelled)
            queue.removeAll(where: \.cancelled)
            cancelled.removeAll()
            while active.count < configuration.maxSequences, !queue.isEmpty { active.append(queue.removeFirst()) }
            let work = active
            condition.unlock()
            for s in ended { s.finish("cancelled") }
            step(work)
            condition.lock()
            active.removeAll(where: \.done)
            counters.kvCacheBytes = active.reduce(0) { $0 + $1.cache.byteCount }
            condition.unlock()
        }
    }

    /// One step: each sequence's next rows (its last token, or its prompt's next chunk within
    /// the step budget), a forward pass per group of passes that can share one (the same
    /// routing; an SCMoE request's weak pass is a pass of its own kind), then sampling.
    private func step(_ work: [Sequence]) {
        var budget = configuration.stepTokens
        var rows: [(Sequence, [Int])] = []
        for s in work where !s.done && s.prefilled == s.request.promptIDs.count {
            rows.append((s, [s.lastToken]))
            budget -= 1
        }
        for s in work where !s.done && s.prefilled < s.request.promptIDs.count {
            let n = min(s.request.promptIDs.count - s.prefilled, max(budget, rows.isEmpty ? 1 : 0))
            guard n > 0 else { continue }
            rows.append((s, Array(s.request.promptIDs[s.prefilled..<(s.prefilled + n)])))
            budget -= n
        }
        // Passes: (sequence, its rows, weak?). All share one forward pass, each routed its own
        // way; a model whose routers choose across tokens runs one pass per sequence.
        var groups: [[(Sequence, [Int], Bool)]] = []
        for (s, tokens) in rows {
            var passes = [(s, tokens, false)]
            if s.request.selfContrast != nil { passes.append((s, tokens, true)) }
            if batchesAcrossSequences, !groups.isEmpty { groups[0] += passes } else { groups += passes.map { [$0] } }
        }
        var strong: [Int: [Float]] = [:], weak: [Int: [Float]] = [:], experts: [Int: [Int: [Int]]] = [:]
        var load: [Int: [Int]] = [:]
        for group in groups {
            run(group, strong: &strong, weak: &weak, experts: &experts, load: &load)
        }
        var prompt = 0, sampling: [Sequence] = []
        for (s, tokens) in rows where !s.done {
            if s.prefilled < s.request.promptIDs.count {
                s.prefilled += tokens.count
                prompt += tokens.count
                if s.prefilled < s.request.promptIDs.count { continue }
            }
            sampling.append(s)
        }
        // Counters first, so they are current when a request's end is reported.
        record(prompt: prompt, generated: sampling.count, load: load)
        for s in sampling {
            guard var logits = strong[s.id] else { continue }
            if let contrast = s.request.selfContrast, let w = weak[s.id] {
                logits = logits.withUnsafeBufferPointer { st in w.withUnsafeBufferPointer { contrast.scores(strong: st, weak: $0) } }
            }
            logits.withUnsafeBufferPointer { s.take($0, experts: experts[s.id]) }
        }
        condition.lock()
        counters.steps += 1
        condition.unlock()
    }

    /// One forward pass over `passes`, each continuing its sequence's strong or weak cache;
    /// leaves each pass's last-row logits in `strong` or `weak` by sequence id.
    private func run(_ passes: [(Sequence, [Int], Bool)], strong: inout [Int: [Float]], weak: inout [Int: [Float]],
                     experts: inout [Int: [Int: [Int]]], load: inout [Int: [Int]]) {
        var caches: [KVCache] = []
        for (s, _, isWeak) in passes {
            if isWeak {
                caches.append(s.weakCache ?? model.makeCache(capacity: s.request.promptIDs.count + 64))
                s.weakCache = .placeholder
            } else {
                caches.append(s.cache)
                s.cache = .placeholder
            }
        }
        // The rows of each pass; the strong passes' rows count towards the experts' load.
        var ranges: [Range<Int>] = [], row = 0
        for (_, tokens, _) in passes { ranges.append(row..<(row + tokens.count)); row += tokens.count }
        let strongRows = zip(passes, ranges).filter { !$0.0.2 }.map(\.1)
        var traced: [Int: [[Int]]] = [:], counted: [Int: [Int]] = [:]
        var options = ForwardOptions()
        options.trace = { layer, routing in
            traced[layer] = ranges.map { Array(routing.experts(of: $0.upperBound - 1)) }
            var counts = [Int](repeating: 0, count: routing.expertCount)
            for r in strongRows { for t in r { for e in routing.experts(of: t) where e >= 0 && e < counts.count { counts[e] += 1 } } }
            counted[layer] = counts
        }
        let perSequence = passes.map { $0.2 ? ($0.0.weakForward ?? ForwardOptions()) : $0.0.forward }
        let logits: Tensor
        do {
            logits = try model.forward(batch: passes.map(\.1), caches: &caches, lastOnly: true, options: options,
                                       sequenceOptions: perSequence)
        } catch {
            for (i, (s, _, isWeak)) in passes.enumerated() {
                if isWeak { s.weakCache = caches[i] } else { s.cache = caches[i] }
                s.fail(error.description)
            }
            return
        }
        let v = model.spec.vocabSize
        for (i, (s, _, isWeak)) in passes.enumerated() {
            let values = Array(logits.floats[(i * v)..<((i + 1) * v)])
            if isWeak {
                s.weakCache = caches[i]
                weak[s.id] = values
            } else {
                s.cache = caches[i]
                strong[s.id] = values
                if s.request.returnRouting { experts[s.id] = traced.mapValues { $0[i] } }
            }
        }
        for (layer, counts) in counted {
            var total = load[layer] ?? [Int](repeating: 0, count: counts.count)
            for e in 0..<min(total.count, counts.count) { total[e] += counts[e] }
            load[layer] = total
        }
    }

    private func record(prompt: Int, generated: Int, load: [Int: [Int]]) {
        condition.lock()
        counters.promptTokens += prompt
        counters.generatedTokens += generated
        for (layer, counts) in load {
            var total = counters.expertLoad[layer] ?? [Int](repeating: 0, count: counts.count)
            for e in 0..<min(total.count, counts.count) { total[e] += counts[e] }
            counters.expertLoad[layer] = total
        }
        condition.unlock()
    }

}

// MARK: - A sequence

extension BatchEngine {
    /// One request's state: its cache, how much of its prompt ran, its sampler and its text.
    final class Sequence: @unchecked Sendable {
        let id: Int
        let request: BatchRequest
        let forward: ForwardOptions
        let weakForward: ForwardOptions?
        let onEvent: @Sendable (BatchEvent) -> Void
        var cache: KVCache
        /// The SCMoE weak pass's cache (made at its first pass).
        var weakCache: KVCache?
        var stream: TextStream
        var sampler: Sampler
        var prefilled = 0
        var lastToken = 0
        var done = false
        var cancelled = false
        let submitted = DispatchTime.now().uptimeNanoseconds
        var firstToken: UInt64?

        init(id: Int, request: BatchRequest, forward: ForwardOptions, weakForward: ForwardOptions?,
             onEvent: @escaping @Sendable (BatchEvent) -> Void, cache: KVCache, stream: TextStream) {
            self.id = id
            self.request = request
            self.forward = forward
            self.weakForward = weakForward
            self.onEvent = onEvent
            self.cache = cache
            self.stream = stream
            sampler = Sampler(request.sampling)
        }

        /// Samples the next token from its logits, reports it, and ends the request when it stops.
        func take(_ logits: UnsafeBufferPointer<Float>, experts: [Int: [Int]]?) {
            let next = sampler.sample(logits)
            if firstToken == nil { firstToken = DispatchTime.now().uptimeNanoseconds }
            var chosen: TokenLogprob? = nil, alternatives: [TokenLogprob] = []
            if let n = request.logprobs { (chosen, alternatives) = Self.logprobs(logits, chosen: next, top: n) }
            let piece = stream.push(next)
            switch stream.stopReason {
            case nil:
                onEvent(.token(id: next, text: piece, logprob: chosen, alternatives: alternatives, experts: experts))
            case .stopString? where !piece.isEmpty:
                // The token that completed a stop string shows only if text before the stop came with it.
                onEvent(.token(id: next, text: piece, logprob: chosen, alternatives: alternatives, experts: experts))
            default:
                // An end-of-sequence token, or one wholly inside the stop string: no token of the answer.
                if !piece.isEmpty { onEvent(.token(id: next, text: piece, logprob: nil, alternatives: [], experts: nil)) }
            }
            lastToken = next
            if let reason = stream.stopReason {
                finish(reason.rawValue)
            } else if stream.ids.count >= request.maxTokens {
                let rest = stream.finish(.maxTokens)
                if !rest.isEmpty { onEvent(.token(id: next, text: rest, logprob: nil, alternatives: [], experts: nil)) }
                finish("max_tokens")
            }
        }

        func finish(_ reason: String) {
            guard !done else { return }
            done = true
            let now = DispatchTime.now().uptimeNanoseconds
            onEvent(.finished(BatchFinish(reason: reason, promptTokens: request.promptIDs.count, completionTokens: stream.ids.count,
                                          text: stream.text,
                                          timeToFirstToken: Double((firstToken ?? now) - submitted) / 1e9,
                                          decodeSeconds: Double(now - (firstToken ?? now)) / 1e9)))
        }

        func fail(_ message: String) {
            guard !done else { return }
            done = true
            onEvent(.failed(message))
        }

        /// The chosen token's log-probability and the `top` most likely ones (log-softmax).
        static func logprobs(_ logits: UnsafeBufferPointer<Float>, chosen: Int, top: Int) -> (TokenLogprob, [TokenLogprob]) {
            var maxLogit = -Float.infinity
            for x in logits { maxLogit = max(maxLogit, x) }
            var sum: Double = 0
            for x in logits { sum += Double(Foundation.exp(x - maxLogit)) }
            let lse = maxLogit + Float(Foundation.log(sum))
            var best: [TokenLogprob] = []
            if top > 0 {
                for (i, x) in logits.enumerated() where best.count < top || x > best[best.count - 1].logprob {
                    let entry = TokenLogprob(id: i, logprob: x)
                    let at = best.firstIndex { $0.logprob < x } ?? best.count
                    best.insert(entry, at: at)
                    if best.count > top { best.removeLast() }
                }
            }
            return (TokenLogprob(id: chosen, logprob: logits[chosen] - lse), best.map { TokenLogprob(id: $0.id, logprob: $0.logprob - lse) })
        }
    }
}

