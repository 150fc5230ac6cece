import Foundation
import MoECore

/// A LoRA adapter on one of transformers 5's stacked expert tensors, as PEFT's
/// `target_parameters` trains it (`lora.ParamWrapper`): `model.layers.N.mlp.experts.gate_up_proj`
/// or `.down_proj` of every MoE family. PEFT stores one A [r·E, in] and one B [out, r·E] per
/// tensor: expert e's A is rows e·r ..< (e+1)·r, its B the columns j·E + e (rank-major), and its
/// delta `scale · B_e A_e` [out, in] in the projection's linear sense (`gate_up_proj`: out = 2I,
/// the gate's rows then the up's, or interleaved for GPT-OSS; `down_proj`: out = d). A
/// `gate_up_proj` adapter's gate and up rows therefore share expert e's A.
///
/// Several tensors of one module nest (each wrapper wraps the last): the tensor the model
/// registers first (`gate_up_proj` before `down_proj`) is innermost, its tensors named
/// `<module>.base_layer.lora_A.weight`, the outer one's `<module>.lora_A.weight`.
public struct StackedExpertLoRA: Sendable {
    /// Which stacked tensor, in the order the expert modules register them.
    public enum Parameter: String, Sendable, CaseIterable { case gateUp = "gate_up_proj", down = "down_proj" }

    /// The MoE layer.
    public let layer: Int
    public let parameter: Parameter
    /// Per expert: A [r, in] and B [out, r] (f32).
    public let a: [Tensor], b: [Tensor]
    public let scale: Float

    public init(layer: Int, parameter: Parameter, a: [Tensor], b: [Tensor], scale: Float) {
        self.layer = layer
        self.parameter = parameter
        self.a = a
        self.b = b
        self.scale = scale
    }

    /// transformers 5's name of layer i's experts module.
    public static func module(layer: Int) -> String { "model.layers.\(layer).mlp.experts" }

    /// The layer of a transformers 5 experts module name, or nil.
    public static func layer(ofModule name: String) -> Int? {
        let parts = name.split(separator: ".", omittingEmptySubsequences: false)
        guard parts.count == 5, parts[0] == "model", parts[1] == "layers", parts[3] == "mlp", parts[4] == "experts",
              let i = Int(parts[2]), i >= 0, String(i) == parts[2] else { return nil }
        return i
    }

    /// PEFT's saved name of `which` (`A` or `B`) for `parameter`, when the module's targeted
    /// tensors are `targeted` (any order): one `.base_layer` per targeted tensor registered after it.
    public static func peftName(layer: Int, parameter: Parameter, targeted: Set<Parameter>, _ which: String) -> String {
        let order = Parameter.allCases.filter { targeted.contains($0) }
        let depth = order.count - 1 - (order.firstIndex(of: parameter) ?? order.count - 1)
        return "base_model.model.\(module(layer: layer))" + String(repeating: ".base_layer", count: depth) + ".lora_\(which).weight"
    }

    /// Splits PEFT's stacked A [r·E, in] and B [out, r·E] of `experts` experts into each expert's
    /// A [r, in] and B [out, r]; nil when the shapes do not hold r·E rows and columns.
    public static func split(a: Tensor, b: Tensor, experts: Int) -> (a: [Tensor], b: [Tensor])? {
        guard experts > 0, a.rank == 2, b.rank == 2, a.shape[0] == b.shape[1], a.shape[0] % experts == 0, a.shape[0] > 0 else { return nil }
        let r = a.shape[0] / experts, k = a.shape[1], n = b.shape[0]
        let av = a.toFloats(), bv = b.toFloats()
        var outA: [Tensor] = [], outB: [Tensor] = []
        for e in 0..<experts {
            outA.append(Tensor(shape: [r, k], values: Array(av[(e * r * k)..<((e + 1) * r * k)])))
            var be = [Float](repeating: 0, count: n * r)
            for o in 0..<n { for j in 0..<r { be[o * r + j] = bv[o * r * experts + j * experts + e] } }
            outB.append(Tensor(shape: [n, r], values: be))
        }
        return (outA, outB)
    }

    /// The inverse of `split`: PEFT's stacked A [r·E, in] and B [out, r·E] from each expert's.
    public static func stack(a: [Tensor], b: [Tensor]) -> (a: Tensor, b: Tensor) {
        let experts = a.count, r = a[0].shape[0], k = a[0].shape[1], n = b[0].shape[0]
        var av: [Float] = [], bv = [Float](repeating: 0, count: n * r * experts)
        av.reserveCapacity(experts * r * k)
        for e in 0..<experts {
            av += a[e].toFloats()
            let be = b[e].toFloats()
            for o in 0..<n { for j in 0..<r { bv[o * r * experts + j * experts + e] = be[o * r + j] } }
        }
        return (Tensor(shape: [experts * r, k], values: av), Tensor(shape: [n, experts * r], values: bv))
    }

    /// The rows of a `gate_up_proj` B (or delta) [2I, c] that are the gate's and the up's: the
    /// first and second halves, or the even and odd rows when `interleaved` (GPT-OSS).
    public static func gateAndUp(_ x: Tensor, interleaved: Bool) -> (gate: Tensor, up: Tensor) {
        let rows = x.shape[0] / 2, c = x.shape[1], v = x.toFloats()
        var g = [Float](), u = [Float]()
        g.reserveCapacity(rows * c)
        u.reserveCapacity(rows * c)
        for i in 0..<rows {
            let (gi, ui) = interleaved ? (2 * i, 2 * i + 1) : (i, rows + i)
            g += v[(gi * c)..<((gi + 1) * c)]
            u += v[(ui * c)..<((ui + 1) * c)]
        }
        return (Tensor(shape: [rows, c], values: g), Tensor(shape: [rows, c], values: u))
    }

    /// The inverse of `gateAndUp`: one [2I, c] from the gate's and the up's rows.
    public static func joinGateAndUp(_ gate: Tensor, _ up: Tensor, interleaved: Bool) -> Tensor {
        let rows = gate.shape[0], c = gate.shape[1], g = gate.toFloats(), u = up.toFloats()
        var out = [Float](repeating: 0, count: 2 * rows * c)
        for i in 0..<rows {
            let (gi, ui) = interleaved ? (2 * i, 2 * i + 1) : (i, rows + i)
            for j in 0..<c {
                out[gi * c + j] = g[i * c + j]
                out[ui * c + j] = u[i * c + j]
            }
        }
        return Tensor(shape: [2 * rows, c], values: out)
    }

    /// Which rows of a `gate_up_proj` adapter's delta: the gate's or the up's.
    public enum Half: Sendable { case gate, up }

    /// Expert e's `scale · B_e A_e` [out, in] (f32), or only its gate's or up's rows of a
    /// `gate_up_proj` adapter (`interleaved`: GPT-OSS's row order), from those rows of B alone.
    public func delta(expert e: Int, half: Half? = nil, interleaved: Bool = false, pool: ThreadPool = .shared) -> Tensor {
        var rows = b[e]
        if let half {
            let halves = Self.gateAndUp(rows, interleaved: interleaved)
            rows = half == .gate ? halves.gate : halves.up
        }
        return LoRAAdapterFolder.product(b: rows, a: a[e], scale: scale, pool: pool)
    }
}
