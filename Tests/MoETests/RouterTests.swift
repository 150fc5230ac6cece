import Foundation
import MoE
import MoECore
import _TestSupport
import XCTest

/// Every router on hand-made logits whose answer is worked out by hand in the test.
final class RouterTests: XCTestCase {
    func logits(_ rows: [[Float]]) -> Tensor {
        Tensor(shape: [rows.count, rows[0].count], values: rows.flatMap { $0 })
    }

    func assertRouting(_ r: Routing, _ expected: [[(Int, Float)]], accuracy: Float = 1e-6,
                       file: StaticString = #filePath, line: UInt = #line) {
        XCTAssertEqual(r.tokenCount, expected.count, file: file, line: line)
        for (t, want) in expected.enumerated() where t < r.tokenCount {
            XCTAssertEqual(Array(r.experts(of: t)), want.map(\.0), "token \(t) experts", file: file, line: line)
            assertClose(Array(r.weights(of: t)), want.map(\.1), absolute: accuracy, "token \(t) weights", file: file, line: line)
        }
    }

    // MARK: - topk-softmax, switch, capacity

    func testTopKSoftmaxRenormalisedAndRaw() {
        let z = logits([[2, 1, 0, -1]])
        let e = [2, 1, 0, -1].map { exp(Float($0)) }, sum = e.reduce(0, +)
        assertRouting(TopKSoftmaxRouter(experts: 4, k: 2).route(z), [[(0, e[0] / (e[0] + e[1])), (1, e[1] / (e[0] + e[1]))]])
        assertRouting(TopKSoftmaxRouter(experts: 4, k: 2, renormalize: false).route(z), [[(0, e[0] / sum), (1, e[1] / sum)]])
    }

    func testTopKSoftmaxTiesGoToLowerIdsAndAllMassOnOne() {
        assertRouting(TopKSoftmaxRouter(experts: 4, k: 2).route(logits([[1, 1, 1, 0]])), [[(0, 0.5), (1, 0.5)]])
        // All probability on expert 2: the second choice is the lowest id among the zeros.
        assertRouting(TopKSoftmaxRouter(experts: 4, k: 2).route(logits([[0, 0, 200, 0]])), [[(2, 1), (0, 0)]])
    }

    func testSwitchDropsLaterTokensWhenAnExpertIsFull() {
        // 4 tokens, 2 experts, all prefer expert 0; C = ceil(1.0 * 4 / 2) = 2.
        let z = logits([[3, 0], [1, 0], [4, 0], [2, 0]])
        let p = { (a: Float) in exp(a) / (exp(a) + 1) }
        let byPosition = SwitchRouter(experts: 2, capacity: Capacity(factor: 1)).route(z)
        assertRouting(byPosition, [[(0, p(3))], [(0, p(1))], [], []])
        XCTAssertEqual(byPosition.dropped, [[], [], [0], [0]])
        let byScore = SwitchRouter(experts: 2, capacity: Capacity(factor: 1, dropBy: .score)).route(z)
        assertRouting(byScore, [[(0, p(3))], [], [(0, p(4))], []])
        XCTAssertEqual(byScore.dropped, [[], [0], [], [0]])
        XCTAssertEqual(byScore.chosenPerExpert, [4, 0], "losses see what was chosen, not what was kept")
    }

    func testCapacityQueuesSecondChoicesAfterFirstChoices() {
        // Top-2 of 3 experts for 3 tokens; C = ceil(1.0 * 6 / 3) = 2 per expert.
        // First choices: t0 -> 0, t1 -> 0, t2 -> 0 (third one is dropped: expert 0 is full
        // after t0, t1). Second choices: t0 -> 1, t1 -> 1, t2 -> 1 (t2's is dropped too).
        let z = logits([[2, 1, 0], [2, 1, 0], [2, 1, 0]])
        let r = CapacityLimitedRouter(TopKSoftmaxRouter(experts: 3, k: 2), capacity: Capacity(factor: 1)).route(z)
        XCTAssertEqual(r.experts, [0, 1, 0, 1])
        XCTAssertEqual(r.dropped, [[], [], [0, 1]])
        XCTAssertEqual(Capacity(factor: 1.25, minimum: 4).capacity(assignments: 6, experts: 3), 4)
        XCTAssertEqual(Capacity(factor: 1.25).capacity(assignments: 6, experts: 3), 3)
    }

    // MARK: - topk-sigmoid (DeepSeek)

    func logit(_ s: Float) -> Float { log(s / (1 - s)) }

    func testGroupLimitExcludesTheGlobalBestExpert() {
        // 8 experts in 4 groups of 2; keep 2 groups by the sum of their top-2 scores:
        // g0 = 0.9 + 0.05 = 0.95, g1 = 0.6 + 0.6 = 1.2, g2 = 0.55 + 0.5 = 1.05, g3 = 0.2.
        // Groups 1 and 2 stay, so expert 0 (the best, 0.9) is excluded; top-2 = experts 2, 3.
        let s: [Float] = [0.9, 0.05, 0.6, 0.6, 0.55, 0.5, 0.1, 0.1]
        let router = TopKSigmoidRouter(experts: 8, k: 2, groups: 4, topkGroup: 2, routedScaling: 2.5)
        assertRouting(router.route(logits([s.map(logit)])), [[(2, 1.25), (3, 1.25)]], accuracy: 1e-5)
        // Without groups, expert 0 wins.
        let flat = TopKSigmoidRouter(experts: 8, k: 2, renormalize: false)
        assertRouting(flat.route(logits([s.map(logit)])), [[(0, 0.9), (2, 0.6)]], accuracy: 1e-5)
    }

    func testCorrectionBiasSteersSelectionButNotWeights() {
        let s: [Float] = [0.8, 0.7, 0.3, 0.2]
        let bias: [Float] = [0, 0, 0.6, 0]  // expert 2 selects at 0.9 but weighs 0.3
        let r = TopKSigmoidRouter(experts: 4, k: 2, bias: bias, renormalize: false).route(logits([s.map(logit)]))
        assertRouting(r, [[(0, 0.8), (2, 0.3)]], accuracy: 1e-5)
        let n = TopKSigmoidRouter(experts: 4, k: 2, bias: bias).route(logits([s.map(logit)]))
        assertRouting(n, [[(0, 0.8 / 1.1), (2, 0.3 / 1.1)]], accuracy: 1e-5)
    }

    func testDeepSeekV2SoftmaxGroupLimitedGreedyUsesGroupMax() {
        // Softmax scores [0.4, 0.05, 0.3, 0.25] in 2 groups: max g0 = 0.4, g1 = 0.3 -> keep g0
        // (by sum-of-top-2, g1 = 0.55 would win). Top-2 within g0, no renormalisation, x 2.
        let p: [Float] = [0.4, 0.05, 0.3, 0.25]
        let r = TopKSigmoidRouter(experts: 4, k: 2, scoring: .softmax, groups: 2, topkGroup: 1,
                                  renormalize: false, routedScaling: 2).route(logits([p.map { log($0) }]))
        assertRouting(r, [[(0, 0.8), (1, 0.1)]], accuracy: 1e-5)
    }

    // MARK: - top-p

    func testTopPIsStrictAndKeepsTheCrossingExpert() throws {
        let z = logits([[log(0.5), log(0.3), log(0.2)]])
        let probs = z.copied()
        Kernels.softmax(probs)
        let p0 = probs.toFloats()[0]
        // p equal to the first probability: the sum after one expert is not > p, so two stay.
        XCTAssertEqual(Array(TopPRouter(experts: 3, p: p0).route(z).experts(of: 0)), [0, 1])
        XCTAssertEqual(Array(TopPRouter(experts: 3, p: p0.nextDown).route(z).experts(of: 0)), [0])
        XCTAssertEqual(Array(TopPRouter(experts: 3, p: 0).route(z).experts(of: 0)), [0], "at least one expert")
        XCTAssertEqual(Array(TopPRouter(experts: 3, p: 1).route(z).experts(of: 0)), [0, 1, 2], "p = 1 keeps all")
        XCTAssertEqual(Array(TopPRouter(experts: 3, p: 1, maxExperts: 2).route(z).experts(of: 0)), [0, 1])
        XCTAssertEqual(Array(TopPRouter(experts: 3, p: 0, minExperts: 2).route(z).experts(of: 0)), [0, 1])
        let r = TopPRouter(experts: 3, p: 0.6).route(z)
        assertRouting(r, [[(0, 0.5), (1, 0.3)]], accuracy: 1e-6)
        assertRouting(TopPRouter(experts: 3, p: 0.6, renormalize: true).route(z), [[(0, 0.625), (1, 0.375)]], accuracy: 1e-6)
        // All mass on one expert: it alone passes any p < 1.
        XCTAssertEqual(Array(TopPRouter(experts: 3, p: 0.9).route(logits([[0, 300, 0]])).experts(of: 0)), [1])
    }

    // MARK: - null experts

    func testNullExpertsGiveZeroToKExperts() {
        // 2 true experts then 2 null ones; k' = 2.
        let router = NullExpertsRouter(experts: 2, nullExperts: 2, k: 2)
        let r = router.route(logits([[3, 2, 5, 0], [0, 0, 5, 5], [5, 4, 0, 0]]))
        let e5 = exp(Float(5)), e4 = exp(Float(4))
        assertRouting(r, [[(0, 1)], [], [(0, e5 / (e5 + e4)), (1, e4 / (e5 + e4))]], accuracy: 1e-6)
        XCTAssertEqual(router.logitCount, 4)
    }

    func testNullExpertBalanceAveragesTheNullLoads() {
        // One token choosing null 2 and null 3 (k' = 2) with uniform probabilities 1/4:
        // f = [0, 0, 1, 1] -> nulls averaged to [1, 1]; loss = 4 * (1 * 1/4 + 1 * 1/4) = 2.
        let z = logits([[0, 0, 0.0001, 0.0001]])
        let router = NullExpertsRouter(experts: 2, nullExperts: 2, k: 2)
        XCTAssertEqual(router.auxLosses(z, routing: router.route(z))["load_balance"] ?? -1, 2, accuracy: 1e-3)
        // Nulls 2 and 3 chosen unevenly across tokens still average to one bucket.
        let z2 = logits([[0, 0, 1, 0.5], [0, 0, 1, 0.5]])
        let r1 = NullExpertsRouter(experts: 2, nullExperts: 2, k: 1)
        let probs = z2.copied()
        Kernels.softmax(probs)
        let p = probs.toFloats()
        // f = [0, 0, 1, 0] -> [0, 0, 0.5, 0.5]; P = mean probs; loss = 4 * 0.5 * (P2 + P3).
        let expected = 4 * 0.5 * (p[2] + p[3])
        XCTAssertEqual(r1.auxLosses(z2, routing: r1.route(z2))["load_balance"] ?? -1, expected, accuracy: 1e-5)
    }

    // MARK: - expert choice

    func testExpertChoiceEachExpertTakesItsBestTokens() {
        // Expert 0's probabilities over tokens are [0.9, 0.8, 0.1, 0.2]; expert 1 has the rest.
        let p0: [Float] = [0.9, 0.8, 0.1, 0.2]
        let z = logits(p0.map { [log($0), log(1 - $0)] })
        let two = ExpertChoiceRouter(experts: 2, capacityFactor: 1).route(z)  // C = 2
        assertRouting(two, [[(0, 0.9)], [(0, 0.8)], [(1, 0.9)], [(1, 0.8)]], accuracy: 1e-6)
        let one = ExpertChoiceRouter(experts: 2, capacityFactor: 0.5).route(z)  // C = 1
        assertRouting(one, [[(0, 0.9)], [], [(1, 0.9)], []], accuracy: 1e-6)
        let all = ExpertChoiceRouter(experts: 2, capacityFactor: 2).route(z)  // C = 4: everyone twice
        XCTAssertEqual(all.assignmentCount, 8)
        XCTAssertFalse(ExpertChoiceRouter(experts: 2).isCausal)
    }

    // MARK: - losses

    func testLossesAtUniformRouting() {
        // Zero logits: uniform probabilities. Each expert chosen equally often over 4 tokens.
        let z = Tensor(zeros: [4, 4])
        let routing = Routing(expertCount: 4, tokens: [[(0, 0.5), (1, 0.5)], [(2, 0.5), (3, 0.5)],
                                                       [(0, 0.5), (1, 0.5)], [(2, 0.5), (3, 0.5)]])
        let losses = TopKSoftmaxRouter(experts: 4, k: 2, devices: 2).auxLosses(z, routing: routing)
        XCTAssertEqual(losses["load_balance"] ?? -1, 2, accuracy: 1e-6, "transformers' form gives k at uniform")
        XCTAssertEqual(losses["z_loss"] ?? -1, Float(log(4.0) * log(4.0)), accuracy: 1e-5)
        XCTAssertEqual(losses["expert_balance"] ?? -1, 1, accuracy: 1e-6, "DeepSeekMoE's form gives 1 at uniform")
        XCTAssertEqual(losses["device_balance"] ?? -1, 1, accuracy: 1e-6)
        let dynamic = TopPRouter(experts: 4, p: 0.5).auxLosses(z, routing: routing)["dynamic"] ?? -1
        XCTAssertEqual(dynamic, Float(log(4.0)), accuracy: 1e-5, "entropy of uniform over 4")
    }

    func testLoadBalanceOfCollapsedRouting() {
        // Every token to expert 0 with probability ~1: f = [1, 0], P = [1, 0] -> E * 1 = 2.
        let z = logits([[50, 0], [50, 0]])
        let router = TopKSoftmaxRouter(experts: 2, k: 1, renormalize: false)
        XCTAssertEqual(router.auxLosses(z, routing: router.route(z))["load_balance"] ?? -1, 2, accuracy: 1e-5)
    }

    // MARK: - configs

    func testRouterConfigByNameAndErrors() throws {
        let json = #"{"name": "topk-sigmoid", "k": 2, "n_group": 4, "topk_group": 2, "routed_scaling": 2.5}"#
        let config = try RouterConfig.decode(json: Data(json.utf8), path: "router.json")
        let router = try config.makeRouter(experts: 8)
        XCTAssertEqual(router.name, "topk-sigmoid")
        XCTAssertEqual((router as? TopKSigmoidRouter)?.groups, 4)
        for name in RouterConfig.names {
            var c = RouterConfig(name: name)
            if name == "null-experts" { c.nullExperts = 2 }
            XCTAssertEqual(try c.makeRouter(experts: 8).name, name)
        }
        var capped = RouterConfig(name: "top-p")
        capped.capacityFactor = 1
        XCTAssertTrue(try capped.makeRouter(experts: 4) is CapacityLimitedRouter)
        func fails(_ c: RouterConfig, field: String, experts: Int = 8) {
            XCTAssertThrowsError(try c.makeRouter(experts: experts, path: "r.json")) { error in
                guard case let .invalidConfig(path, f, _)? = error as? MoEError else { return XCTFail("\(error)") }
                XCTAssertEqual(path, "r.json")
                XCTAssertEqual(f, field)
            }
        }
        fails(RouterConfig(name: "nope"), field: "name")
        var c = RouterConfig(name: "topk-softmax"); c.k = 9
        fails(c, field: "k")
        c = RouterConfig(name: "topk-sigmoid"); c.nGroup = 3
        fails(c, field: "n_group")
        c = RouterConfig(name: "topk-sigmoid"); c.bias = [1, 2]
        fails(c, field: "bias")
        fails(RouterConfig(name: "null-experts"), field: "null_experts")
        c = RouterConfig(name: "switch"); c.k = 2
        fails(c, field: "k")
        c = RouterConfig(name: "topk-softmax"); c.capacityFactor = 0
        fails(c, field: "capacity_factor")
        // Values that used to trap converting to Int, or were silently accepted.
        for bad in [Float.infinity, 1e30, .nan] {
            c = RouterConfig(name: "topk-softmax"); c.capacityFactor = bad
            fails(c, field: "capacity_factor")
        }
        for bad: Float in [0, 1.5, -0.1, .nan] {
            c = RouterConfig(name: "top-p"); c.p = bad
            fails(c, field: "p")
        }
        for bad: Float in [-1, 0, .infinity] {
            c = RouterConfig(name: "topk-sigmoid"); c.routedScaling = bad
            fails(c, field: "routed_scaling")
        }
        XCTAssertThrowsError(try RouterConfig.decode(json: Data(#"{"k": 2}"#.utf8), path: "x.json")) { error in
            XCTAssertEqual(error as? MoEError, .invalidConfig(path: "x.json", field: "name", reason: "missing"))
        }
        XCTAssertThrowsError(try RouterConfig.decode(json: Data(#"{"name": "top-p", "p": "high"}"#.utf8), path: "x.json"))
    }

    // MARK: - routing on a thread pool

    /// Routing split over threads gives exactly the serial routing, for every router that
    /// splits its tokens (groups, bias, nulls and capacity included), on 300 random tokens.
    func testRoutingOnAPoolEqualsSerialRouting() {
        let routers: [any Router] = [
            TopKSoftmaxRouter(experts: 16, k: 4),
            TopKSoftmaxRouter(experts: 16, k: 2, renormalize: false),
            SwitchRouter(experts: 16),
            TopPRouter(experts: 16, p: 0.5, maxExperts: 6),
            NullExpertsRouter(experts: 16, nullExperts: 4, k: 3),
            TopKSigmoidRouter(experts: 16, k: 4, bias: (0..<16).map { Float($0 % 3) * 0.1 }, groups: 4, topkGroup: 2),
        ]
        for router in routers {
            let z = Tensor(randomUniform: [300, router.logitCount], in: -3...3, seed: 11)
            for threads in [1, 2, 3] {
                XCTAssertTrue(router.route(z, pool: ThreadPool(threads: threads)) == router.route(z), "\(router.name), \(threads) threads")
            }
        }
    }
}
