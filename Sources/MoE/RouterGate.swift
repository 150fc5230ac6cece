import Foundation
import MoECore

// Dimension legend: T tokens, d hidden size, L router logits, h recurrent router state size.

/// How a layer turns its input into router logits.
public enum RouterGate: Sendable {
    /// `z = W x (+ b)`: W [L, d] of any dtype, b [L] (the usual router).
    case linear(weight: Tensor, bias: Tensor? = nil)
    /// RMoE's recurrent gate: a GRU over depth, its state carried in `RouterState`.
    case recurrent(RecurrentGate)

    /// Logits [T, L] f32 for x [T, d]. `state` carries the recurrent router's state to the next
    /// layer (left untouched by a linear gate).
    public func logits(_ x: Tensor, state: inout RouterState, pool: ThreadPool = .shared) -> Tensor {
        switch self {
        case let .linear(weight, bias):
            let z = Kernels.matmul(x, weight, pool: pool)
            if let bias {
                let b = bias.toFloats(), zp = z.mutableFloats
                let l = b.count
                for i in 0..<zp.count { zp[i] += b[i % l] }
            }
            return z
        case let .recurrent(gate):
            return gate.logits(x, state: &state, pool: pool)
        }
    }

    /// Router logits per token.
    public var logitCount: Int {
        switch self {
        case let .linear(weight, _): return weight.shape[0]
        case let .recurrent(gate): return gate.outputProjection.shape[0]
        }
    }

    /// Bytes of weights the gate reads per call.
    public var weightBytes: Int {
        switch self {
        case let .linear(weight, bias): return weight.byteCount + (bias?.byteCount ?? 0)
        case let .recurrent(gate):
            return gate.inputProjection.byteCount + gate.outputProjection.byteCount + gate.cell.weightBytes
        }
    }
}

/// State a router carries from one MoE layer to the next within one forward pass (RMoE's GRU
/// state). Start each forward pass with a fresh one.
public struct RouterState: Sendable {
    /// The recurrent router's state [T, h], or nil before the first recurrent layer (zeros).
    public var recurrent: Tensor?
    public init() {}
}

/// PyTorch's `GRUCell`: gates in the order reset, update, new.
///
/// `r = σ(W_ir x + b_ir + W_hr h + b_hr)`, `u = σ(W_iz x + b_iz + W_hz h + b_hz)`,
/// `n = tanh(W_in x + b_in + r ⊙ (W_hn h + b_hn))`, `h' = (1 - u) ⊙ n + u ⊙ h`.
public struct GRUCell: Sendable {
    /// [3h, input] and [3h, h] of any dtype; biases [3h].
    public let weightIH: Tensor, weightHH: Tensor, biasIH: Tensor, biasHH: Tensor
    public var hiddenSize: Int { weightHH.shape[1] }

    public init(weightIH: Tensor, weightHH: Tensor, biasIH: Tensor, biasHH: Tensor) {
        precondition(weightIH.rank == 2 && weightHH.rank == 2 && weightIH.shape[0] == 3 * weightHH.shape[1]
                     && weightHH.shape[0] == weightIH.shape[0] && biasIH.count == weightIH.shape[0]
                     && biasHH.count == weightIH.shape[0], "GRUCell: inconsistent shapes")
        self.weightIH = weightIH
        self.weightHH = weightHH
        self.biasIH = biasIH
        self.biasHH = biasHH
    }

    var weightBytes: Int { weightIH.byteCount + weightHH.byteCount + biasIH.byteCount + biasHH.byteCount }

    /// One step: x [T, input], h [T, hidden] (nil: zeros) -> h' [T, hidden].
    public func step(_ x: Tensor, _ h: Tensor?, pool: ThreadPool = .shared) -> Tensor {
        let t = x.shape[0], n = hiddenSize
        let hPrev = h ?? Tensor(zeros: [t, n])
        let gi = Kernels.matmul(x, weightIH, pool: pool).toFloats()      // [T, 3h]
        let gh = Kernels.matmul(hPrev, weightHH, pool: pool).toFloats()  // [T, 3h]
        let bi = biasIH.toFloats(), bh = biasHH.toFloats(), hp = hPrev.toFloats()
        var out = [Float](repeating: 0, count: t * n)
        for tok in 0..<t {
            let o = tok * 3 * n
            for j in 0..<n {
                let r = 1 / (1 + Foundation.exp(-(gi[o + j] + bi[j] + gh[o + j] + bh[j])))
                let u = 1 / (1 + Foundation.exp(-(gi[o + n + j] + bi[n + j] + gh[o + n + j] + bh[n + j])))
                let c = Foundation.tanh(gi[o + 2 * n + j] + bi[2 * n + j] + r * (gh[o + 2 * n + j] + bh[2 * n + j]))
                out[tok * n + j] = (1 - u) * c + u * hp[tok * n + j]
            }
        }
        return Tensor(shape: [t, n], values: out)
    }
}

/// One layer's part of RMoE's router: its own input and output projections around the GRU
/// cell that every layer shares: `x_i = W1 h_i`, `r_i = GRU(x_i, r_{i-1})`, `z_i = W2 r_i`.
public struct RecurrentGate: Sendable {
    /// W1 [h, d] and W2 [L, h].
    public let inputProjection: Tensor, outputProjection: Tensor
    /// The cell shared by all layers (pass the same one to each).
    public let cell: GRUCell

    public init(inputProjection: Tensor, outputProjection: Tensor, cell: GRUCell) {
        precondition(inputProjection.shape[0] == cell.weightIH.shape[1] && outputProjection.shape[1] == cell.hiddenSize,
                     "RecurrentGate: projections do not fit the cell")
        self.inputProjection = inputProjection
        self.outputProjection = outputProjection
        self.cell = cell
    }

    func logits(_ x: Tensor, state: inout RouterState, pool: ThreadPool) -> Tensor {
        let xi = Kernels.matmul(x, inputProjection, pool: pool)
        let r = cell.step(xi, state.recurrent, pool: pool)
        state.recurrent = r
        return Kernels.matmul(r, outputProjection, pool: pool)
    }
}
