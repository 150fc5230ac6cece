import Foundation
import MoE
import MoEDistributed
import MoECore
import MoEModels

// Dimension legend: B sequences, T tokens each, d hidden, H heads, G kv heads, D head dim,
// E experts, I expert size, V vocabulary.

/// A decoder-only transformer to train, built from the same `DecoderSpec` the inference model
/// runs: embedding, per layer RMSNorm, GQA attention with RoPE (whole or partial heads,
/// biases, QK-norm per head or whole, `clip_qkv`), residual, RMSNorm, a dense SwiGLU FFN or an
/// MoE of SwiGLU experts (plus shared experts, gated or not), residual; RMSNorm and the LM
/// head. A fresh model (`init(shape:router:seed:)`) is laid out as Mixtral; a checkpoint of any
/// family with grouped-query attention trains from its weights (`init(directory:router:)`).
public final class TrainableDecoder: @unchecked Sendable {
    /// The shape of a fresh model.
    public struct Shape: Codable, Sendable, Equatable {
        public var vocabSize: Int, hiddenSize: Int, layers: Int, heads: Int, kvHeads: Int
        public var experts: Int, expertSize: Int
        public var ropeTheta: Double = 10_000
        public var rmsNormEps: Float = 1e-6
        public init(vocabSize: Int, hiddenSize: Int, layers: Int, heads: Int, kvHeads: Int, experts: Int, expertSize: Int) {
            self.vocabSize = vocabSize
            self.hiddenSize = hiddenSize
            self.layers = layers
            self.heads = heads
            self.kvHeads = kvHeads
            self.experts = experts
            self.expertSize = expertSize
        }
        public var headDim: Int { hiddenSize / heads }
    }

    /// A dense SwiGLU FFN, or a shared expert: gate and up [I, d], down [d, I], and Qwen2-MoE's
    /// sigmoid gate [1, d] on a shared expert.
    public struct FFNParameters {
        public var gate: Variable, up: Variable, down: Variable
        public var outputGate: Variable?
        var all: [Variable] { [gate, up, down] + (outputGate.map { [$0] } ?? []) }
    }

    /// Multi-head latent attention's parameters beyond the layer's wq, wk, wv, wo (DeepSeek).
    public struct LatentParameters {
        /// The q LoRA (`q_a_proj` [Rq, d] and its norm [Rq]), or nil for a plain q projection.
        public var qA: Variable?, qANorm: Variable?
        /// The norm of the kv latent [Rkv].
        public var kvANorm: Variable
        var all: [(variable: Variable, decay: Bool)] {
            (qA.map { [($0, true)] } ?? []) + (qANorm.map { [($0, false)] } ?? []) + [(kvANorm, false)]
        }
    }

    /// One layer's parameters. Under multi-head latent attention (`latent` set) the attention
    /// projections are DeepSeek's: wq is `q_b_proj` (or `q_proj`), wk `kv_a_proj_with_mqa`
    /// [Rkv + Dr, d], wv `kv_b_proj` [H (Dn + Dv), Rkv], wo `o_proj` [d, H Dv].
    public struct Layer {
        public var inputNorm: Variable, wq: Variable, wk: Variable, wv: Variable, wo: Variable, postNorm: Variable
        /// Attention biases (nil where the family has none) and QK-norm weights.
        public var bq: Variable? = nil, bk: Variable? = nil, bv: Variable? = nil, bo: Variable? = nil
        public var qNorm: Variable? = nil, kNorm: Variable? = nil
        /// GPT-OSS's attention sinks [H], or nil.
        public var sinks: Variable? = nil
        /// Multi-head latent attention's other parameters, or nil for grouped-query attention.
        public var latent: LatentParameters? = nil
        /// The MoE FFN, or nil on a dense layer.
        public var moe: MoEParameters?
        /// The dense FFN (a dense layer), and the shared expert (an MoE layer that has one).
        public var dense: FFNParameters? = nil
        public var shared: FFNParameters? = nil
        /// DeepSeek-V3's selection bias for this layer (`topk-sigmoid` with sigmoid scores only):
        /// not a parameter, it moves by the load rule between steps (`Trainer`).
        public var routerBias: [Float]? = nil

        /// Every parameter, with whether weight decay applies (matrices yes; norms and biases no).
        var all: [(variable: Variable, decay: Bool)] {
            var out: [(Variable, Bool)] = [(inputNorm, false), (wq, true), (wk, true), (wv, true), (wo, true), (postNorm, false)]
            out += [bq, bk, bv, bo, qNorm, kNorm, sinks].compactMap { $0.map { ($0, false) } }
            if let latent { out += latent.all }
            if let moe { out += moe.decayed }
            for f in [dense, shared].compactMap({ $0 }) { out += f.all.map { ($0, true) } }
            return out
        }
    }

    /// The decoder description: sizes, attention variants, FFN kinds and tensor names.
    public let spec: DecoderSpec
    /// The shape (a fresh model's, or the sizes read from a checkpoint).
    public let shape: Shape
    public var router: any Router
    public var embed: Variable, finalNorm: Variable, lmHead: Variable
    public var layers: [Layer]
    /// RMoE's GRU cell, shared by every layer's router (`recurrent` router only).
    public var routerCell: GRUParameters?
    let rope: RotaryEmbedding
    /// Trainable LoRA adapters on the frozen weights (`attachLoRA`), or nil.
    public internal(set) var lora: LoRAModules?
    /// The ranks whose MoE ops share this model's experts (expert parallelism: each runs 1/P of
    /// every layer's experts on the rows all ranks routed there), or nil: every expert runs here.
    public var expertParallel: (any Communicator)?
    /// Under `expertParallel`: every rank runs the same tokens, forward only (evaluation; see
    /// `ExpertParallelGroup.replicated`), rather than its own shard of a batch.
    public var expertParallelReplicated = false
    /// Under `expertParallel`: chunks each MoE op's all-to-alls are pipelined in (1: none).
    public var expertParallelChunks = 1
    /// What the MoE ops' row exchanges cost under `expertParallel`, added up over calls.
    public let expertExchange = ExchangeStatistics()
    /// The checkpoint's config.json, for a model loaded from one (saved again with its weights).
    public internal(set) var sourceConfig: [String: Any]? = nil

    /// A model with weights drawn from `seed`: N(0, 0.02)-like uniform for matrices (the output
    /// projections scaled down by sqrt(2 layers), as GPT-2 does), norms 1; Mixtral's layout.
    public init(shape s: Shape, router: any Router, seed: UInt64) {
        precondition(router.expertCount == s.experts && router.logitCount >= s.experts, "router does not fit \(s.experts) experts")
        shape = s
        spec = Self.mixtralSpec(s, topK: router.topK ?? 2)
        self.router = router
        var counter: UInt64 = 0
        func w(_ shape: [Int], scale: Float = 0.02) -> Variable {
            counter += 1
            let bound = scale * 3.0.squareRoot().floatValue  // uniform with std = scale
            return Variable(Tensor(randomUniform: shape, in: -bound...bound, seed: seed &* 7919 &+ counter))
        }
        func ones(_ n: Int) -> Variable { Variable(Tensor(shape: [n], values: [Float](repeating: 1, count: n))) }
        let d = s.hiddenSize, hd = s.headDim, residual = 0.02 / Float(2 * s.layers).squareRoot()
        let stateSize = (router as? RecurrentRouter)?.stateSize
        // RMoE's per-layer projections W1 [h, d] and W2 [L, h], or the usual W [L, d].
        func routerWeights() -> RouterParameters {
            guard let h = stateSize else { return .linear(w([router.logitCount, d])) }
            return .recurrent(input: w([h, d]), output: w([router.logitCount, h]))
        }
        embed = w([s.vocabSize, d])
        finalNorm = ones(d)
        lmHead = w([s.vocabSize, d])
        // Every layer starts from the router's configured bias (zeros when it has none).
        let sigmoidRouter = (router as? TopKSigmoidRouter).flatMap { $0.scoring == .sigmoid ? $0 : nil }
        let startBias = sigmoidRouter.map { $0.bias ?? [Float](repeating: 0, count: s.experts) }
        layers = (0..<s.layers).map { _ in
            Layer(inputNorm: ones(d), wq: w([s.heads * hd, d]), wk: w([s.kvHeads * hd, d]), wv: w([s.kvHeads * hd, d]),
                  wo: w([d, s.heads * hd], scale: residual), postNorm: ones(d),
                  moe: MoEParameters(router: routerWeights(), gate: (0..<s.experts).map { _ in w([s.expertSize, d]) },
                                     up: (0..<s.experts).map { _ in w([s.expertSize, d]) },
                                     down: (0..<s.experts).map { _ in w([d, s.expertSize], scale: residual) }),
                  routerBias: startBias)
        }
        routerCell = stateSize.map { h in
            // As RMoE initialises it: every tensor, biases too, drawn with std 0.02.
            GRUParameters(weightI: (0..<3).map { _ in w([h, h]) }, weightH: (0..<3).map { _ in w([h, h]) },
                          biasI: (0..<3).map { _ in w([h]) }, biasH: (0..<3).map { _ in w([h]) })
        }
        rope = spec.rotaryEmbedding
    }

    /// A model over given parameters (`init(directory:router:)`, `replica()`).
    init(spec: DecoderSpec, shape: Shape, router: any Router, embed: Variable, finalNorm: Variable, lmHead: Variable,
         layers: [Layer], routerCell: GRUParameters?, sourceConfig: [String: Any]?) {
        self.spec = spec
        self.shape = shape
        self.router = router
        self.embed = embed
        self.finalNorm = finalNorm
        self.lmHead = lmHead
        self.layers = layers
        self.routerCell = routerCell
        self.sourceConfig = sourceConfig
        rope = spec.rotaryEmbedding
    }

    /// The router as layer `layer` routes: with its own selection bias, if it has one.
    func router(of layer: Layer) -> any Router {
        guard let bias = layer.routerBias, let r = router as? TopKSigmoidRouter else { return router }
        return r.withBias(bias)
    }

    /// Every parameter, with whether weight decay applies (matrices yes; norms and biases no).
    public var parameters: [(variable: Variable, decay: Bool)] {
        var out: [(Variable, Bool)] = [(embed, true), (finalNorm, false)]
        if lmHead !== embed { out.append((lmHead, true)) }
        for l in layers { out += l.all }
        if let c = routerCell { out += (c.weightI + c.weightH).map { ($0, true) } + (c.biasI + c.biasH).map { ($0, false) } }
        if let lora { out += lora.parameters }
        return out
    }

    /// The parameters that train: all of them, or with LoRA adapters attached only the adapters'.
    public var trainableParameters: [(variable: Variable, decay: Bool)] { parameters.filter { $0.variable.requiresGrad } }

    /// What a forward pass gives.
    public struct Output {
        /// Mean cross-entropy over the targets (the tape's loss).
        public var loss: Variable
        /// Logits [B*T, V].
        public var logits: Variable
        /// Weighted auxiliary losses summed over layers (their gradients are applied inside).
        public var auxLoss: Float
        /// Each MoE layer's routing.
        public var routings: [Routing]
    }

    /// Forward pass over B sequences of T tokens (all the same length), recording onto `tape`.
    /// `targets` has one id per token (negative: ignored). With `shard` (one shard of a batch
    /// run on replicas), the MoE layers record their auxiliary statistics there and report no
    /// auxiliary loss of their own (`MoEBatchStatistics`).
    public func forward(_ sequences: [[Int]], targets: [[Int]], tape: Tape,
                        aux: AuxLossCoefficients = AuxLossCoefficients(loadBalance: 0.01, zLoss: 0.001),
                        shard: MoEBatchStatistics.Shard? = nil) -> Output {
        let s = spec, t = sequences.first?.count ?? 0, b = sequences.count
        precondition(sequences.allSatisfy { $0.count == t } && targets.count == b, "forward: B sequences of equal length")
        let angles = rope.angles(for: (0..<b).flatMap { _ in Array(0..<t) })  // every layer's q and k
        var x = tape.embedding(embed, ids: sequences.flatMap { $0 })
        var auxTotal: Float = 0
        var routings: [Routing] = []
        var routerState: Variable?  // RMoE's GRU state, carried from layer to layer
        for (index, layer) in layers.enumerated() {
            let h = tape.rmsNorm(x, weight: layer.inputNorm, eps: s.rmsNormEps)
            let a = attention(h, layer, index: index, tokens: b * t, segment: t, angles: angles, tape: tape)
            x = tape.add(x, project(a, layer.wo, bias: layer.bo, tape: tape))
            let h2 = tape.rmsNorm(x, weight: layer.postNorm, eps: s.rmsNormEps)
            var f: Variable
            if let moe = layer.moe {
                let logits: Variable
                switch moe.router {
                case let .linear(w):
                    logits = project(h2, w, bias: moe.routerBias, tape: tape)
                case let .recurrent(input, output):
                    guard let cell = routerCell else { preconditionFailure("a recurrent router needs the model's GRU cell") }
                    let state = tape.gruCell(tape.linear(h2, input), state: routerState, cell)
                    routerState = state
                    logits = tape.linear(state, output)
                }
                let group = expertParallel.flatMap { c in
                    ExpertShard(experts: moe.gate.count, ranks: c.size).map {
                        ExpertParallelGroup(communicator: c, shard: $0, statistics: expertExchange, replicated: expertParallelReplicated,
                                            chunks: expertParallelChunks)
                    }
                }
                let step = tape.moe(h2, logits: logits, moe, router: router(of: layer), aux: aux,
                                    batch: shard.map { ($0, index) }, adapters: lora?.experts(of: moe), expertParallel: group)
                auxTotal += step.auxLoss
                routings.append(step.routing)
                f = step.output
                if let shared = layer.shared { f = tape.add(f, swiglu(h2, shared, tape: tape)) }
            } else if let lora, let mixture = lora.mixtures[index] {  // MixLoRA / MoLE
                let step = mixture.forward(h2, lora: lora, tape: tape)
                auxTotal += step.auxLoss
                f = step.output
            } else if let dense = layer.dense {
                f = swiglu(h2, dense, tape: tape)
            } else {
                preconditionFailure("layer \(index) has neither an MoE nor a dense FFN")
            }
            x = tape.add(x, f)
        }
        let logits = project(tape.rmsNorm(x, weight: finalNorm, eps: s.rmsNormEps), lmHead, tape: tape)
        let loss = tape.crossEntropy(logits, targets: targets.flatMap { $0 })
        return Output(loss: loss, logits: logits, auxLoss: auxTotal, routings: routings)
    }

    /// Attention of one layer on h [B*T, d] (normed): q, k, v with their biases, QK-norm and
    /// clamping as the spec says, RoPE, causal attention within each sequence (and the layer's
    /// sliding window). Returns [B*T, H*D], before the output projection.
    func attention(_ h: Variable, _ layer: Layer, index: Int, tokens n: Int, segment: Int, angles: RotaryAngles,
                   tape: Tape) -> Variable {
        if let lat = layer.latent, let l = spec.latent {
            return latentAttention(h, layer, lat, l, tokens: n, segment: segment, angles: angles, tape: tape)
        }
        let s = spec, hd = s.headDim
        var qkv = projections(h, [layer.wq, layer.wk, layer.wv], tape: tape)
        for (i, bias) in [layer.bq, layer.bk, layer.bv].enumerated() { if let bias { qkv[i] = tape.addBias(qkv[i], bias) } }
        if s.qkNorm == .full, let qn = layer.qNorm, let kn = layer.kNorm {
            qkv[0] = tape.rmsNorm(qkv[0], weight: qn, eps: s.rmsNormEps)
            qkv[1] = tape.rmsNorm(qkv[1], weight: kn, eps: s.rmsNormEps)
        }
        var q = tape.reshape(qkv[0], [n, s.heads, hd]), k = tape.reshape(qkv[1], [n, s.kvHeads, hd])
        var v = tape.reshape(qkv[2], [n, s.kvHeads, hd])
        if s.qkNorm == .perHead, let qn = layer.qNorm, let kn = layer.kNorm {
            q = tape.rmsNorm(q, weight: qn, eps: s.rmsNormEps)
            k = tape.rmsNorm(k, weight: kn, eps: s.rmsNormEps)
        }
        if let c = s.clipQKV { (q, k, v) = (tape.clamp(q, c), tape.clamp(k, c), tape.clamp(v, c)) }
        q = tape.rope(q, angles: angles, rope)
        k = tape.rope(k, angles: angles, rope)
        return tape.causalAttention(q: q, k: k, v: v, scale: Float(1 / Double(hd).squareRoot()), segment: segment,
                                    window: s.slidingWindows[index], sinks: layer.sinks)
    }

    /// Multi-head latent attention (DeepSeek-V2/V3, as `LatentAttention` runs it) on h [B*T, d]:
    /// q = W_qb RMSNorm(W_qa h) split per head into nope and rope parts; [c ; k_rot] = W_kva h,
    /// [k_nope ; v] = W_kvb RMSNorm(c) per head; RoPE on the rope parts, k_rot shared by every
    /// head. Keys and values differ in width, so the narrower side is padded with zero columns
    /// for the attention op (zeros change no score and no output), and the output cut back to
    /// the values' width. Returns [B*T, H*Dv].
    func latentAttention(_ h: Variable, _ layer: Layer, _ lat: LatentParameters, _ l: DecoderSpec.Latent, tokens n: Int,
                         segment: Int, angles: RotaryAngles, tape: Tape) -> Variable {
        let heads = spec.heads, kd = l.nopeDim + l.ropeDim, eps = spec.rmsNormEps, width = max(kd, l.valueDim)
        var q = h
        if let qa = lat.qA, let qn = lat.qANorm { q = tape.rmsNorm(project(h, qa, tape: tape), weight: qn, eps: eps) }
        let qRows = tape.reshape(project(q, layer.wq, tape: tape), [n * heads, kd])
        let qRot = tape.rope(tape.reshape(tape.sliceColumns(qRows, l.nopeDim..<kd), [n, heads, l.ropeDim]), angles: angles, rope)
        let compressed = project(h, layer.wk, tape: tape)                                          // [n, Rkv + Dr]
        let latent = tape.rmsNorm(tape.sliceColumns(compressed, 0..<l.kvLoraRank), weight: lat.kvANorm, eps: eps)
        let kRot = tape.rope(tape.reshape(tape.sliceColumns(compressed, l.kvLoraRank..<(l.kvLoraRank + l.ropeDim)), [n, 1, l.ropeDim]),
                             angles: angles, rope)
        let expanded = tape.reshape(project(latent, layer.wv, tape: tape), [n * heads, l.nopeDim + l.valueDim])
        let keys = tape.concatColumns([tape.sliceColumns(expanded, 0..<l.nopeDim),
                                       tape.reshape(tape.tileColumns(tape.reshape(kRot, [n, l.ropeDim]), heads), [n * heads, l.ropeDim])])
        let queries = tape.concatColumns([tape.sliceColumns(qRows, 0..<l.nopeDim), tape.reshape(qRot, [n * heads, l.ropeDim])])
        let values = tape.sliceColumns(expanded, l.nopeDim..<(l.nopeDim + l.valueDim))
        func padded(_ x: Variable) -> Variable { tape.reshape(tape.padColumns(x, to: width), [n, heads, width]) }
        let a = tape.causalAttention(q: padded(queries), k: padded(keys), v: padded(values),
                                     scale: Float(spec.rope.deepseekSoftmaxScale / Double(kd).squareRoot()), segment: segment)
        return tape.reshape(tape.sliceColumns(tape.reshape(a, [n * heads, width]), 0..<l.valueDim), [n, heads * l.valueDim])
    }

    /// A SwiGLU FFN on x: down(silu(gate x) * up x), scaled by its sigmoid gate when it has one.
    func swiglu(_ x: Variable, _ f: FFNParameters, tape: Tape) -> Variable {
        let gu = projections(x, [f.gate, f.up], tape: tape)
        let y = project(tape.siluMul(gate: gu[0], up: gu[1]), f.down, tape: tape)
        guard let g = f.outputGate else { return y }
        return tape.sigmoidGate(y, project(x, g, tape: tape))
    }
}

extension Double {
    var floatValue: Float { Float(self) }
}
