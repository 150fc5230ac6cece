import Foundation
import MoECore

// Dimension legend: T tokens, n input size, h state size.

/// A GRU cell's parameters, one variable per gate as RMoE's `CustomGRUCell` keeps them: per
/// gate g in (reset r, update z, new n) an input weight [h, n], a state weight [h, h], and
/// biases [h] on each side.
public struct GRUParameters {
    /// Indexed by gate: 0 reset, 1 update, 2 new.
    public var weightI: [Variable], weightH: [Variable], biasI: [Variable], biasH: [Variable]

    public init(weightI: [Variable], weightH: [Variable], biasI: [Variable], biasH: [Variable]) {
        precondition([weightI, weightH, biasI, biasH].allSatisfy { $0.count == 3 }, "GRU: three gates")
        self.weightI = weightI
        self.weightH = weightH
        self.biasI = biasI
        self.biasH = biasH
    }

    /// The state size h.
    public var stateSize: Int { weightH[0].shape[0] }
    /// Every parameter.
    public var all: [Variable] { weightI + weightH + biasI + biasH }
}

extension Tape {
    /// One GRU step (PyTorch's `GRUCell`): x [T, n], state [T, h] (nil: zeros) -> h' [T, h].
    ///
    /// `r = σ(a_r)`, `u = σ(a_z)`, `c = tanh(gi_n + r ⊙ gh_n)`, `h' = (1 - u) ⊙ c + u ⊙ h`, where
    /// `gi = x W_i^T + b_i`, `gh = h W_h^T + b_h` and `a_g = gi_g + gh_g`.
    /// Backward: dc = dh' (1 - u), du = dh' (h - c), dh = dh' u; through tanh da_n = dc (1 - c²),
    /// so dgi_n = da_n, dgh_n = da_n r and dr = da_n gh_n; through the sigmoids
    /// dgi_r = dgh_r = dr r (1 - r) and dgi_z = dgh_z = du u (1 - u); then both linears.
    public func gruCell(_ x: Variable, state: Variable?, _ p: GRUParameters) -> Variable {
        let t = x.shape[0], h = p.stateSize
        let wi = Self.stackRows(p.weightI.map(\.value)), wh = Self.stackRows(p.weightH.map(\.value))
        let bi = p.biasI.flatMap { $0.value.toFloats() }, bh = p.biasH.flatMap { $0.value.toFloats() }
        let hPrev = state?.value ?? Tensor(zeros: [t, h])
        let gi = Kernels.matmul(x.value, wi, pool: pool).toFloats()     // [T, 3h], biases added below
        let gh = Kernels.matmul(hPrev, wh, pool: pool).toFloats()
        let hp = hPrev.toFloats()
        var r = [Float](repeating: 0, count: t * h), u = r, c = r, ghn = r, out = r
        for tok in 0..<t {
            let o = tok * 3 * h
            for j in 0..<h {
                let q = tok * h + j
                r[q] = 1 / (1 + Foundation.exp(-(gi[o + j] + bi[j] + gh[o + j] + bh[j])))
                u[q] = 1 / (1 + Foundation.exp(-(gi[o + h + j] + bi[h + j] + gh[o + h + j] + bh[h + j])))
                ghn[q] = gh[o + 2 * h + j] + bh[2 * h + j]
                c[q] = Foundation.tanh(gi[o + 2 * h + j] + bi[2 * h + j] + r[q] * ghn[q])
                out[q] = (1 - u[q]) * c[q] + u[q] * hp[q]
            }
        }
        let result = Variable(Tensor(shape: [t, h], values: out))
        let xT = x.value
        record { [pool] in
            guard let dOut = result.grad else { return }
            let dy = dOut.floats
            var dgi = [Float](repeating: 0, count: t * 3 * h), dgh = dgi
            var dState = [Float](repeating: 0, count: t * h)
            for tok in 0..<t {
                let o = tok * 3 * h
                for j in 0..<h {
                    let q = tok * h + j
                    let dc = dy[q] * (1 - u[q]), du = dy[q] * (hp[q] - c[q])
                    dState[q] = dy[q] * u[q]
                    let dan = dc * (1 - c[q] * c[q])
                    let dar = dan * ghn[q] * r[q] * (1 - r[q]), daz = du * u[q] * (1 - u[q])
                    dgi[o + j] = dar; dgh[o + j] = dar
                    dgi[o + h + j] = daz; dgh[o + h + j] = daz
                    dgi[o + 2 * h + j] = dan; dgh[o + 2 * h + j] = dan * r[q]
                }
            }
            let dgiT = Tensor(shape: [t, 3 * h], values: dgi), dghT = Tensor(shape: [t, 3 * h], values: dgh)
            Self.accumulateStacked(p.weightI, Kernels.gemm(dgiT, xT, transposeA: true, transposeB: true, pool: pool))
            Self.accumulateStacked(p.biasI, Self.columnSums(dgi, columns: 3 * h))
            Self.accumulateStacked(p.biasH, Self.columnSums(dgh, columns: 3 * h))
            if let dx = x.gradSlot() { Kernels.gemm(dgiT, wi, transposeB: true, into: dx.tensor, accumulate: dx.accumulate, pool: pool) }
            guard let state else { return }  // a zero state: W_h gets no gradient, nothing flows back
            Self.accumulateStacked(p.weightH, Kernels.gemm(dghT, hPrev, transposeA: true, transposeB: true, pool: pool))
            let dStateT = Tensor(shape: [t, h], values: dState)
            Kernels.gemm(dghT, wh, transposeB: true, into: dStateT, accumulate: true, pool: pool)
            state.accumulate(dStateT)
        }
        return result
    }

    /// The rows of equally wide f32 matrices, one after another.
    static func stackRows(_ parts: [Tensor]) -> Tensor {
        let cols = parts[0].shape[1]
        return Tensor(shape: [parts.reduce(0) { $0 + $1.shape[0] }, cols], values: parts.flatMap { $0.toFloats() })
    }

    /// Splits a gradient stacked as `stackRows` stacks (rows, or a vector) among `parts`.
    static func accumulateStacked(_ parts: [Variable], _ g: Tensor) {
        let values = g.toFloats()
        var offset = 0
        for v in parts {
            let n = v.value.count
            v.accumulate(Tensor(shape: v.shape, values: Array(values[offset..<(offset + n)])))
            offset += n
        }
    }

    /// Sums over the rows of a row-major matrix with `columns` columns.
    static func columnSums(_ m: [Float], columns: Int) -> Tensor {
        var sums = [Float](repeating: 0, count: columns)
        for i in 0..<m.count { sums[i % columns] += m[i] }
        return Tensor(shape: [columns], values: sums)
    }
}
