import Foundation
import MoECore
import MoETrain
import XCTest

/// `grad_accum`: a step's batch as micro-batches on model replicas, gradients summed in order.
final class GradientAccumulationTests: XCTestCase {
    func config(accum: Int, aux: Bool) -> TrainingConfig {
        var c = tinyTrainingConfig(router: "topk-softmax", experts: 4, expertSize: 24, seqLen: 12)
        c.gradAccum = accum
        c.loadBalance = aux ? 0.01 : 0
        c.zLoss = aux ? 0.001 : 0
        return c
    }

    func gradients(_ t: Trainer) -> [[Float]] { t.model.parameters.map { $0.variable.grad?.toFloats() ?? [] } }

    /// With no auxiliary losses, the mean loss over equal micro-batches is the batch's mean, so
    /// two micro-batches give the one-batch gradients (to rounding).
    func testMicroBatchesSumToTheWholeBatchGradient() throws {
        let whole = try Trainer(config: config(accum: 1, aux: false), pool: ThreadPool(threads: 1))
        let split = try Trainer(config: config(accum: 2, aux: false), pool: ThreadPool(threads: 2))
        let a = whole.computeGradients(), b = split.computeGradients()
        XCTAssertEqual(a.loss, b.loss, accuracy: 1e-5)
        let ga = gradients(whole), gb = gradients(split)
        XCTAssertEqual(ga.count, gb.count)
        var checked = 0
        for (x, y) in zip(ga, gb) {
            XCTAssertEqual(x.count, y.count)
            let scale = x.map(abs).max() ?? 0
            for (u, v) in zip(x, y) { XCTAssertEqual(u, v, accuracy: 1e-4 * scale + 1e-7) }
            checked += x.count
        }
        XCTAssertGreaterThan(checked, 1000)
    }

    /// The same micro-batches on one thread or two: the same bits after several steps, with
    /// the auxiliary losses on (each micro-batch balances over its own tokens).
    func testResultDoesNotDependOnThreads() throws {
        let one = try Trainer(config: config(accum: 4, aux: true), pool: ThreadPool(threads: 1))
        let two = try Trainer(config: config(accum: 4, aux: true), pool: ThreadPool(threads: 2))
        for _ in 0..<3 {
            let a = one.trainStep(), b = two.trainStep()
            XCTAssertEqual(a.loss, b.loss)
            XCTAssertEqual(a.aux, b.aux)
        }
        for (p, q) in zip(one.model.parameters, two.model.parameters) {
            XCTAssertEqual(p.variable.value.toFloats(), q.variable.value.toFloats())
        }
    }

    /// The auxiliary losses of an accumulated step are the mean of the micro-batches' own.
    func testAuxiliaryLossIsTheMicroBatchMean() throws {
        let split = try Trainer(config: config(accum: 2, aux: true), pool: ThreadPool(threads: 1))
        let (inputs, targets) = split.batch(at: 0)
        var expected: Float = 0
        for half in [0..<2, 2..<4] {
            let out = split.model.forward(Array(inputs[half]), targets: Array(targets[half]), tape: Tape(pool: split.pool),
                                          aux: split.config.auxLosses)
            expected += out.auxLoss / 2
        }
        let got = split.computeGradients()
        XCTAssertGreaterThan(expected, 0)
        XCTAssertEqual(got.aux, expected, accuracy: 1e-6 * max(1, expected))
    }

    func testGradAccumMustDivideTheBatch() {
        var c = config(accum: 3, aux: false)
        XCTAssertThrowsError(try c.validate(path: "t.json")) { error in
            XCTAssertTrue("\(error)".contains("grad_accum"), "\(error)")
        }
        c.gradAccum = 0
        XCTAssertThrowsError(try c.validate(path: "t.json"))
    }
}
