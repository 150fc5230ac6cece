import Foundation
import MoECore
import MoEQuant
import XCTest

/// GPTQ onto QMoE's ternary grid against numpy's float64 GPTQ (scripts/make_qmoe_fixtures.py).
final class TernaryGPTQTests: XCTestCase {
    struct Fixture: Decodable {
        struct Grid: Decodable { let lo: [Float], hi: [Float], gptq: [Int8], nearest: [Int8], zone: Double? }
        struct Case: Decodable {
            let rows: Int, cols: Int, block: Int
            let weight: [Float], hessian: [Double]
            let minmax: Grid, mse: Grid, deadzone: Grid
        }
        let cases: [Case]
    }

    func fixture() throws -> Fixture {
        let url = fixturesDirectory.appendingPathComponent("qmoe").appendingPathComponent("gptq.json")
        return try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: url))
    }

    func testGPTQChoosesNumpysTernaryValuesOnBothGridsAndWithADeadZone() throws {
        for (n, c) in try fixture().cases.enumerated() {
            for (grid, want) in [(TernaryGPTQ.Grid.minMax, c.minmax), (.mse, c.mse), (.minMax, c.deadzone)] {
                let options = TernaryGPTQ.Options(blockSize: c.block, grid: grid, deadZone: want.zone ?? 0.5)
                let got = TernaryGPTQ.quantize(weight: c.weight, rows: c.rows, cols: c.cols, hessian: c.hessian, options: options,
                                               pool: ThreadPool(threads: 2))
                let grid = "\(grid) zone \(options.deadZone)"
                XCTAssertEqual(got.lo, want.lo, "case \(n) \(grid): lo")
                XCTAssertEqual(got.hi, want.hi, "case \(n) \(grid): hi")
                XCTAssertEqual(got.values, want.gptq, "case \(n) \(grid): GPTQ's values")
                let rtn = TernaryGPTQ.quantize(weight: c.weight, rows: c.rows, cols: c.cols, hessian: nil, options: options)
                XCTAssertEqual(rtn.values, want.nearest, "case \(n) \(grid): round to nearest")
            }
        }
    }

    /// GPTQ's point: its error (W - Q) H (W - Q)^T is below rounding to nearest's.
    func testGPTQLowersTheLayerOutputErrorBelowRounding() throws {
        for c in try fixture().cases {
            let g = TernaryGPTQ.quantize(weight: c.weight, rows: c.rows, cols: c.cols, hessian: c.hessian)
            let r = TernaryGPTQ.quantize(weight: c.weight, rows: c.rows, cols: c.cols, hessian: nil)
            func error(_ q: TernaryGPTQ.Result) -> Double {
                var total = 0.0
                for row in 0..<c.rows {
                    let d = (0..<c.cols).map { j -> Double in
                        let t = q.values[row * c.cols + j]
                        return Double(c.weight[row * c.cols + j]) - Double(t > 0 ? q.hi[row] : t < 0 ? q.lo[row] : 0)
                    }
                    for i in 0..<c.cols { for j in 0..<c.cols { total += d[i] * c.hessian[i * c.cols + j] * d[j] } }
                }
                return total
            }
            XCTAssertLessThan(error(g), error(r))
        }
    }
}
