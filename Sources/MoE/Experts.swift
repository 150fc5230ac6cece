import Foundation
import MoECore

// Dimension legend: R routed rows (token slots grouped by expert), d hidden size,
// I expert intermediate size, E experts.

/// The routed experts of an MoE layer: computes every expert's output for its rows at once.
public protocol ExpertFFN: Sendable {
    /// Experts; ids are in `0 ..< expertCount`.
    var expertCount: Int { get }
    /// Input and output width d.
    var hiddenSize: Int { get }
    /// rows [R, d] f32, grouped so that rows `rowOffsets[e] ..< rowOffsets[e + 1]` belong to
    /// expert e -> each row's expert output [R, d] f32. Experts with no rows are not read.
    func forward(_ rows: Tensor, rowOffsets: [Int], pool: ThreadPool) -> Tensor
    /// `forward`, where the caller gives up `rows`: the experts may write the output over it
    /// (and return it), so a prompt's pass holds one [R, d] buffer instead of two.
    func forward(consuming rows: Tensor, rowOffsets: [Int], pool: ThreadPool) -> Tensor
    /// Bytes of weights expert e reads when it runs (for bandwidth ceilings).
    func weightBytes(expert: Int) -> Int
    /// Whether `forward` is a collective (experts sharded over ranks that exchange rows): then
    /// the layer calls it on every forward pass, even with no rows, so that no rank is left
    /// waiting for another. False by default.
    var isCollective: Bool { get }
    /// Decode's step for one token x [1, d] f32 routed by `routing`: adds its experts' weighted
    /// outputs into out [1, d], as `forward` and the layer's combine would, bit for bit; false,
    /// touching nothing, where these experts have no such step for it (the default).
    func addToken(_ x: Tensor, routing: Routing, into out: Tensor, pool: ThreadPool) -> Bool
    /// Asks for the records `addToken` reads first to be brought into the cache, where a
    /// decode step can call it a pass ahead of that step: the weights streamed since the last
    /// token have evicted them, and each read would otherwise wait on memory in turn while the
    /// other threads idle. Nothing by default.
    func prefetchTokenRecords()
}

extension ExpertFFN {
    public var isCollective: Bool { false }
    public func addToken(_ x: Tensor, routing: Routing, into out: Tensor, pool: ThreadPool) -> Bool { false }
    public func prefetchTokenRecords() {}
    public func forward(consuming rows: Tensor, rowOffsets: [Int], pool: ThreadPool) -> Tensor {
        forward(rows, rowOffsets: rowOffsets, pool: pool)
    }
}

/// The gated activation between an expert's up and down projections.
public enum ExpertActivation: Sendable, Equatable {
    /// `silu(g) * u` (SwiGLU: Mixtral, Qwen, DeepSeek, ...).
    case swiglu
    /// GPT-OSS's clamped SwiGLU (transformers' `GptOssExperts._apply_gate`): g clamped to at most
    /// `limit`, u to [-limit, limit], then `(u + 1) * g * sigmoid(alpha * g)`.
    case clampedSwiGLU(alpha: Float, limit: Float)
}

/// Per-expert biases on the gate, up and down projections (GPT-OSS): [E][I], [E][I], [E][d].
public struct ExpertBiases: Sendable {
    public let gate: [[Float]], up: [[Float]], down: [[Float]]
    public init(gate: [[Float]], up: [[Float]], down: [[Float]]) {
        self.gate = gate
        self.up = up
        self.down = down
    }
}

/// SwiGLU experts, `E_i(x) = W2 (silu(W1 x) ⊙ W3 x)`, weights in Hugging Face layout and any
/// dtype; optionally with biases and GPT-OSS's clamped activation.
///
/// `gate[e]` (W1) and `up[e]` (W3) are [I, d], `down[e]` (W2) is [d, I]; they are views, so a
/// checkpoint's per-expert tensors (or one stacked [E, I, d] tensor) are used without copying.
/// A forward pass is two grouped-matmul passes: gate and up for every expert together, then down.
public struct SwiGLUExperts: ExpertFFN {
    public let gate: [Tensor], up: [Tensor], down: [Tensor]
    /// The activation between the projections (`swiglu` unless the family says otherwise).
    public var activation: ExpertActivation = .swiglu
    /// Biases on the projections, or nil.
    public var biases: ExpertBiases? = nil
    /// Per expert, empty or its gate, up and down weights in packed form (the expert cache's
    /// copies of bf16 experts): the products read those, and `gate`, `up` and `down` give only
    /// the shapes. Empty (the default): none is.
    public var packed: [[PackedBF16Matrix?]] = []
    public var expertCount: Int { gate.count }
    public let hiddenSize: Int
    /// The intermediate size I.
    public let intermediateSize: Int
    /// Each expert's weights as decode's token step reads them (`addToken`).
    let tokenRows: [SwiGLUWeights]

    public init(gate: [Tensor], up: [Tensor], down: [Tensor]) {
        precondition(!gate.isEmpty && gate.count == up.count && up.count == down.count, "SwiGLUExperts: E gate, up and down weights")
        let (i, d) = (gate[0].shape[0], gate[0].shape[1])
        for e in gate.indices {
            precondition(gate[e].shape == [i, d] && up[e].shape == [i, d] && down[e].shape == [d, i],
                         "SwiGLUExperts: expert \(e) has gate \(gate[e].shape), up \(up[e].shape), down \(down[e].shape)")
        }
        self.gate = gate
        self.up = up
        self.down = down
        (hiddenSize, intermediateSize) = (d, i)
        tokenRows = gate.indices.map { SwiGLUWeights(gate: gate[$0], up: up[$0], down: down[$0]) }
    }

    /// Experts from stacked weights: gate and up [E, I, d], down [E, d, I].
    public init(stackedGate: Tensor, stackedUp: Tensor, stackedDown: Tensor) {
        let e = stackedGate.shape[0]
        self.init(gate: (0..<e).map { stackedGate[$0] }, up: (0..<e).map { stackedUp[$0] },
                  down: (0..<e).map { stackedDown[$0] })
    }

    public func forward(_ rows: Tensor, rowOffsets: [Int], pool: ThreadPool) -> Tensor {
        let out = Tensor(zeros: [rows.shape[0], hiddenSize])
        run(rows, rowOffsets: rowOffsets, into: out, pool: pool)
        return out
    }

    /// The output written over `rows` (d in = d out): each group's down projection lands in the
    /// rows its gate and up projections have finished reading.
    public func forward(consuming rows: Tensor, rowOffsets: [Int], pool: ThreadPool) -> Tensor {
        run(rows, rowOffsets: rowOffsets, into: rows, pool: pool)
        return rows
    }

    /// Most bytes of gate and up activations ([R, I] each) one grouped pass holds: a prompt's
    /// rows run in groups of whole consecutive experts under this (an expert with more rows
    /// forms a group alone), so the pass's memory stays bounded as the prompt grows; each
    /// expert still sees all its rows at once, so the products run as fast.
    public static let groupActivationBytes = 2 << 20

    /// Runs the experts on `rows` group by group, each group's output into its rows of `out`
    /// (which may be `rows` itself).
    func run(_ rows: Tensor, rowOffsets: [Int], into out: Tensor, pool: ThreadPool) {
        let perRow = 2 * intermediateSize * MemoryLayout<Float>.size
        for group in Dispatch.expertGroups(rowOffsets: rowOffsets, maxRows: Self.groupActivationBytes / max(1, perRow)) {
            let span = rowOffsets[group.lowerBound]..<rowOffsets[group.upperBound]
            if span.isEmpty { continue }
            let local = Dispatch.rowOffsets(rowOffsets, experts: group)  // the others' spans empty
            projectDown(hidden(rows.rows(span), rowOffsets: local, pool: pool), rowOffsets: local,
                        into: out.rows(span), pool: pool)
        }
    }

    /// Each row's activation between its expert's up and down projections, [R, I] (the input
    /// the down projection sees: calibration records it).
    public func hidden(_ rows: Tensor, rowOffsets: [Int], pool: ThreadPool) -> Tensor {
        let r = rows.shape[0], i = intermediateSize
        // Every row is some expert's when the spans cover them all, and the products overwrite
        // them: no zeros to write first (a Mixtral-shaped prompt's g and u are ~15 MB a layer).
        let covered = rowOffsets.first == 0 && rowOffsets.last == r
        let g = covered ? Tensor(uninitialized: [r, i]) : Tensor(zeros: [r, i])
        let u = covered ? Tensor(uninitialized: [r, i]) : Tensor(zeros: [r, i])
        var jobs: [LinearJob] = []
        jobs.reserveCapacity(2 * min(expertCount, r))
        for e in 0..<expertCount where rowOffsets[e] < rowOffsets[e + 1] {
            let span = rowOffsets[e]..<rowOffsets[e + 1], x = rows.rows(span)
            let p = packedWeights(e)
            jobs.append(LinearJob(input: x, weight: gate[e], output: g.rows(span), packedWeight: p[0]))
            jobs.append(LinearJob(input: x, weight: up[e], output: u.rows(span), packedWeight: p[1]))
        }
        Kernels.linearBatch(jobs, pool: pool)
        Self.activate(gate: g, up: u, activation: activation, biases: biases, rowOffsets: rowOffsets, pool: pool)
        return g
    }

    /// The gate and up projections' biases (if any) added per expert, then the activation,
    /// written into `gate`.
    static func activate(gate g: Tensor, up u: Tensor, activation: ExpertActivation, biases: ExpertBiases?,
                         rowOffsets: [Int], pool: ThreadPool) {
        if let b = biases {
            addBias(g, b.gate, rowOffsets)
            addBias(u, b.up, rowOffsets)
        }
        switch activation {
        case .swiglu: Kernels.siluMul(gate: g, up: u, pool: pool)
        case let .clampedSwiGLU(alpha, limit): clampedSwiGLU(gate: g, up: u, alpha: alpha, limit: limit)
        }
    }

    /// Each expert's down projection (and bias) of its rows of `g` [R, I]: [R, d].
    public func projectDown(_ g: Tensor, rowOffsets: [Int], pool: ThreadPool) -> Tensor {
        let out = Tensor(zeros: [g.shape[0], hiddenSize])
        projectDown(g, rowOffsets: rowOffsets, into: out, pool: pool)
        return out
    }

    /// `projectDown` into `out` [R, d] (every row of an expert with rows is overwritten).
    func projectDown(_ g: Tensor, rowOffsets: [Int], into out: Tensor, pool: ThreadPool) {
        var jobs: [LinearJob] = []
        jobs.reserveCapacity(min(expertCount, g.shape[0]))
        for e in 0..<expertCount where rowOffsets[e] < rowOffsets[e + 1] {
            let span = rowOffsets[e]..<rowOffsets[e + 1]
            jobs.append(LinearJob(input: g.rows(span), weight: down[e], output: out.rows(span), packedWeight: packedWeights(e)[2]))
        }
        Kernels.linearBatch(jobs, pool: pool)
        if let b = biases { Self.addBias(out, b.down, rowOffsets) }
    }

    /// Expert e's packed gate, up and down weights (nil for each held as stored).
    func packedWeights(_ e: Int) -> [PackedBF16Matrix?] {
        e < packed.count && packed[e].count == 3 ? packed[e] : Self.noPackedWeights
    }

    /// `packedWeights` of an expert held as stored, one array for all (a literal was an
    /// allocation an expert, twice a layer, at decode).
    private static let noPackedWeights: [PackedBF16Matrix?] = [nil, nil, nil]

    /// Adds expert e's bias row to each of its rows of x [R, N].
    static func addBias(_ x: Tensor, _ bias: [[Float]], _ rowOffsets: [Int]) {
        let n = x.shape[1], p = x.mutableFloats
        for e in 0..<(rowOffsets.count - 1) where rowOffsets[e] < rowOffsets[e + 1] {
            let b = bias[e]
            for r in rowOffsets[e]..<rowOffsets[e + 1] { for j in 0..<n { p[r * n + j] += b[j] } }
        }
    }

    /// GPT-OSS's activation, written into `gate`.
    static func clampedSwiGLU(gate: Tensor, up: Tensor, alpha: Float, limit: Float) {
        let g = gate.mutableFloats, u = up.floats
        for i in 0..<g.count {
            let x = min(g[i], limit), y = min(max(u[i], -limit), limit)
            g[i] = (y + 1) * x / (1 + Foundation.exp(-alpha * x))
        }
    }

    public func weightBytes(expert e: Int) -> Int { gate[e].byteCount + up[e].byteCount + down[e].byteCount }

    /// DeepSeekMoE's fine-grained segmentation (Dai et al. 2024, ROUTING.md §8): each expert
    /// split into `segments` experts of I / segments, expert e becoming e * segments + s.
    /// Gate and up rows are zero-copy views; down's columns are copied, multiplied by
    /// `downScale` (`MoELayer.fineGrained` uses this to keep the layer's function exact).
    public func segmented(_ segments: Int, downScale: Float = 1) -> SwiGLUExperts {
        precondition(segments >= 1 && intermediateSize % segments == 0,
                     "segmented: \(intermediateSize) does not split into \(segments)")
        let part = intermediateSize / segments, d = hiddenSize
        var g: [Tensor] = [], u: [Tensor] = [], w2: [Tensor] = []
        for e in 0..<expertCount {
            let full = down[e].toFloats()  // [d, I]
            for s in 0..<segments {
                g.append(gate[e].rows((s * part)..<((s + 1) * part)))
                u.append(up[e].rows((s * part)..<((s + 1) * part)))
                var cols = [Float](repeating: 0, count: d * part)
                for row in 0..<d {
                    for c in 0..<part { cols[row * part + c] = full[row * intermediateSize + s * part + c] * downScale }
                }
                w2.append(Tensor(shape: [d, part], values: cols, dtype: down[e].dtype))
            }
        }
        return SwiGLUExperts(gate: g, up: u, down: w2)
    }
}

/// Experts that every token uses (DeepSeekMoE's shared experts, Qwen2-MoE's shared expert),
/// added to the routed output: `y += σ(w_g · x) * FFN(x)` with the optional sigmoid gate
/// [1, d] of Qwen2-MoE, or `y += FFN(x)` without it. Several shared experts of width I are
/// one SwiGLU of width n * I (as DeepSeek stores them).
public struct SharedExpert: Sendable {
    public let gate: Tensor, up: Tensor, down: Tensor
    /// Qwen2-MoE's `shared_expert_gate` [1, d], or nil.
    public let outputGate: Tensor?

    public init(gate: Tensor, up: Tensor, down: Tensor, outputGate: Tensor? = nil) {
        precondition(gate.shape == up.shape && down.shape == [gate.shape[1], gate.shape[0]]
                     && (outputGate == nil || outputGate?.count == gate.shape[1]),
                     "SharedExpert: gate \(gate.shape), up \(up.shape), down \(down.shape)")
        self.gate = gate
        self.up = up
        self.down = down
        self.outputGate = outputGate
    }

    /// Bytes of weights it reads per call.
    public var weightBytes: Int { gate.byteCount + up.byteCount + down.byteCount + (outputGate?.byteCount ?? 0) }

    /// Adds its output for x [T, d] into out [T, d].
    public func add(_ x: Tensor, into out: Tensor, pool: ThreadPool) {
        let t = x.shape[0], i = gate.shape[0]
        let g = Tensor(zeros: [t, i]), u = Tensor(zeros: [t, i])
        Kernels.linearBatch([LinearJob(input: x, weight: gate, output: g), LinearJob(input: x, weight: up, output: u)], pool: pool)
        Kernels.siluMul(gate: g, up: u, pool: pool)
        let y = Kernels.matmul(g, down, pool: pool)
        let scale: [Float] = outputGate.map { w in
            Kernels.matmul(x, w.reshaped([1, w.count]), pool: pool).toFloats().map(RouterMath.sigmoid)
        } ?? [Float](repeating: 1, count: t)
        let yp = y.floats, op = out.mutableFloats, d = out.shape[1]
        for tok in 0..<t { for j in 0..<d { op[tok * d + j] += scale[tok] * yp[tok * d + j] } }
    }
}
