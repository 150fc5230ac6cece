import MoECore

/// A tensor in a computation being differentiated: its value, and its gradient once
/// `Tape.backward` has run. Values and gradients are f32.
public final class Variable: @unchecked Sendable {
    public var value: Tensor
    /// d(loss)/d(value), the same shape as `value`; nil until something flows into it.
    public var grad: Tensor? { didSet { gradSquares = nil } }
    /// The sum of the squares of `grad`'s elements, when the op that wrote the whole gradient
    /// took it on the way, block by block while each was in cache (the MoE layer's expert
    /// weights): gradient clipping then need not read the gradient again. Whatever changes the
    /// gradient here clears it (a new `grad`, `accumulate`, a `gradSlot` that adds, the
    /// optimiser's in-place passes); code that writes into `grad`'s memory itself must clear it.
    public var gradSquares: Double?
    /// Whether gradients are wanted for it (parameters and intermediate results: yes).
    public internal(set) var requiresGrad: Bool

    public init(_ value: Tensor, requiresGrad: Bool = true) {
        precondition(value.dtype == .f32 || !requiresGrad, "training works in f32 (only a frozen weight may be stored otherwise), got \(value.dtype)")
        self.value = value
        self.requiresGrad = requiresGrad
    }

    /// An op's output: it wants gradients when any input does, so a frozen chain (a LoRA run's
    /// embedding and first norm) records no backward products at all.
    convenience init(_ value: Tensor, inputs: [Variable?]) {
        self.init(value, requiresGrad: inputs.contains { $0?.requiresGrad == true })
    }

    public var shape: [Int] { value.shape }

    /// `accumulate` for a tensor nobody else will read or write again (a new tensor, or the
    /// gradient of an op's output once that op's backward step has it): on first use it becomes
    /// the gradient itself, with no copy, and later steps may add into it in place.
    func accumulate(owned g: Tensor, pool: ThreadPool? = nil) {
        guard requiresGrad else { return }
        if grad == nil { grad = g } else { accumulate(g, pool: pool) }
    }

    /// Adds `g` into the gradient (a copy of `g` on first use); with a `pool`, in parallel
    /// chunks (an elementwise add: the same result on any thread count).
    func accumulate(_ g: Tensor, pool: ThreadPool? = nil) {
        guard requiresGrad else { return }
        gradSquares = nil
        let first = grad == nil
        let target = grad ?? Tensor(uninitialized: g.shape)
        grad = target
        let p = target.mutableFloats, q = g.floats
        guard let pb = p.baseAddress, let qb = q.baseAddress else { return }
        let chunk = 1 << 14, chunks = (p.count + chunk - 1) / chunk
        Kernels.parallelRows(chunks, cost: chunk, pool: pool) { c in
            let range = (c * chunk)..<min(p.count, (c + 1) * chunk)
            if first {
                (pb + range.lowerBound).update(from: qb + range.lowerBound, count: range.count)
            } else {
                for i in range { pb[i] += qb[i] }
            }
        }
    }

    /// Takes `t` (widened to f32) as the value, with no gradient; `MoECoreError.invalidValue`
    /// names `name` when the shape differs.
    func load(_ t: Tensor, name: String) throws {
        guard t.shape == shape else { throw MoECoreError.invalidValue(path: nil, field: name, reason: "shape \(t.shape), expected \(shape)") }
        value = t.dtype == .f32 ? t.copied() : t.converted(to: .f32)
        grad = nil
    }

    /// The value in f32: itself, or a widened copy of a frozen weight stored otherwise (f16,
    /// bf16 or a block format), for the products that read it transposed, which take f32 only.
    var f32Value: Tensor { value.dtype == .f32 ? value : value.converted(to: .f32) }

    /// The gradient, or zeros.
    var gradOrZeros: Tensor { grad ?? Tensor(zeros: value.shape) }

    /// Where a kernel that can either overwrite or add into its output (`Kernels.gemm`) should
    /// write this variable's gradient: the existing gradient with `accumulate` true, or else a
    /// new tensor with unspecified contents, already installed as the gradient, with
    /// `accumulate` false, which the kernel must then overwrite completely. Nil when no gradient
    /// is wanted. This saves zeroing every weight gradient at every step.
    func gradSlot() -> (tensor: Tensor, accumulate: Bool)? {
        guard requiresGrad else { return nil }
        if let grad {
            gradSquares = nil
            return (grad, true)
        }
        let g = Tensor(uninitialized: value.shape)
        grad = g
        return (g, false)
    }
}

/// Records the backward step of every op in the order the forward pass ran them, and replays
/// them in reverse (reverse-mode differentiation with explicit per-op backward kernels, as
/// llm.c does: no graph objects, no generic derivative rules).
public final class Tape: @unchecked Sendable {
    private var steps: [() -> Void] = []
    public let pool: ThreadPool

    public init(pool: ThreadPool = .shared) { self.pool = pool }

    /// Records one op's backward step.
    func record(_ step: @escaping () -> Void) { steps.append(step) }

    /// Seeds d(loss)/d(loss) = 1 (or `seed`) and runs every recorded step in reverse. The tape
    /// is empty afterwards.
    public func backward(from loss: Variable, seed: Float = 1) {
        loss.accumulate(Tensor(shape: loss.shape, values: [Float](repeating: seed, count: loss.value.count)))
        for step in steps.reversed() { step() }
        steps.removeAll()
    }

    /// Ops recorded so far.
    public var count: Int { steps.count }
}
