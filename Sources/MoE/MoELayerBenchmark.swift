import Foundation
import MoECore

/// The MoE layer alone, measured against the machine: tokens per second for one token (decode,
/// judged against memory bandwidth) and for a block of tokens (prefill, judged against FMA
/// peak). Part of `moe bench-kernels` (key `moe_layer`).
public enum MoELayerBenchmark {
    /// One measured configuration.
    public struct Entry: Codable, Sendable {
        public var experts: Int, topK: Int, hidden: Int, expertSize: Int, tokens: Int
        public var dtype: String
        public var tokensPerS: Double
        /// "bandwidth" (1 token) or "fma" (more tokens).
        public var ceiling: String
        /// The limit measured alongside: GB/s or GFLOP/s.
        public var limit: Double
        /// Tokens per second the limit allows: bandwidth over the bytes one token reads (router
        /// and its k experts), or peak over the FLOPs per token.
        public var ceilingTokensPerS: Double
        /// `tokensPerS / ceilingTokensPerS`.
        public var fraction: Double
    }

    /// A layer shape: E experts of hidden -> expertSize -> hidden, top-k softmax routing.
    public struct Shape: Sendable {
        public var experts: Int, topK: Int, hidden: Int, expertSize: Int
        public init(experts: Int, topK: Int, hidden: Int, expertSize: Int) {
            self.experts = experts
            self.topK = topK
            self.hidden = hidden
            self.expertSize = expertSize
        }
        /// Mixtral-like (E = 8, k = 2) and OLMoE-like (E = 64, k = 8) at hidden 1024.
        public static let standard = [Shape(experts: 8, topK: 2, hidden: 1024, expertSize: 3584),
                                      Shape(experts: 64, topK: 8, hidden: 1024, expertSize: 512)]
    }

    /// A layer of random bf16 weights with a top-k softmax router.
    public static func randomLayer(_ s: Shape, seed: UInt64) -> MoELayer {
        let scale = Float(1 / Double(s.hidden).squareRoot())
        func w(_ shape: [Int], _ k: UInt64) -> Tensor {
            Tensor(randomUniform: shape, in: -scale...scale, seed: seed &* 1000 &+ k, dtype: .bf16)
        }
        let experts = SwiGLUExperts(gate: (0..<s.experts).map { w([s.expertSize, s.hidden], UInt64(3 * $0)) },
                                    up: (0..<s.experts).map { w([s.expertSize, s.hidden], UInt64(3 * $0 + 1)) },
                                    down: (0..<s.experts).map { w([s.hidden, s.expertSize], UInt64(3 * $0 + 2)) })
        return MoELayer(gate: .linear(weight: w([s.experts, s.hidden], 999_999)),
                        router: TopKSoftmaxRouter(experts: s.experts, k: s.topK), experts: experts)
    }

    /// Runs every shape at 1 and `prefillTokens` tokens.
    public static func run(shapes: [Shape] = Shape.standard, prefillTokens: Int = 128, pool: ThreadPool = .shared,
                           quick: Bool = false) -> [Entry] {
        var entries: [Entry] = []
        for s in shapes {
            // Four copies: decode rep i uses copy i % 4 after probing copy (i + 2) % 4, so between
            // any two touches of a copy pass > 100 MB of other reads and neither the probe nor
            // the layer finds the other's bytes in the last-level cache.
            let copies = quick ? 1 : 4
            let layers = (0..<copies).map { randomLayer(s, seed: UInt64($0 + 1)) }
            entries.append(measureDecode(s, layers: layers, pool: pool, quick: quick))
            entries.append(measurePrefill(s, layer: layers[0], tokens: prefillTokens, pool: pool, quick: quick))
        }
        return entries
    }

    static func measureDecode(_ s: Shape, layers: [MoELayer], pool: ThreadPool, quick: Bool) -> Entry {
        let reps = quick ? 3 : 30
        let xs = (0..<(reps + 1)).map { Tensor(randomUniform: [1, s.hidden], seed: 7_000 + UInt64($0)) }
        var probeGBs: [Double] = []
        var i = 0
        let seconds = KernelBenchmark.medianSeconds(reps: reps) { () -> Double in
            let layer = layers[i % layers.count]
            if layers.count > 1, let probed = layers[(i + 2) % layers.count].experts as? SwiGLUExperts {
                var tensors: [Tensor] = [], bytes = 0
                for e in 0..<probed.expertCount where bytes < 64 << 20 {
                    tensors += [probed.gate[e], probed.up[e], probed.down[e]]
                    bytes += probed.weightBytes(expert: e)
                }
                probeGBs.append(Double(bytes) / KernelBenchmark.readProbeSeconds(tensors, pool: pool) / 1e9)
            }
            let x = xs[i % xs.count]
            i += 1
            var state = RouterState()
            return KernelBenchmark.timeSeconds { _ = layer.forward(x, state: &state, pool: pool) }
        }
        let bandwidth = probeGBs.isEmpty ? KernelBenchmark.measureReadBandwidth(pool: pool, quick: quick)
                                         : KernelBenchmark.median(probeGBs)
        let bytes = layers[0].decodeBytes(activeExperts: Double(s.topK))
        let ceiling = bandwidth * 1e9 / bytes
        return Entry(experts: s.experts, topK: s.topK, hidden: s.hidden, expertSize: s.expertSize, tokens: 1, dtype: "bf16",
                     tokensPerS: 1 / seconds, ceiling: "bandwidth", limit: bandwidth, ceilingTokensPerS: ceiling,
                     fraction: 1 / seconds / ceiling)
    }

    static func measurePrefill(_ s: Shape, layer: MoELayer, tokens: Int, pool: ThreadPool, quick: Bool) -> Entry {
        let fma = FMAProbe(iterations: quick ? 20_000 : 1_000_000, pool: pool)
        var fmaSeconds: [Double] = []
        let x = Tensor(randomUniform: [tokens, s.hidden], seed: 9_000)
        let seconds = KernelBenchmark.medianSeconds(reps: quick ? 2 : 10) { () -> Double in
            fmaSeconds.append(fma.passSeconds())
            var state = RouterState()
            return KernelBenchmark.timeSeconds { _ = layer.forward(x, state: &state, pool: pool) }
        }
        let peak = fma.flops / KernelBenchmark.median(fmaSeconds) / 1e9
        let flopsPerToken = 2.0 * Double(s.hidden * s.experts) + Double(s.topK) * 6.0 * Double(s.hidden * s.expertSize)
        let ceiling = peak * 1e9 / flopsPerToken
        let rate = Double(tokens) / seconds
        return Entry(experts: s.experts, topK: s.topK, hidden: s.hidden, expertSize: s.expertSize, tokens: tokens,
                     dtype: "bf16", tokensPerS: rate, ceiling: "fma", limit: peak, ceilingTokensPerS: ceiling,
                     fraction: rate / ceiling)
    }
}
