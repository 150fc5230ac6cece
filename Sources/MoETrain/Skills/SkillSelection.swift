import Foundation
import MoECore
import MoEModels

/// K-shot selection and parameter-space composition of a skill library's LoRA adapters ("Leveraging
/// Open Knowledge": choose experts by their K-shot performance and diversity; PSEC: compose skills
/// as a weighted sum of their parameters).
public enum SkillSelection {
    /// Scores adapters on K examples: the mean negative log-likelihood of the answer tokens
    /// (`InstructionCorpus`: conversations through the base's chat template, or prompt and
    /// completion lines) under the base with the adapters folded in.
    public struct Scorer: Sendable {
        public let base: String
        public let examples: [InstructionCorpus.Example]
        let pool: ThreadPool

        public init(base: String, shots: String, chatTemplate: String? = nil, pool: ThreadPool = .shared) throws {
            let (_, spec) = try DecoderModel.weightSource(path: base)
            let tokenizer = try Trainer.checkpointTokenizer(of: base, spec: spec)
            let chat = try ChatFormat.of(model: base, templateFile: chatTemplate)
            examples = try InstructionCorpus(paths: [shots], tokenizer: tokenizer, chat: chat).examples
            self.base = base
            self.pool = pool
        }

        /// The mean answer-token NLL with `adapters` (adapter folders, applied in order).
        public func loss(adapters: [String]) throws -> Double {
            let model = try DecoderModel(path: base, adapters: adapters, pool: pool)
            var total = 0.0, count = 0
            for e in examples where e.ids.count > 1 {
                var cache = model.makeCache(capacity: e.ids.count)
                let logits = try model.forward(e.ids, cache: &cache).toFloats(), v = model.spec.vocabSize
                for p in 0..<(e.ids.count - 1) where e.answer[p + 1] {
                    let row = logits[(p * v)..<((p + 1) * v)], mx = row.max() ?? 0
                    let lse = Double(mx) + Foundation.log(row.reduce(0.0) { $0 + Foundation.exp(Double($1 - mx)) })
                    total += lse - Double(row[row.startIndex + e.ids[p + 1]])
                    count += 1
                }
            }
            return count == 0 ? .nan : total / Double(count)
        }
    }

    /// One adapter's K-shot loss, and (once chosen) how close it is to those chosen before it.
    public struct Ranked: Codable, Sendable {
        public var name: String
        public var loss: Double
        /// The largest cosine similarity of its ΔW to an adapter chosen before it (nil: not chosen).
        public var similarity: Double?
    }

    /// Ranks every skill of `library` trained on the scorer's base by K-shot loss (best first),
    /// then chooses `k` greedily by loss minus `diversity` times the largest cosine similarity
    /// of its weight deltas to those already chosen. Returns the ranking, the choice in order,
    /// and the base's own loss.
    public static func select(library: SkillLibrary, scorer: Scorer, k: Int, diversity: Double) throws
        -> (ranking: [Ranked], chosen: [Ranked], baseLoss: Double) {
        let skills = try library.skills(for: scorer.base)
        guard !skills.isEmpty else { throw ModelError.io(path: library.path, reason: "no skill in the library was trained on \(scorer.base)") }
        var ranking: [Ranked] = []
        for s in skills { ranking.append(Ranked(name: s.name, loss: try scorer.loss(adapters: [library.folder(of: s.name)]))) }
        ranking.sort { $0.loss < $1.loss }
        let adapters = try Dictionary(uniqueKeysWithValues: skills.map { ($0.name, try LoRAAdapterFolder(path: library.folder(of: $0.name))) })
        var chosen: [Ranked] = [], left = ranking
        while chosen.count < min(k, ranking.count) {
            let scored = left.map { r -> (Ranked, Double) in
                let sim = chosen.map { similarity(adapters[$0.name]!, adapters[r.name]!) }.max()
                return (Ranked(name: r.name, loss: r.loss, similarity: sim), -r.loss - diversity * (sim ?? 0))
            }
            guard let best = scored.max(by: { $0.1 < $1.1 }) else { break }
            chosen.append(best.0)
            left.removeAll { $0.name == best.0.name }
        }
        return (ranking, chosen, try scorer.loss(adapters: []))
    }

    /// The cosine similarity of two adapters' weight deltas Σ_m s B_m A_m (flattened over the
    /// modules), from A and B alone: ⟨B1 A1, B2 A2⟩ = Σ (B1ᵀ B2) ⊙ (A1 A2ᵀ). Adapters on stacked
    /// expert tensors (`target_parameters`) do not count.
    public static func similarity(_ x: LoRAAdapterFolder, _ y: LoRAAdapterFolder) -> Double {
        func dot(_ p: LoRAAdapterFolder, _ q: LoRAAdapterFolder) -> Double {
            var total = 0.0
            for (name, m) in p.modules {
                guard let n = q.modules[name], m.a.shape[1] == n.a.shape[1], m.b.shape[0] == n.b.shape[0] else { continue }
                let (a1, b1, a2, b2) = (m.a.toFloats(), m.b.toFloats(), n.a.toFloats(), n.b.toFloats())
                let (r1, r2, k, o) = (m.a.shape[0], n.a.shape[0], m.a.shape[1], m.b.shape[0])
                var sum = 0.0
                for i in 0..<r1 {
                    for j in 0..<r2 {
                        var bb = 0.0, aa = 0.0
                        for row in 0..<o { bb += Double(b1[row * r1 + i]) * Double(b2[row * r2 + j]) }
                        for c in 0..<k { aa += Double(a1[i * k + c]) * Double(a2[j * k + c]) }
                        sum += bb * aa
                    }
                }
                total += Double(m.scale) * Double(n.scale) * sum
            }
            return total
        }
        let norms = (dot(x, x) * dot(y, y)).squareRoot()
        return norms > 0 ? dot(x, y) / norms : 0
    }

    /// Writes to `out` one PEFT adapter whose delta is Σ_i weights[i] · ΔW_i of `adapters`
    /// (plain LoRA): per module, A stacks the A_i and B the w_i s_i B_i side by side, a rank of
    /// Σ r_i with scale 1 (`rank_pattern` and `alpha_pattern` per module), so the sum is exact.
    public static func compose(_ adapters: [LoRAAdapterFolder], weights: [Double], base: String?, to out: String) throws(ModelError) {
        let c = try composition(adapters, weights: weights) { _ in true }
        try LoRAModules.writePEFTFolder(out, config: ["r": c.patterns.values.max() ?? 1, "lora_alpha": c.patterns.values.max() ?? 1,
                                                      "rank_pattern": c.patterns, "alpha_pattern": c.patterns,
                                                      "target_modules": c.patterns.keys.sorted()], base: base, tensors: c.tensors)
    }

    /// `compose`'s tensors for the modules `include` admits, and each module's rank (its alpha
    /// too: scale 1).
    static func composition(_ adapters: [LoRAAdapterFolder], weights: [Double], include: (String) -> Bool)
        throws(ModelError) -> (tensors: [(name: String, tensor: Tensor)], patterns: [String: Int]) {
        precondition(adapters.count == weights.count, "compose: one weight per adapter")
        if let mixed = adapters.first(where: { !$0.mixtures.isEmpty }) {
            throw .invalidFile(path: mixed.path, field: "peft_type", reason: "is MIXLORA: a mixture's router does not add in parameter space")
        }
        if let stacked = adapters.first(where: { !$0.stacked.isEmpty }) {
            throw .invalidFile(path: stacked.path, field: "target_parameters", reason: "adapters on stacked expert tensors are not composed yet")
        }
        var modules: [String: (a: [Float], b: [[Float]], rank: Int, inputs: Int, outputs: Int)] = [:]
        for (adapter, w) in zip(adapters, weights) {
            for (name, m) in adapter.modules.sorted(by: { $0.key < $1.key }) where include(name) {
                guard !m.isEmbedding else { throw .invalidFile(path: adapter.path, field: name, reason: "embedding adapters are not composed") }
                let (r, k, o) = (m.a.shape[0], m.a.shape[1], m.b.shape[0])
                var entry = modules[name] ?? ([], Array(repeating: [], count: o), 0, k, o)
                guard entry.inputs == k, entry.outputs == o else {
                    throw .invalidFile(path: adapter.path, field: name, reason: "A \(m.a.shape) and B \(m.b.shape) differ in shape from another adapter's")
                }
                entry.a += m.a.toFloats()
                let b = m.b.toFloats(), f = Float(w) * m.scale
                for row in 0..<o { entry.b[row] += (0..<r).map { f * b[row * r + $0] } }
                entry.rank += r
                modules[name] = entry
            }
        }
        var patterns: [String: Int] = [:], tensors: [(name: String, tensor: Tensor)] = []
        for (name, m) in modules.sorted(by: { $0.key < $1.key }) {
            patterns[name] = m.rank
            tensors.append(("base_model.model.\(name).lora_A.weight", Tensor(shape: [m.rank, m.inputs], values: m.a)))
            tensors.append(("base_model.model.\(name).lora_B.weight", Tensor(shape: [m.outputs, m.rank], values: m.b.flatMap { $0 })))
        }
        return (tensors, patterns)
    }

    /// Weights for `compose` searched on the K shots: coordinate descent from all 1, each weight
    /// tried at 0, 0.25, ..., 1.5 in turn, two passes; returns the weights and their loss.
    public static func searchWeights(_ adapters: [LoRAAdapterFolder], scorer: Scorer, scratch: String) throws -> (weights: [Double], loss: Double) {
        var weights = [Double](repeating: 1, count: adapters.count)
        var trial = 0
        func loss(_ w: [Double]) throws -> Double {
            trial += 1
            let dir = (scratch as NSString).appendingPathComponent("trial-\(trial)")
            defer { try? FileManager.default.removeItem(atPath: dir) }
            try compose(adapters, weights: w, base: scorer.base, to: dir)
            return try scorer.loss(adapters: [dir])
        }
        var best = try loss(weights)
        for _ in 0..<2 {
            for i in weights.indices {
                for candidate in stride(from: 0.0, through: 1.5, by: 0.25) where candidate != weights[i] {
                    var w = weights
                    w[i] = candidate
                    let l = try loss(w)
                    if l < best { (best, weights) = (l, w) }
                }
            }
        }
        return (weights, best)
    }
}
