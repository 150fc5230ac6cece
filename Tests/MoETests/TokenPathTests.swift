import MoE
import MoECore
import XCTest

/// Decode's one-token MoE step (`SwiGLUExperts.addToken`, which `MoELayer.forward` takes for a
/// single row) gives the gathered path's bits: gather the token into one row per chosen expert,
/// run the experts, combine. Block-format experts, and f32, f16 and bf16 ones on more than one
/// thread (bf16 also under bf16 activations); the others stay on the gathered path.
final class TokenPathTests: XCTestCase {
    let d = 256, inner = 256, experts = 8

    func experts(_ dtype: DType, downType: DType? = nil) -> SwiGLUExperts {
        let w = { (shape: [Int], seed: UInt64, t: DType) -> Tensor in
            let f = Tensor(randomUniform: shape, in: -0.3...0.3, seed: seed)
            return t.isElementFormat ? f.converted(to: t) : f.quantized(to: t)!
        }
        return SwiGLUExperts(gate: (0..<experts).map { w([inner, d], 10 + UInt64($0), dtype) },
                             up: (0..<experts).map { w([inner, d], 30 + UInt64($0), dtype) },
                             down: (0..<experts).map { w([d, inner], 50 + UInt64($0), downType ?? dtype) })
    }

    /// What `MoELayer.forward` computed for every batch before the one-token step.
    func gathered(_ ffn: SwiGLUExperts, _ x: Tensor, _ routing: Routing, pool: ThreadPool) -> [Float] {
        let dispatch = Dispatch(routing), out = Tensor(zeros: x.shape), all = 0..<ffn.expertCount
        let y = ffn.forward(consuming: dispatch.gather(x, experts: all, pool: pool), rowOffsets: dispatch.rowOffsets(experts: all), pool: pool)
        dispatch.combine(y, experts: all, routing: routing, into: out, pool: pool)
        return out.toFloats()
    }

    func oneToken(_ ffn: SwiGLUExperts, _ x: Tensor, _ routing: Routing, pool: ThreadPool) -> [Float]? {
        let out = Tensor(zeros: x.shape)
        return ffn.addToken(x, routing: routing, into: out, pool: pool) ? out.toFloats() : nil
    }

    func testOneTokenStepGivesTheGatheredBits() throws {
        let x = Tensor(randomUniform: [1, d], in: -1...1, seed: 3)
        // Q4_K_M's mix: K-quant gate and up with a Q6_K down; a zero weight keeps its place in
        // the sum.
        let routings = [
            Routing(expertCount: experts, tokens: [[(5, 0.4), (1, 0.35), (6, 0.25)]]),
            Routing(expertCount: experts, tokens: [[(2, 0.5), (3, 0.3), (7, 0.2), (0, 0)]]),
        ]
        for threads in [1, 2] {
            let pool = ThreadPool(threads: threads)
            for (gate, down) in [(DType.q8_0, DType.q8_0), (.q4_K, .q6_K), (.q4_0, .q8_0), (.q5_K, .q5_0), (.mxfp4, .mxfp4), (.iq4_XS, .q6_K)] {
                let ffn = experts(gate, downType: down)
                for routing in routings {
                    let fast = try XCTUnwrap(oneToken(ffn, x, routing, pool: pool), "\(gate)/\(down) takes the one-token step")
                    XCTAssertTrue(fast.contains { $0 != 0 })
                    XCTAssertEqual(fast, gathered(ffn, x, routing, pool: pool), "\(gate)/\(down), \(threads) threads, \(routing.experts)")
                }
            }
        }
    }

    func testLayerTakesTheStepForOneRowAndKeepsItsOutput() {
        let ffn = experts(.q8_0), pool = ThreadPool(threads: 2)
        let gateWeight = Tensor(randomUniform: [experts, d], in: -0.3...0.3, seed: 1)
        let layer = MoELayer(gate: .linear(weight: gateWeight, bias: nil), router: TopKSoftmaxRouter(experts: experts, k: 3), experts: ffn)
        let x = Tensor(randomUniform: [1, d], in: -1...1, seed: 4)
        var state = RouterState()
        let out = layer.forward(x, state: &state, pool: pool)
        XCTAssertEqual(out.routing.assignmentCount, 3)
        XCTAssertEqual(out.output.toFloats(), gathered(ffn, x, out.routing, pool: pool))
    }

    func testElementFormatExpertsTakeTheStepOnTwoThreads() throws {
        let x = Tensor(randomUniform: [1, d], in: -1...1, seed: 8)
        let routing = Routing(expertCount: experts, tokens: [[(6, 0.5), (0, 0.3), (3, 0.2)]])
        let two = ThreadPool(threads: 2)
        for (gate, down) in [(DType.f32, DType.f32), (.bf16, .bf16), (.f16, .f16), (.bf16, .q8_0)] {
            let ffn = experts(gate, downType: down)
            let fast = try XCTUnwrap(oneToken(ffn, x, routing, pool: two), "\(gate)/\(down)")
            XCTAssertEqual(fast, gathered(ffn, x, routing, pool: two), "\(gate)/\(down)")
            // One thread: linearBatch takes another leaf order there, so the gathered path runs.
            XCTAssertNil(oneToken(ffn, x, routing, pool: ThreadPool(threads: 1)), "\(gate)/\(down) on one thread")
        }
        // bf16 weights under bf16 activations (a GGUF file's default): the bf16 dot product.
        let saved = Kernels.bf16Activations
        defer { Kernels.bf16Activations = saved }
        Kernels.bf16Activations = true
        let ffn = experts(.bf16)
        XCTAssertEqual(try XCTUnwrap(oneToken(ffn, x, routing, pool: two)), gathered(ffn, x, routing, pool: two), "bf16 activations")
    }

    func testOtherExpertsStayOnTheGatheredPath() {
        let pool = ThreadPool(threads: 2), x = Tensor(randomUniform: [1, d], in: -1...1, seed: 5)
        let routing = Routing(expertCount: experts, tokens: [[(3, 0.6), (4, 0.4)]])
        let integer = Kernels.integerActivations
        Kernels.integerActivations = false
        XCTAssertNil(oneToken(experts(.q8_0), x, routing, pool: pool), "block formats against f32 activations")
        Kernels.integerActivations = integer
        var biased = experts(.q8_0)
        biased.biases = ExpertBiases(gate: Array(repeating: Array(repeating: 0.1, count: inner), count: experts),
                                     up: Array(repeating: Array(repeating: 0, count: inner), count: experts),
                                     down: Array(repeating: Array(repeating: 0, count: d), count: experts))
        XCTAssertNil(oneToken(biased, x, routing, pool: pool), "biases")
        var clamped = experts(.q8_0)
        clamped.activation = .clampedSwiGLU(alpha: 1.702, limit: 7)
        XCTAssertNil(oneToken(clamped, x, routing, pool: pool), "GPT-OSS's activation")
        // A router may list an expert twice: its two rows run through the two-row leaf there.
        XCTAssertNil(oneToken(experts(.q8_0), x, Routing(expertCount: experts, tokens: [[(2, 0.5), (2, 0.3), (7, 0.2)]]), pool: pool),
                     "an expert chosen twice")
        let two = Tensor(randomUniform: [2, d], in: -1...1, seed: 6)
        let twoRouting = Routing(expertCount: experts, tokens: [[(3, 1)], [(4, 1)]])
        XCTAssertFalse(experts(.q8_0).addToken(two, routing: twoRouting, into: Tensor(zeros: [2, d]), pool: pool), "two tokens")
    }
}
