import MoE
import MoECore
import XCTest

/// Cache-aware routing's selection (`PreferringRouter`): near-ties go to preferred experts,
/// clear winners stay, the weights are the true probabilities, and with margin 0 or every
/// expert preferred it routes exactly as the base router.
final class PreferringRouterTests: XCTestCase {
    // Token 0: experts 1 and 2 nearly tied for second place; token 1: expert 3 far behind.
    let logits = Tensor(shape: [2, 4], values: [2.0, 1.0, 0.98, -1.0,
                                                 2.0, 1.0, 0.5, -3.0])

    func testNearTiesGoToPreferredExpertsAndWeightsStayTrue() {
        let base = TopKSoftmaxRouter(experts: 4, k: 2, renormalize: false)
        let router = PreferringRouter(base: base, margin: 0.1, preferred: [false, false, true, true])
        let r = router.route(logits)
        XCTAssertEqual(Set(r.experts(of: 0)), [0, 2], "2 is within 10% of 1 and preferred")
        XCTAssertEqual(Set(r.experts(of: 1)), [0, 1], "3 is far behind: not chosen")
        let p = logits.toFloats()[0..<4].map { exp($0) }, z = p.reduce(0, +)
        let weight = Dictionary(uniqueKeysWithValues: zip(r.experts(of: 0), r.weights(of: 0)))
        XCTAssertEqual(weight[2]!, p[2] / z, accuracy: 1e-6)
        XCTAssertEqual(weight[0]!, p[0] / z, accuracy: 1e-6)
    }

    func testRenormalizedOverTheChosen() {
        let router = PreferringRouter(base: TopKSoftmaxRouter(experts: 4, k: 2), margin: 0.1, preferred: [false, false, true, false])
        let r = router.route(logits)
        XCTAssertEqual(r.weights(of: 0).reduce(0, +), 1, accuracy: 1e-6)
        XCTAssertEqual(r.weights(of: 0)[r.experts(of: 0).firstIndex(of: 2)!], 1 / (1 + exp(2 - 0.98)), accuracy: 1e-6)
    }

    func testMarginZeroOrAllPreferredIsTheBaseRouter() {
        let base = TopKSoftmaxRouter(experts: 4, k: 2)
        let want = base.route(logits)
        for (margin, preferred) in [(Float(0), [true, false, true, false]), (0.5, [true, true, true, true]), (0.5, [false, false, false, false])] {
            let r = PreferringRouter(base: base, margin: margin, preferred: preferred).route(logits)
            for t in 0..<2 {
                XCTAssertEqual(r.experts(of: t), want.experts(of: t))
                XCTAssertEqual(r.weights(of: t), want.weights(of: t))
            }
        }
    }
}
