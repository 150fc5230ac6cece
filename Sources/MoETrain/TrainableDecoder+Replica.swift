import MoE
import MoECore

extension TrainableDecoder {
    /// A model that reads this one's parameter values (the same storage: an optimiser step on
    /// either is seen by both) but keeps gradients of its own. Micro-batches of one step run on
    /// replicas, in parallel, and their gradients are then summed into this model's in order.
    public func replica() -> TrainableDecoder {
        var rebase: [ObjectIdentifier: Variable] = [:]  // this model's variables -> the replica's
        func v(_ x: Variable) -> Variable {
            let copy = Variable(x.value, requiresGrad: x.requiresGrad)
            rebase[ObjectIdentifier(x)] = copy
            return copy
        }
        func f(_ p: FFNParameters?) -> FFNParameters? {
            p.map { FFNParameters(gate: v($0.gate), up: v($0.up), down: v($0.down), outputGate: $0.outputGate.map(v)) }
        }
        let e = v(embed)
        let layers = self.layers.map { l in
            Layer(inputNorm: v(l.inputNorm), wq: v(l.wq), wk: v(l.wk), wv: v(l.wv), wo: v(l.wo), postNorm: v(l.postNorm),
                  bq: l.bq.map(v), bk: l.bk.map(v), bv: l.bv.map(v), bo: l.bo.map(v), qNorm: l.qNorm.map(v), kNorm: l.kNorm.map(v),
                  sinks: l.sinks.map(v),
                  latent: l.latent.map { LatentParameters(qA: $0.qA.map(v), qANorm: $0.qANorm.map(v), kvANorm: v($0.kvANorm)) },
                  moe: l.moe?.replica(v), dense: f(l.dense), shared: f(l.shared), routerBias: l.routerBias)
        }
        let cell = routerCell.map { c in
            GRUParameters(weightI: c.weightI.map(v), weightH: c.weightH.map(v), biasI: c.biasI.map(v), biasH: c.biasH.map(v))
        }
        let copy = TrainableDecoder(spec: spec, shape: shape, router: router, embed: e, finalNorm: v(finalNorm),
                                    lmHead: lmHead === embed ? e : v(lmHead), layers: layers, routerCell: cell, sourceConfig: sourceConfig)
        copy.lora = lora?.replica(rebase: rebase)
        return copy
    }

    /// Moves the replicas' gradients into this model's, parameter by parameter, adding them in
    /// the order given (so the sum does not depend on which thread ran which replica). A
    /// parameter without a gradient takes the first replica's tensor as it is; the replicas are
    /// left with no gradients. The additions for every parameter run as one parallel pass
    /// (`Kernels.add`: an OLMoE-shaped model has hundreds of expert tensors, and a pass each
    /// cost half again the time of the additions themselves).
    public func absorbGradients(of replicas: [TrainableDecoder], pool: ThreadPool = .shared) {
        let mine = trainableParameters.map(\.variable)
        let theirs = replicas.map { $0.trainableParameters.map(\.variable) }
        var sums: [(into: Tensor, adds: [Tensor])] = []
        for (i, p) in mine.enumerated() {
            var adds: [Tensor] = []
            for r in theirs {
                guard let g = r[i].grad else { continue }
                r[i].grad = nil
                guard p.requiresGrad else { continue }
                if p.grad == nil { p.grad = g } else { adds.append(g) }
            }
            if let into = p.grad, !adds.isEmpty {
                p.gradSquares = nil  // added into in place below
                sums.append((into, adds))
            }
        }
        Kernels.add(sums, pool: pool)
    }
}

extension MoEParameters {
    /// The same parameters, each behind a new variable over the same value.
    func replica(_ v: (Variable) -> Variable) -> MoEParameters {
        let router: RouterParameters
        switch self.router {
        case let .linear(w): router = .linear(v(w))
        case let .recurrent(input, output): router = .recurrent(input: v(input), output: v(output))
        }
        var p = MoEParameters(router: router, gate: gate.map(v), up: up.map(v), down: down.map(v))
        p.routerBias = routerBias.map(v)
        p.gateBias = gateBias?.map(v)
        p.upBias = upBias?.map(v)
        p.downBias = downBias?.map(v)
        p.activation = activation
        return p
    }
}
