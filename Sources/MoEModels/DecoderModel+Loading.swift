import Foundation
import MoE
import MoECore

// Dimension legend: d hidden, H heads, G kv heads, D head dim, E experts, I expert size.

/// Building the model's blocks from a checkpoint, by the names in `DecoderSpec.names`.
extension DecoderModel {
    static func loadAttention(_ ck: any WeightSource, _ s: DecoderSpec, layer i: Int, rope: RotaryEmbedding) throws(ModelError) -> Attention {
        let d = s.hiddenSize, hd = s.headDim, a = s.names.attention(i)
        let qNormShape = s.qkNorm == .full ? [s.heads * hd] : [hd]
        let kNormShape = s.qkNorm == .full ? [s.kvHeads * hd] : [hd]
        let wq = try ck.tensor("\(a).q_proj.weight", shape: [s.heads * hd, d])
        let wk = try ck.tensor("\(a).k_proj.weight", shape: [s.kvHeads * hd, d])
        let wv = try ck.tensor("\(a).v_proj.weight", shape: [s.kvHeads * hd, d])
        let wo = try ck.tensor("\(a).o_proj.weight", shape: [d, s.heads * hd])
        return Attention(
            wq: wq, wk: wk, wv: wv, wo: wo,
            bq: s.qkvBias ? try ck.tensor("\(a).q_proj.bias", shape: [s.heads * hd]) : nil,
            bk: s.qkvBias ? try ck.tensor("\(a).k_proj.bias", shape: [s.kvHeads * hd]) : nil,
            bv: s.qkvBias ? try ck.tensor("\(a).v_proj.bias", shape: [s.kvHeads * hd]) : nil,
            bo: s.outputBias ? try ck.tensor("\(a).o_proj.bias", shape: [d]) : nil,
            qNorm: s.qkNorm == .none ? nil : try ck.tensor("\(a).q_norm.weight", shape: qNormShape),
            kNorm: s.qkNorm == .none ? nil : try ck.tensor("\(a).k_norm.weight", shape: kNormShape),
            window: s.slidingWindows[i],
            sinks: s.attentionSinks ? try ck.tensor(s.names.sinks(i), shape: [s.heads]).toFloats() : nil,
            spec: s, rope: rope, qkvBytes: [wq, wk, wv].map(MatrixBytes.init), outputBytes: MatrixBytes(wo))
    }

    static func loadLatent(_ ck: any WeightSource, _ s: DecoderSpec, _ l: DecoderSpec.Latent, layer i: Int) throws(ModelError) -> LatentAttention {
        let d = s.hiddenSize, h = s.heads, kd = l.nopeDim + l.ropeDim, a = s.names.attention(i)
        let query: LatentAttention.QueryProjection
        if let rq = l.qLoraRank {
            query = .lowRank(a: try ck.tensor("\(a).q_a_proj.weight", shape: [rq, d]),
                             norm: try ck.tensor("\(a).q_a_layernorm.weight", shape: [rq]),
                             b: try ck.tensor("\(a).q_b_proj.weight", shape: [h * kd, rq]))
        } else {
            query = .full(try ck.tensor("\(a).q_proj.weight", shape: [h * kd, d]))
        }
        return LatentAttention(query: query,
                               kvA: try ck.tensor("\(a).kv_a_proj_with_mqa.weight", shape: [l.kvLoraRank + l.ropeDim, d]),
                               kvANorm: try ck.tensor("\(a).kv_a_layernorm.weight", shape: [l.kvLoraRank]),
                               kvB: try ck.tensor("\(a).kv_b_proj.weight", shape: [h * (l.nopeDim + l.valueDim), l.kvLoraRank]),
                               o: try ck.tensor("\(a).o_proj.weight", shape: [d, h * l.valueDim]),
                               heads: h, nope: l.nopeDim, ropeDim: l.ropeDim, valueDim: l.valueDim, kvRank: l.kvLoraRank,
                               eps: s.rmsNormEps, scale: Float(s.rope.deepseekSoftmaxScale / Double(kd).squareRoot()),
                               rope: s.rotary)
    }

    /// RMoE's GRU cell, shared by every layer, when config.json's `moekit_router` is `recurrent`.
    static func loadRecurrentCell(_ ck: any WeightSource, _ s: DecoderSpec) throws(ModelError) -> GRUCell? {
        guard let override = s.routerOverride,
              let r = try routerOrThrow(override, experts: s.experts, path: ck.configPath) as? RecurrentRouter else { return nil }
        return try RecurrentRouterWeights.loadCell(ck, stateSize: r.stateSize)
    }

    /// The router layer i of checkpoint `ck` routes with: the config's override, or the family's
    /// own, with the layer's selection bias when the checkpoint stores one.
    public static func router(_ ck: any WeightSource, _ s: DecoderSpec, layer i: Int) throws(ModelError) -> any Router {
        let bias = try ck.optionalTensor(s.names.correctionBias(i), shape: [s.experts])?.toFloats()
        if let override = s.routerOverride {
            let router = try routerOrThrow(override, experts: s.experts, path: ck.configPath)
            // A trained DeepSeek-V3-style router keeps one selection bias per layer.
            if let sigmoid = router as? TopKSigmoidRouter, sigmoid.scoring == .sigmoid, let bias { return sigmoid.withBias(bias) }
            return router
        }
        switch s.routerKind {
        case .softmaxTopK:
            return TopKSoftmaxRouter(experts: s.experts, k: s.topK, renormalize: s.normTopKProb)
        case .deepseekV3:
            return TopKSigmoidRouter(experts: s.experts, k: s.topK, scoring: .sigmoid, bias: bias, groups: s.groups,
                                     topkGroup: s.topkGroup, groupScore: .sumTop2, renormalize: s.normTopKProb,
                                     routedScaling: s.routedScaling)
        case .deepseekV2:
            return TopKSigmoidRouter(experts: s.experts, k: s.topK, scoring: .softmax, groups: s.groups,
                                     topkGroup: s.topkGroup, groupScore: .max, renormalize: false,
                                     routedScaling: s.routedScaling)
        }
    }

    static func loadMoE(_ ck: any WeightSource, _ s: DecoderSpec, layer i: Int, recurrentCell: GRUCell?) throws(ModelError) -> MoELayer {
        let d = s.hiddenSize, inner = s.expertIntermediate, n = s.names
        var shared: SharedExpert?
        let sharedWidth = s.sharedExperts > 0 ? s.sharedExperts * inner : (s.sharedExpertIntermediate ?? 0)
        if sharedWidth > 0 {
            let m = n.sharedExpert(i)
            shared = SharedExpert(gate: try ck.tensor("\(m).gate_proj.weight", shape: [sharedWidth, d]),
                                  up: try ck.tensor("\(m).up_proj.weight", shape: [sharedWidth, d]),
                                  down: try ck.tensor("\(m).down_proj.weight", shape: [d, sharedWidth]),
                                  outputGate: s.sharedExpertGate ? try ck.tensor(n.sharedExpertGate(i), shape: [1, d]) : nil)
        }
        let router = try router(ck, s, layer: i)
        let gate: RouterGate
        if let cell = recurrentCell {
            let h = cell.hiddenSize, prefix = n.moe(i)
            gate = .recurrent(RecurrentGate(
                inputProjection: try ck.tensor(RecurrentRouterWeights.inputProjection(prefix), shape: [h, d]),
                outputProjection: try ck.tensor(RecurrentRouterWeights.outputProjection(prefix), shape: [router.logitCount, h]),
                cell: cell))
        } else {
            gate = .linear(weight: try ck.tensor(n.routerWeight(i), shape: [router.logitCount, d]),
                           bias: s.routerBias ? try ck.tensor(n.routerBias(i), shape: [router.logitCount]) : nil)
        }
        let experts: any ExpertFFN
        if let coded = try loadTernaryExperts(ck, s, layer: i) { experts = coded } else { experts = try loadExperts(ck, s, layer: i) }
        return MoELayer(gate: gate, router: router, experts: experts, shared: shared)
    }

    // MARK: - Sanitize: every stored expert layout to the one in memory

    /// Layer i's routed experts in the one in-memory layout (per expert: gate and up [I, d],
    /// down [d, I], in the stored dtype), from whichever layout the checkpoint stores:
    /// per-expert tensors (zero-copy views), transformers 5's stacked `gate_up_proj`
    /// [E, 2I, d] and `down_proj` [E, d, I] (zero-copy row views), or GPT-OSS's stacked
    /// [E, d, 2I] with gate and up interleaved and `down_proj` [E, I, d] (transposed once here,
    /// kept in the stored dtype), with its biases.
    public static func loadExperts(_ ck: any WeightSource, _ s: DecoderSpec, layer i: Int) throws(ModelError) -> SwiGLUExperts {
        let d = s.hiddenSize, inner = s.expertIntermediate, e = s.experts, n = s.names
        let stacked = n.stackedExperts(i)
        var experts: SwiGLUExperts
        if !ck.has(stacked.gateUp) {
            var gate: [Tensor] = [], up: [Tensor] = [], down: [Tensor] = []
            for x in 0..<e {
                let name = n.expert(i, x)
                gate.append(try ck.tensor(name.gate, shape: [inner, d]))
                up.append(try ck.tensor(name.up, shape: [inner, d]))
                down.append(try ck.tensor(name.down, shape: [d, inner]))
            }
            experts = SwiGLUExperts(gate: gate, up: up, down: down)
        } else if n.stackedLayout == .gateThenUpRows {
            let gu = try ck.tensor(stacked.gateUp, shape: [e, 2 * inner, d])
            let dn = try ck.tensor(stacked.down, shape: [e, d, inner])
            experts = SwiGLUExperts(gate: (0..<e).map { gu[$0].rows(0..<inner) }, up: (0..<e).map { gu[$0].rows(inner..<(2 * inner)) },
                                    down: (0..<e).map { dn[$0] })
        } else {
            let gu = try ck.tensor(stacked.gateUp, shape: [e, d, 2 * inner])
            let dn = try ck.tensor(stacked.down, shape: [e, inner, d])
            var gate: [Tensor] = [], up: [Tensor] = [], down: [Tensor] = []
            for x in 0..<e {
                let w = gu[x].toFloats(), dt = gu.dtype  // [d, 2I]
                var g = [Float](repeating: 0, count: inner * d), u = g
                for row in 0..<d {
                    for c in 0..<inner {
                        g[c * d + row] = w[row * 2 * inner + 2 * c]
                        u[c * d + row] = w[row * 2 * inner + 2 * c + 1]
                    }
                }
                gate.append(Tensor(shape: [inner, d], values: g, dtype: dt))
                up.append(Tensor(shape: [inner, d], values: u, dtype: dt))
                down.append(transposed(dn[x]))
            }
            experts = SwiGLUExperts(gate: gate, up: up, down: down)
        }
        experts.activation = s.expertActivation
        experts.biases = try loadExpertBiases(ck, s, layer: i)
        return experts
    }

    /// Layer i's per-expert biases (GPT-OSS's stacked `gate_up_proj_bias` and `down_proj_bias`),
    /// or nil for a family without them.
    static func loadExpertBiases(_ ck: any WeightSource, _ s: DecoderSpec, layer i: Int) throws(ModelError) -> ExpertBiases? {
        let d = s.hiddenSize, inner = s.expertIntermediate, e = s.experts, n = s.names
        let stacked = n.stackedExperts(i)
        if s.expertBias {
            let gub = try ck.tensor(stacked.gateUpBias, shape: [e, 2 * inner])
            let db = try ck.tensor(stacked.downBias, shape: [e, d])
            var gate: [[Float]] = [], up: [[Float]] = [], down: [[Float]] = []
            for x in 0..<e {
                let b = gub[x].toFloats()
                if n.stackedLayout == .interleavedInputMajor {
                    gate.append(stride(from: 0, to: 2 * inner, by: 2).map { b[$0] })
                    up.append(stride(from: 1, to: 2 * inner, by: 2).map { b[$0] })
                } else {
                    gate.append(Array(b[0..<inner]))
                    up.append(Array(b[inner...]))
                }
                down.append(db[x].toFloats())
            }
            return ExpertBiases(gate: gate, up: up, down: down)
        }
        return nil
    }

    /// x [R, C] transposed to [C, R], in x's dtype.
    static func transposed(_ x: Tensor) -> Tensor {
        let (r, c) = (x.shape[0], x.shape[1]), v = x.toFloats()
        var out = [Float](repeating: 0, count: r * c)
        for i in 0..<r { for j in 0..<c { out[j * r + i] = v[i * c + j] } }
        return Tensor(shape: [c, r], values: out, dtype: x.dtype)
    }
}
