import Foundation
import MoE
import MoECore

// Dimension legend: B sequences, T tokens each, d hidden, H heads, G kv heads, D head dim,
// E experts, I expert size, V vocabulary.

/// A decoder-only MoE transformer to train, laid out as Mixtral (so transformers loads what it
/// saves whenever the router is Mixtral's): embedding, per layer RMSNorm, GQA attention with
/// RoPE, residual, RMSNorm, MoE of SwiGLU experts, residual; RMSNorm and the LM head.
public final class TrainableDecoder: @unchecked Sendable {
    /// The shape.
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

    /// One layer's parameters.
    public struct Layer {
        public var inputNorm: Variable, wq: Variable, wk: Variable, wv: Variable, wo: Variable, postNorm: Variable
        public var moe: MoEParameters
        /// DeepSeek-V3's selection bias for this layer (`topk-sigmoid` with sigmoid scores only):
        /// not a parameter, it moves by the load rule between steps (`Trainer`).
        public var routerBias: [Float]? = nil
        var all: [Variable] { [inputNorm, wq, wk, wv, wo, postNorm] + moe.all }
    }

    public let shape: Shape
    public var router: any Router
    public var embed: Variable, finalNorm: Variable, lmHead: Variable
    public var layers: [Layer]
    /// RMoE's GRU cell, shared by every layer's router (`recurrent` router only).
    public var routerCell: GRUParameters?
    let rope: RotaryEmbedding

    /// A model with weights drawn from `seed`: N(0, 0.02)-like uniform for matrices (the output
    /// projections scaled down by sqrt(2 layers), as GPT-2 does), norms 1.
    public init(shape s: Shape, router: any Router, seed: UInt64) {
        precondition(router.expertCount == s.experts && router.logitCount >= s.experts, "router does not fit \(s.experts) experts")
        shape = s
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
        rope = RotaryEmbedding(headDim: hd, base: s.ropeTheta, layout: .rotateHalf)
    }

    /// The router as layer `layer` routes: with its own selection bias, if it has one.
    func router(of layer: Layer) -> any Router {
        guard let bias = layer.routerBias, let r = router as? TopKSigmoidRouter else { return router }
        return r.withBias(bias)
    }

    /// `replica()`: every parameter behind a new variable over the same value tensor.
    init(replicating m: TrainableDecoder) {
        func v(_ x: Variable) -> Variable { Variable(x.value, requiresGrad: x.requiresGrad) }
        shape = m.shape
        router = m.router
        embed = v(m.embed)
        finalNorm = v(m.finalNorm)
        lmHead = v(m.lmHead)
        layers = m.layers.map { l in
            Layer(inputNorm: v(l.inputNorm), wq: v(l.wq), wk: v(l.wk), wv: v(l.wv), wo: v(l.wo), postNorm: v(l.postNorm),
                  moe: l.moe.replica(v), routerBias: l.routerBias)
        }
        routerCell = m.routerCell.map { c in
            GRUParameters(weightI: c.weightI.map(v), weightH: c.weightH.map(v), biasI: c.biasI.map(v), biasH: c.biasH.map(v))
        }
        rope = m.rope
    }

    /// Every parameter, with whether weight decay applies (matrices yes; norms no).
    public var parameters: [(variable: Variable, decay: Bool)] {
        var out: [(Variable, Bool)] = [(embed, true), (finalNorm, false), (lmHead, true)]
        for l in layers {
            out += [(l.inputNorm, false), (l.wq, true), (l.wk, true), (l.wv, true), (l.wo, true), (l.postNorm, false)]
            out += l.moe.all.map { ($0, true) }
        }
        if let c = routerCell { out += (c.weightI + c.weightH).map { ($0, true) } + (c.biasI + c.biasH).map { ($0, false) } }
        return out
    }

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
        let s = shape, t = sequences.first?.count ?? 0, b = sequences.count, hd = s.headDim
        precondition(sequences.allSatisfy { $0.count == t } && targets.count == b, "forward: B sequences of equal length")
        let angles = rope.angles(for: (0..<b).flatMap { _ in Array(0..<t) })  // every layer's q and k
        var x = tape.embedding(embed, ids: sequences.flatMap { $0 })
        var auxTotal: Float = 0
        var routings: [Routing] = []
        var routerState: Variable?  // RMoE's GRU state, carried from layer to layer
        for (index, layer) in layers.enumerated() {
            let h = tape.rmsNorm(x, weight: layer.inputNorm, eps: s.rmsNormEps)
            let qkv = tape.linears(h, [layer.wq, layer.wk, layer.wv])
            let q = tape.rope(tape.reshape(qkv[0], [b * t, s.heads, hd]), angles: angles, rope)
            let k = tape.rope(tape.reshape(qkv[1], [b * t, s.kvHeads, hd]), angles: angles, rope)
            let v = tape.reshape(qkv[2], [b * t, s.kvHeads, hd])
            let a = tape.causalAttention(q: q, k: k, v: v, scale: Float(1 / Double(hd).squareRoot()), segment: t)
            x = tape.add(x, tape.linear(a, layer.wo))
            let h2 = tape.rmsNorm(x, weight: layer.postNorm, eps: s.rmsNormEps)
            let logits: Variable
            switch layer.moe.router {
            case let .linear(w):
                logits = tape.linear(h2, w)
            case let .recurrent(input, output):
                guard let cell = routerCell else { preconditionFailure("a recurrent router needs the model's GRU cell") }
                let state = tape.gruCell(tape.linear(h2, input), state: routerState, cell)
                routerState = state
                logits = tape.linear(state, output)
            }
            let step = tape.moe(h2, logits: logits, layer.moe, router: router(of: layer), aux: aux,
                                batch: shard.map { ($0, index) })
            auxTotal += step.auxLoss
            routings.append(step.routing)
            x = tape.add(x, step.output)
        }
        let logits = tape.linear(tape.rmsNorm(x, weight: finalNorm, eps: s.rmsNormEps), lmHead)
        let loss = tape.crossEntropy(logits, targets: targets.flatMap { $0 })
        return Output(loss: loss, logits: logits, auxLoss: auxTotal, routings: routings)
    }
}

extension Double {
    var floatValue: Float { Float(self) }
}
